"""The read side: batches of the Kafka event source mapping applied to the
read model, the projection's dead letters listed and replayed, customers
re-projected from the event store, and the read model rebuilt."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chalicelib.infra import metrics
from chalicelib.infra.db import Database
from chalicelib.infra.dead_letters import DeadLetter, DeadLetterQueue, unreadable_record
from chalicelib.infra.kafka_delivery import DeliveredRecord
from chalicelib.infra.logs import log
from chalicelib.infra.message_signing import HEADER, MessageSigning
from chalicelib.infra.settings import ConfigurationError
from chalicelib.personal.sealing import PersonalData
from chalicelib.readmodel.projection import (
    LoadAfter,
    ProjectedEvent,
    ProjectionResult,
    Refusal,
    project,
    project_kafka_batch,
)
from chalicelib.readmodel.rebuild import Progress, RebuildResult, rebuild
from chalicelib.usecases.unit_of_work import PostgresUnitOfWork, PostgresUnitsOfWork

# The records of a failed batch, by their offsets: their keys, and whether
# every one was still on the topic (chalicelib.infra.kafka_reader).
KeysAt = Callable[[DeadLetter], tuple[list[bytes | None], bool]]


@dataclass
class ReplayResult:
    letters: int = 0
    customers: int = 0
    rows_written: int = 0
    deleted: int = 0
    kept: list[tuple[DeadLetter, str]] = field(default_factory=list)  # with why


def project_batch(event: dict[str, Any], *, units: PostgresUnitsOfWork, dead_letters: DeadLetterQueue | None,
                  signing: MessageSigning | None) -> ProjectionResult:
    """A batch of the Kafka event source mapping, applied to the read model
    in one transaction; gaps are filled from the event store. With message
    signing, a record the relay did not sign is a dead letter: the read
    model takes no change the event store does not hold."""
    def set_aside(unreadable: list[tuple[DeliveredRecord, str]]) -> None:
        if dead_letters is None:
            log("projection_dead_letters_dropped", level="warning", records=len(unreadable),
                reason="PROJECTION_DLQ_URL is not set: they are only logged")
            return
        dead_letters.send([unreadable_record(record, error, "project_customers") for record, error in unreadable])

    refusal: Refusal | None = None
    if signing is not None:
        def refusal(record: DeliveredRecord) -> str | None:
            return signing.refusal(record.value, record.header(HEADER))

    with units.reading() as unit:
        result = project_kafka_batch(event, unit.conn, _load_after(unit), set_aside, seal_row=unit.seal_row,
                                     refusal=refusal, prefetch=unit.prefetch_keys)
    log("projection_batch", **result.to_dict())
    metrics.count("ProjectionBatchSize", result.records)
    metrics.count("DeadLetters", result.poison)
    if result.newest_event_time is not None:
        metrics.seconds("ProjectionLag", (datetime.now(result.newest_event_time.tzinfo)
                                          - result.newest_event_time).total_seconds())
    return result


def _load_after(unit: PostgresUnitOfWork) -> LoadAfter:
    """A customer's events after a version, from the event store, as the
    projection takes them, read on the unit's connection."""
    def load_after(customer_id: uuid.UUID, version: int) -> list[ProjectedEvent]:
        return [ProjectedEvent.from_recorded(r) for r in unit.events.load(customer_id, version)]

    return load_after


def reproject(customer_ids: set[uuid.UUID], *, units: PostgresUnitsOfWork) -> ProjectionResult:
    """Bring these customers' read-model rows up to their event streams."""
    with units.reading() as unit:
        load_after = _load_after(unit)
        events = [event for customer_id in sorted(customer_ids) for event in load_after(customer_id, 0)]
        return project(unit.conn, events, load_after, seal_row=unit.seal_row, prefetch=unit.prefetch_keys)


def _required(queue: DeadLetterQueue | None) -> DeadLetterQueue:
    if queue is None:
        raise ConfigurationError("PROJECTION_DLQ_URL is not set: `make run` makes one, the template another")
    return queue


def dead_letters(*, queue: DeadLetterQueue | None) -> list[DeadLetter]:
    """What is in the dead-letter queue, left there."""
    letters = list(_required(queue).receive(hold_seconds=30))
    _required(queue).release(letters)
    return letters


def replay_dead_letters(*, queue: DeadLetterQueue | None, keys_at: KeysAt,
                        units: PostgresUnitsOfWork) -> ReplayResult:
    """Re-project, from the event store, every customer a dead letter names,
    then delete the letter. A letter naming no customer (a record that is not
    one of ours) is deleted too; one whose records are no longer on the topic
    is kept, and `make rebuild` is the way out."""
    letters = _required(queue)
    result = ReplayResult()
    for letter in letters.receive(hold_seconds=300):
        _replay(letter, letters, result, keys_at, units)
    return result


def replay_dead_letter(message_id: str, *, queue: DeadLetterQueue | None, keys_at: KeysAt,
                       units: PostgresUnitsOfWork) -> ReplayResult | None:
    """The replay of one letter, as above; None when the queue has no such letter."""
    letters = _required(queue)
    letter = _take(letters, message_id)
    if letter is None:
        return None
    result = ReplayResult()
    _replay(letter, letters, result, keys_at, units)
    return result


def discard_dead_letter(message_id: str, *, queue: DeadLetterQueue | None) -> bool:
    """Delete one letter unreplayed; False when the queue has no such letter."""
    letters = _required(queue)
    letter = _take(letters, message_id)
    if letter is not None:
        letters.delete(letter)
        log("dead_letter_discarded", message_id=message_id, kind=letter.kind)
    return letter is not None


def _take(letters: DeadLetterQueue, message_id: str) -> DeadLetter | None:
    """That letter, held; every other one seen on the way is visible again at once."""
    seen = list(letters.receive(hold_seconds=60))
    wanted = next((letter for letter in seen if letter.message_id == message_id), None)
    letters.release([letter for letter in seen if letter is not wanted])
    return wanted


def _replay(letter: DeadLetter, letters: DeadLetterQueue, result: ReplayResult, keys_at: KeysAt,
            units: PostgresUnitsOfWork) -> None:
    result.letters += 1
    keys, complete = _keys_named(letter, keys_at)
    customers = {cid for cid in map(_customer_id, keys) if cid is not None}
    if not complete:
        result.kept.append((letter, "some of its records are no longer on the topic: `make rebuild`"
                                    " brings every customer up to date"))
        letters.release([letter])
        return
    try:
        written = reproject(customers, units=units).rows_written
    except Exception:
        letters.release([letter])  # kept, and visible to the next replay at once
        raise
    result.customers += len(customers)
    result.rows_written += written
    letters.delete(letter)
    result.deleted += 1
    log("dead_letter_replayed", message_id=letter.message_id, kind=letter.kind,
        customers=sorted(map(str, customers)))


def _keys_named(letter: DeadLetter, keys_at: KeysAt) -> tuple[list[bytes | None], bool]:
    if letter.kind == "unreadable-record":
        return [letter.key()], True
    if not letter.offsets():
        return [], True
    return keys_at(letter)


def _customer_id(key: bytes | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(key.decode()) if key else None
    except (UnicodeDecodeError, ValueError):
        return None


def rebuild_read_model(progress: Progress = lambda done, total: None, *, database: Database,
                       personal: PersonalData | None) -> RebuildResult:
    return rebuild(database.connect, progress, personal=personal)
