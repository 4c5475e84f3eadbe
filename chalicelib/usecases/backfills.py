"""Backfills (chalicelib.eventstore.backfill): asked for by an operator (`python
-m ops backfill`, the console), run to their end by whoever holds them (the
command itself, or the scheduled `backfill_events` function on AWS, which
goes on with every unfinished one, invocation after invocation).

Their messages are exactly the live ones (CloudEvents, signed, the same key
and so the same partition), in today's shape of each event type, personal
data readable (null once erased), plus the header `replay` naming the
backfill: `backfill-<id>`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

import psycopg

from chalicelib.domain.customer import registry
from chalicelib.eventstore import backfill, feed
from chalicelib.eventstore.errors import Unavailable, UnreadableEvent
from chalicelib.eventstore.events import RecordedEvent
from chalicelib.eventstore.relay import Acknowledgement
from chalicelib.infra.db import Connections
from chalicelib.infra.logs import log
from chalicelib.personal.sealing import PersonalData

REPLAY_HEADER = "replay"


class TopicRefused(ValueError):
    """A backfill to the live topic that was not asked for as such."""


class HeaderSender(Protocol):
    """A sender that puts headers of the caller's on each message (KafkaPublisher)."""

    def send(self, events: Sequence[RecordedEvent],
             extra_headers: Sequence[tuple[str, bytes]] = ()) -> Acknowledgement: ...


class ReplaySender:
    """A backfill's messages: the live ones, with its replay header."""

    def __init__(self, publisher: HeaderSender, name: str) -> None:
        self._publisher = publisher
        self._headers = [(REPLAY_HEADER, name.encode())]

    def send(self, events: Sequence[RecordedEvent]) -> Acknowledgement:
        return self._publisher.send(events, self._headers)


def _outside(topic: str, topic_prefix: str | None) -> str | None:
    """Why `topic` is not for this deployment's backfills, if it is not:
    on AWS their function may write only to topics of one prefix."""
    if topic_prefix and not topic.startswith(topic_prefix):
        return (f"this deployment backfills only to topics named {topic_prefix}* (BACKFILL_TOPIC_PREFIX, the"
                f" template's BackfillTopicPrefix), not to {topic}")
    return None


def replay_senders(publisher_for: Callable[[str], HeaderSender], topic_prefix: str | None) -> backfill.SenderFor:
    """Each backfill's sender: to its topic, with its replay header."""
    def sender_for(asked: backfill.Backfill) -> ReplaySender:
        refused = _outside(asked.topic, topic_prefix)
        if refused:
            raise backfill.TopicNotAllowed(refused)
        return ReplaySender(publisher_for(asked.topic), asked.name)

    return sender_for


def as_consumers_read_them(personal: PersonalData | None) -> backfill.PrepareBatch:
    """Stored events as consumers read them: today's shape, personal data
    opened (the batch's keys looked up together), null once erased."""
    def prepare(conn: psycopg.Connection, events: Sequence[RecordedEvent]) -> list[RecordedEvent]:
        if personal is not None:
            personal.keys.keys_for(sorted({event.stream_id for event in events}), conn)
        ready = []
        for event in events:
            try:
                opened = (event if personal is None
                          else personal.open_recorded(event, personal.keys.key_for(event.stream_id, conn)))
                ready.append(registry.upcast_recorded(opened))
            except (Unavailable, psycopg.Error):
                raise
            except Exception as error:  # noqa: BLE001 - no retry can make this code read it
                raise UnreadableEvent(event, f"{type(error).__name__}: {error}") from error
        return ready

    return prepare


def start(topic: str, selection: feed.Selection = feed.EVERYTHING, *, rate_limit: int | None = None,
          requested_by: str | None = None, to_live_topic: bool = False, live_topic: str,
          topic_prefix: str | None = None, connections: Connections) -> backfill.Backfill:
    """Ask for a backfill of `selection` to `topic`; it begins with the next
    run. The live topic only with `to_live_topic`: its consumers would get
    every event again."""
    if not topic.strip():
        raise TopicRefused("name the topic to backfill to")
    if topic == live_topic and not to_live_topic:
        raise TopicRefused(f"{topic} is the live topic: its consumers would get every event again; ask for it"
                           " explicitly (--to-live-topic) if that is what they want")
    refused = _outside(topic, topic_prefix)
    if refused:
        raise TopicRefused(refused)
    with connections.connection() as conn:
        made = backfill.create(conn, topic, selection, rate_limit=rate_limit, requested_by=requested_by)
    log("backfill_requested", backfill=made.name, topic=topic, stream_id=str(selection.stream_id or ""),
        event_types=list(selection.event_types), after_global_position=selection.after_global_position,
        rate_limit=rate_limit, requested_by=requested_by)
    return made


def run(backfill_id: int, seconds: float, progress: backfill.Progress = lambda sent, total: None, *,
        runner: backfill.BackfillRunner) -> backfill.RunResult:
    """Run the backfill for at most `seconds` (to its end, if that comes first)."""
    result = runner.run(backfill_id, time.monotonic() + seconds, progress=progress)
    done = result.backfill
    if done is not None and not result.running_elsewhere:
        log("backfill_ran", backfill=done.name, state=done.state, sent=result.sent, total=done.total,
            failures=result.failures, error=done.error or result.last_error)
    return result


def run_unfinished(seconds: float, *, runner: backfill.BackfillRunner,
                   connections: Connections) -> list[backfill.RunResult]:
    """Go on with every unfinished backfill no one else runs, one after the
    other, for at most `seconds` in all (the scheduled function)."""
    deadline = time.monotonic() + seconds
    with connections.connection() as conn:
        waiting = backfill.unfinished(conn)
    results = []
    for backfill_id in waiting:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        results.append(run(backfill_id, left, runner=runner))
    return results


def status(*, connections: Connections, limit: int = 100) -> list[backfill.Backfill]:
    with connections.connection() as conn:
        return backfill.listed(conn, limit)


def resume(backfill_id: int, *, connections: Connections) -> backfill.Backfill | None:
    """Ready to go on from its checkpoint: a failed one is tried again."""
    with connections.connection() as conn:
        return backfill.retry(conn, backfill_id)


def one(backfill_id: int, *, connections: Connections) -> backfill.Backfill | None:
    with connections.connection() as conn:
        return backfill.get(conn, backfill_id)

