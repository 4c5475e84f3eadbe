"""Publishing: the outbox relay that the scheduled function runs, the same
run by an operator's hand, and the outbox's parked rows and backlog.

The relay (chalicelib.eventstore.relay) is generic; here it gets its
connection (direct, never through RDS Proxy: its LISTEN and its session
locks would pin a proxy connection for the whole invocation), the sender
(the Kafka publisher, measured), and what makes a stored event the message
consumers read: today's shape, with the personal data readable (or null,
once erased).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg

from chalicelib import idempotency
from chalicelib.domain.customer import registry
from chalicelib.eventstore import outbox
from chalicelib.eventstore.events import RecordedEvent
from chalicelib.eventstore.relay import (
    Acknowledgement,
    OutboxRelay,
    Prefetch,
    Prepare,
    RelayResult,
    Sender,
    nothing_to_prefetch,
)
from chalicelib.infra import metrics
from chalicelib.infra.db import Connections, Database
from chalicelib.infra.logs import log
from chalicelib.infra.settings import Settings
from chalicelib.personal.sealing import PersonalData

# The relay's connection, as an operator finds it in pg_stat_activity.
RELAY_APPLICATION_NAME = "customer-service-outbox-relay"


class MeasuredSender:
    """A sender whose acknowledged batches are counted (EventsPublished) and
    timed from the oldest event's commit (PublishLatency); it sends as the
    sender it wraps does, so the relay still pipelines."""

    def __init__(self, inner: Sender) -> None:
        self.inner = inner

    def send(self, events: Sequence[RecordedEvent]) -> Acknowledgement:
        acknowledged = self.inner.send(events)

        def wait() -> None:
            acknowledged()
            if events:
                oldest = min(event.recorded_at for event in events)
                metrics.milliseconds("PublishLatency", (datetime.now(oldest.tzinfo) - oldest).total_seconds() * 1000)
                metrics.count("EventsPublished", len(events))

        return wait


def for_consumers(personal: PersonalData | None) -> Prepare:
    """A stored event as consumers read it: today's shape of its type, its
    personal data readable (null once erased), the key looked up on the
    relay's connection."""
    if personal is None:
        return lambda conn, event: registry.upcast_recorded(event)

    def prepare(conn: psycopg.Connection, event: RecordedEvent) -> RecordedEvent:
        return registry.upcast_recorded(personal.open_recorded(event, personal.keys.key_for(event.stream_id, conn)))

    return prepare


def keys_of_batch(personal: PersonalData | None) -> Prefetch:
    """The keys of a batch's customers, looked up together before its
    events are opened one by one (each then finds its key in memory)."""
    if personal is None:
        return nothing_to_prefetch

    def prefetch(conn: psycopg.Connection, events: Sequence[RecordedEvent]) -> None:
        personal.keys.keys_for(list({event.stream_id for event in events}), conn)

    return prefetch


@dataclass(frozen=True)
class Relays:
    """What each shard's relay is made of; made once per container."""

    database: Database  # reached directly, never through RDS Proxy
    sender: Sender
    prepare: Prepare
    prefetch: Prefetch
    settings: Settings

    def relay(self, shard: int = 0, shards: int | None = None) -> OutboxRelay:
        """The relay of one shard of RELAY_SHARDS (or of `shards`; 1: the whole outbox)."""
        settings, database = self.settings, self.database
        return OutboxRelay(
            # Its own connection, not the container's: it holds the relay's
            # locks and LISTENs for the whole invocation.
            connect=lambda: database.connect(autocommit=True, connect_timeout=5,
                                             application_name=RELAY_APPLICATION_NAME),
            sender=self.sender,
            batch_size=settings.relay_batch_size,
            retention_seconds=settings.outbox_retention_hours * 3600,
            prepare=self.prepare,
            prefetch=self.prefetch,
            shard=shard,
            shards=settings.relay_shards if shards is None else shards,
            on_error=lambda error: log("outbox_publish_failed", level="error", error=str(error),
                                       brokers=settings.kafka_bootstrap_servers, topic=settings.kafka_topic),
            on_parked=lambda outbox_id, event, error: log(
                "outbox_row_parked", level="error", outbox_id=outbox_id, stream_id=str(event.stream_id),
                version=event.version, event_type=event.event_type, error=error,
                action="this customer's later events wait behind it; see python -m ops outbox --parked"),
        )


def relay_outbox(time_left: float | None = None, shard: int = 0, *, relays: Relays,
                 connections: Connections) -> RelayResult:
    """Publish the shard's part of the outbox until `time_left` seconds (at
    most RELAY_MAX_SECONDS) have passed, woken by each commit to it."""
    try:
        with connections.connection() as conn:
            idempotency.prune_expired(conn)
    except psycopg.Error as error:
        # Housekeeping only: the relay must start even while the database is
        # away, and it reconnects by itself.
        log("idempotency_prune_failed", level="warning", error=str(error))
    settings = relays.settings
    seconds = settings.relay_max_seconds if time_left is None else min(settings.relay_max_seconds, time_left)
    result = relays.relay(shard).run(deadline=time.monotonic() + max(0.0, seconds))
    if result.locked_out:
        log("outbox_relay_skipped", shard=shard, reason="other relays are draining this shard's buckets")
    else:
        log("outbox_relayed", shard=shard, shards=settings.relay_shards, published=result.published,
            batches=result.batches, failures=result.failures, parked=result.parked,
            buckets_held_elsewhere=result.missing, last_error=result.last_error)
        metrics.count("PublishFailures", result.failures)
        metrics.count("OutboxRowsParked", result.parked)
    try:
        waiting = backlog(connections=connections)
    except psycopg.Error as error:
        log("outbox_backlog_unknown", level="warning", error=str(error))
    else:
        metrics.count("OutboxBacklog", waiting.unpublished)
        metrics.seconds("OutboxOldestAge", waiting.oldest_age_seconds or 0)
    return result


def publish_now(wait_seconds: float = 30.0, *, relays: Relays,
                connections: Connections) -> tuple[RelayResult, outbox.Backlog]:
    """Publish what is unpublished now (operators), every shard's. Where
    relays are running, wake them and wait up to `wait_seconds` for them to
    publish what was waiting. Returns the result and the backlog after."""
    result = relays.relay(shard=0, shards=1).run_once()
    if result.locked_out or result.missing:
        with connections.connection() as conn:
            outbox.wake_relay(conn)
        deadline = time.monotonic() + wait_seconds
        while backlog(connections=connections).ready and time.monotonic() < deadline:
            time.sleep(0.1)
    return result, backlog(connections=connections)


def backlog(*, connections: Connections) -> outbox.Backlog:
    with connections.connection() as conn:
        return outbox.backlog(conn)


def backlog_by_shard(shards: int, *, connections: Connections) -> list[outbox.Backlog]:
    with connections.connection() as conn:
        return outbox.backlog_by_shard(conn, shards)


def parked_rows(*, connections: Connections) -> list[outbox.ParkedRow]:
    with connections.connection() as conn:
        return outbox.parked_rows(conn)


def retry_parked(outbox_ids: list[int] | None, *, connections: Connections) -> int:
    with connections.connection() as conn:
        count = outbox.retry_parked(conn, outbox_ids)
    log("outbox_rows_unparked", count=count, outbox_ids=outbox_ids or "all")
    return count


def skip_parked(outbox_id: int, *, connections: Connections) -> bool:
    with connections.connection() as conn:
        skipped = outbox.skip_parked(conn, outbox_id)
    if skipped:
        log("outbox_row_skipped", level="warning", outbox_id=outbox_id,
            note="marked as handled without being published: consumers never see this event")
    return skipped
