"""The read side: batches of the Kafka event source mapping applied to the
read model, the projection's dead letters listed and replayed, customers
re-projected from the event store, and the read model rebuilt."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from chalicelib.infra import metrics
from chalicelib.infra.dead_letters import DeadLetter, DeadLetterQueue, unreadable_record
from chalicelib.infra.kafka_delivery import DeliveredRecord
from chalicelib.infra.logs import log
from chalicelib.infra.message_signing import HEADER
from chalicelib.infra.settings import ConfigurationError
from chalicelib.readmodel import sealed
from chalicelib.readmodel.projection import ProjectedEvent, ProjectionResult, project, project_kafka_batch
from chalicelib.readmodel.sealed import SealRow

if TYPE_CHECKING:
    import psycopg

    from chalicelib.bootstrap import Bootstrap
    from chalicelib.readmodel.rebuild import Progress, RebuildResult


@dataclass
class ReplayResult:
    letters: int = 0
    customers: int = 0
    rows_written: int = 0
    deleted: int = 0
    kept: list[tuple[DeadLetter, str]] = field(default_factory=list)  # with why


def project_batch(parts: Bootstrap, event: dict) -> ProjectionResult:
    """A batch of the Kafka event source mapping, applied to the read model
    in one transaction; gaps are filled from the event store. With message
    signing, a record the relay did not sign is a dead letter: the read
    model takes no change the event store does not hold."""
    queue = parts.dead_letter_queue()

    def dead_letters(unreadable) -> None:
        if queue is None:
            log("projection_dead_letters_dropped", level="warning", records=len(unreadable),
                reason="PROJECTION_DLQ_URL is not set: they are only logged")
            return
        queue.send([unreadable_record(record, error, "project_customers") for record, error in unreadable])

    signing = parts.message_signing()
    refusal = None
    if signing is not None:
        def refusal(record: DeliveredRecord) -> str | None:
            return signing.refusal(record.value, record.header(HEADER))

    with parts.connections().connection() as conn:
        result = project_kafka_batch(event, conn, _load_after(parts, conn), dead_letters, seal_row=seal_row(parts),
                                     refusal=refusal)
    log("projection_batch", **result.to_dict())
    metrics.count("ProjectionBatchSize", result.records)
    metrics.count("DeadLetters", result.poison)
    if result.newest_event_time is not None:
        metrics.seconds("ProjectionLag", (datetime.now(result.newest_event_time.tzinfo)
                                          - result.newest_event_time).total_seconds())
    return result


def seal_row(parts: Bootstrap) -> SealRow:
    """How rows get their personal data sealed (or not, without encryption)."""
    personal = parts.personal_data()
    return sealed.sealer(personal) if personal is not None else sealed.plain


def _load_after(parts: Bootstrap, conn: psycopg.Connection) -> Callable[[uuid.UUID, int], list[ProjectedEvent]]:
    """A customer's events after a version, from the event store, as the
    projection takes them, read on the projection's own connection."""
    store = parts.store_in(conn, for_state=False)
    return lambda customer_id, version: [ProjectedEvent.from_recorded(r) for r in store.load(customer_id, version)]


def reproject(parts: Bootstrap, customer_ids: set[uuid.UUID]) -> ProjectionResult:
    """Bring these customers' read-model rows up to their event streams."""
    with parts.connections().connection() as conn:
        load_after = _load_after(parts, conn)
        events = [event for customer_id in sorted(customer_ids) for event in load_after(customer_id, 0)]
        return project(conn, events, load_after, seal_row=seal_row(parts))


def _dead_letter_queue(parts: Bootstrap) -> DeadLetterQueue:
    queue = parts.dead_letter_queue()
    if queue is None:
        raise ConfigurationError("PROJECTION_DLQ_URL is not set: `make run` makes one, the template another")
    return queue


def dead_letters(parts: Bootstrap) -> list[DeadLetter]:
    """What is in the dead-letter queue, left there."""
    queue = _dead_letter_queue(parts)
    letters = list(queue.receive(hold_seconds=30))
    queue.release(letters)
    return letters


def replay_dead_letters(parts: Bootstrap) -> ReplayResult:
    """Re-project, from the event store, every customer a dead letter names,
    then delete the letter. A letter naming no customer (a record that is not
    one of ours) is deleted too; one whose records are no longer on the topic
    is kept, and `make rebuild` is the way out."""
    queue = _dead_letter_queue(parts)
    result = ReplayResult()
    for letter in queue.receive(hold_seconds=300):
        result.letters += 1
        keys, complete = _keys_named(parts, letter)
        customers = {cid for cid in map(_customer_id, keys) if cid is not None}
        if not complete:
            result.kept.append((letter, "some of its records are no longer on the topic: `make rebuild`"
                                        " brings every customer up to date"))
            queue.release([letter])
            continue
        try:
            written = reproject(parts, customers).rows_written
        except Exception:
            queue.release([letter])  # kept, and visible to the next replay at once
            raise
        result.customers += len(customers)
        result.rows_written += written
        queue.delete(letter)
        result.deleted += 1
        log("dead_letter_replayed", message_id=letter.message_id, kind=letter.kind,
            customers=sorted(map(str, customers)))
    return result


def _keys_named(parts: Bootstrap, letter: DeadLetter) -> tuple[list[bytes | None], bool]:
    from chalicelib.infra.kafka_reader import keys_at

    if letter.kind == "unreadable-record":
        return [letter.key()], True
    ranges = letter.offsets()
    if not ranges:
        return [], True
    return keys_at(parts.settings.require_kafka(), ranges, parts.kafka_security())


def _customer_id(key: bytes | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(key.decode()) if key else None
    except (UnicodeDecodeError, ValueError):
        return None


def rebuild_read_model(parts: Bootstrap, progress: Progress = lambda done, total: None) -> RebuildResult:
    from chalicelib.readmodel.rebuild import rebuild

    return rebuild(parts.database().direct().connect, progress, open_event=parts.open_event(),
                   seal_row=seal_row(parts))
