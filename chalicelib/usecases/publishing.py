"""Publishing: the outbox relay that the scheduled function runs, the same
run by an operator's hand, and the outbox's parked rows and backlog.

The relay (chalicelib.eventstore.outbox) is generic; here it gets its
connection (direct, never through RDS Proxy: its LISTEN and its session lock
would pin a proxy connection for the whole invocation), the Kafka publisher,
and the upcasting that gives consumers today's shape with the personal data
readable (or null, once erased).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

import psycopg

from chalicelib import idempotency
from chalicelib.domain.customer import registry
from chalicelib.eventstore import outbox
from chalicelib.eventstore.errors import PublishError
from chalicelib.eventstore.relay import OutboxRelay, Publish, RelayResult
from chalicelib.infra import metrics
from chalicelib.infra.logs import log

if TYPE_CHECKING:
    from chalicelib.bootstrap import Bootstrap
    from chalicelib.eventstore.events import RecordedEvent

# The relay's connection, as an operator finds it in pg_stat_activity.
RELAY_APPLICATION_NAME = "customer-service-outbox-relay"


def relay(parts: Bootstrap, shard: int = 0, shards: int | None = None) -> OutboxRelay:
    """The relay of one shard of RELAY_SHARDS (or of `shards`; 1: the whole outbox)."""
    settings = parts.settings
    database = parts.database().direct()
    return OutboxRelay(
        # Its own connection, not the container's: it holds the relay lock
        # and LISTENs for the whole invocation.
        connect=lambda: database.connect(autocommit=True, connect_timeout=5, application_name=RELAY_APPLICATION_NAME),
        publish=_measured(parts.publisher()),
        batch_size=settings.relay_batch_size,
        retention_seconds=settings.outbox_retention_hours * 3600,
        upcast=_readable(parts),
        shard=shard,
        shards=settings.relay_shards if shards is None else shards,
        on_error=lambda error: log("outbox_publish_failed", level="error", error=str(error),
                                   brokers=settings.kafka_bootstrap_servers, topic=settings.kafka_topic),
        on_parked=lambda outbox_id, event, error: log(
            "outbox_row_parked", level="error", outbox_id=outbox_id, stream_id=str(event.stream_id),
            version=event.version, event_type=event.event_type, error=error,
            action="this customer's later events wait behind it; see python -m ops outbox --parked"),
    )


def _readable(parts: Bootstrap) -> Callable[[RecordedEvent], RecordedEvent]:
    # Consumers need the data: messages carry it in clear, or null once erased.
    if parts.personal_data() is None:
        return registry.upcast_recorded
    from botocore.exceptions import BotoCoreError, ClientError

    open_event = parts.open_event()

    def readable(event: RecordedEvent) -> RecordedEvent:
        try:
            opened = open_event(event)
        except (psycopg.Error, BotoCoreError, ClientError) as error:
            # The database or KMS, not the event: tried again, not parked.
            raise PublishError(f"cannot read the personal data of {event.stream_id} v{event.version} now:"
                               f" {error}") from error
        return registry.upcast_recorded(opened)

    return readable


def _measured(publish: Publish) -> Publish:
    def measured(events):
        publish(events)
        if events:
            # From the oldest event's commit to the broker's ack.
            oldest = min(event.recorded_at for event in events)
            metrics.milliseconds("PublishLatency", (datetime.now(oldest.tzinfo) - oldest).total_seconds() * 1000)
            metrics.count("EventsPublished", len(events))

    return measured


def relay_outbox(parts: Bootstrap, time_left: float | None = None, shard: int = 0) -> RelayResult:
    """Publish the shard's part of the outbox until `time_left` seconds (at
    most RELAY_MAX_SECONDS) have passed, woken by each commit to it."""
    try:
        idempotency.prune_expired(parts.connections())
    except psycopg.Error as error:
        # Housekeeping only: the relay must start even while the database is
        # away, and it reconnects by itself.
        log("idempotency_prune_failed", level="warning", error=str(error))
    limit = parts.settings.relay_max_seconds
    seconds = limit if time_left is None else min(limit, time_left)
    result = relay(parts, shard).run(deadline=time.monotonic() + max(0.0, seconds))
    if result.locked_out:
        log("outbox_relay_skipped", shard=shard, reason="other relays are draining this shard's buckets")
    else:
        log("outbox_relayed", shard=shard, shards=parts.settings.relay_shards, published=result.published,
            batches=result.batches, failures=result.failures, parked=result.parked,
            buckets_held_elsewhere=result.missing, last_error=result.last_error)
        metrics.count("PublishFailures", result.failures)
        metrics.count("OutboxRowsParked", result.parked)
    try:
        waiting = backlog(parts)
    except psycopg.Error as error:
        log("outbox_backlog_unknown", level="warning", error=str(error))
    else:
        metrics.count("OutboxBacklog", waiting.unpublished)
        metrics.seconds("OutboxOldestAge", waiting.oldest_age_seconds or 0)
    return result


def publish_now(parts: Bootstrap, wait_seconds: float = 30.0) -> tuple[RelayResult, outbox.Backlog]:
    """Publish what is unpublished now (operators), every shard's. Where
    relays are running, wake them and wait up to `wait_seconds` for them to
    publish what was waiting. Returns the result and the backlog after."""
    result = relay(parts, shard=0, shards=1).run_once()
    if result.locked_out or result.missing:
        with parts.connections().connection() as conn:
            outbox.wake_relay(conn)
        deadline = time.monotonic() + wait_seconds
        while backlog(parts).ready and time.monotonic() < deadline:
            time.sleep(0.1)
    return result, backlog(parts)


def backlog(parts: Bootstrap) -> outbox.Backlog:
    with parts.connections().connection() as conn:
        return outbox.backlog(conn)


def backlog_by_shard(parts: Bootstrap) -> list[outbox.Backlog]:
    with parts.connections().connection() as conn:
        return outbox.backlog_by_shard(conn, parts.settings.relay_shards)


def parked_rows(parts: Bootstrap) -> list[outbox.ParkedRow]:
    with parts.connections().connection() as conn:
        return outbox.parked_rows(conn)


def retry_parked(parts: Bootstrap, outbox_ids: list[int] | None) -> int:
    with parts.connections().connection() as conn:
        count = outbox.retry_parked(conn, outbox_ids)
    log("outbox_rows_unparked", count=count, outbox_ids=outbox_ids or "all")
    return count


def skip_parked(parts: Bootstrap, outbox_id: int) -> bool:
    with parts.connections().connection() as conn:
        skipped = outbox.skip_parked(conn, outbox_id)
    if skipped:
        log("outbox_row_skipped", level="warning", outbox_id=outbox_id,
            note="marked as handled without being published: consumers never see this event")
    return skipped
