"""What the console shows: a customer's timeline (every event, the state
after it, where it is now), the topic's messages decoded, and the
operator's view. Personal data is masked unless the caller may read it and
asked to see it (the view decides, and logs the reveal)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from chalicelib.domain.customer import Customer, registry
from chalicelib.domain.errors import CustomerNotFound
from chalicelib.eventstore import cloudevents
from chalicelib.eventstore.backfill import Backfill
from chalicelib.eventstore.events import PERSONAL_DATA_ERASED, RecordedEvent
from chalicelib.eventstore.outbox import Backlog, ParkedRow, backlog_by_shard, parked_rows
from chalicelib.infra.db import Connections
from chalicelib.infra.kafka_reader import PartitionOffsets, TopicReader, TopicRecord, partition_for_key
from chalicelib.infra.message_signing import HEADER as SIGNATURE_HEADER
from chalicelib.infra.message_signing import MessageSigning
from chalicelib.readmodel import queries
from chalicelib.readmodel.projection import ProjectedEvent, fold
from chalicelib.readmodel.rows import CustomerRow
from chalicelib.usecases.unit_of_work import PostgresUnitsOfWork

MASK = "•••"  # a personal value not revealed
TIMELINE_MAX_EVENTS = 1000
STATE_FIELDS = ("name", "email", "version", "deleted", "erased")


def masked(event_type: str, data: dict[str, Any], reveal: bool) -> dict[str, Any]:
    """An event's data with its personal fields masked (null stays null: erased)."""
    if reveal:
        return data
    personal = registry.with_personal_data().get(event_type, ())
    return {k: (MASK if k in personal and v is not None else v) for k, v in data.items()}


def state_of(row: CustomerRow | None, reveal: bool) -> dict[str, Any] | None:
    if row is None:
        return None
    state = {name: getattr(row, name) for name in STATE_FIELDS}
    if not reveal:
        state.update({k: MASK for k in Customer.personal_state if state.get(k) is not None})
    return state


@dataclass(frozen=True)
class Where:
    """Where an event is now."""

    outbox: str  # "waiting", "parked", "skipped", "published", or "published (outbox row expired)"
    published_at: datetime | None
    parked_error: str | None
    partition: int | None  # of its message on the live topic, when found there
    offset: int | None
    projected: bool  # the read model's row has reached its version


@dataclass(frozen=True)
class TimelineEntry:
    position: int
    version: int
    type: str
    schema_version: int
    recorded_at: datetime
    actor: Any
    correlation_id: str | None
    causation_id: str | None
    event_id: str | None
    erased: bool
    data: dict[str, Any]
    state_after: dict[str, Any] | None
    where: Where


@dataclass(frozen=True)
class Timeline:
    customer_id: uuid.UUID
    revealed: bool
    events: list[TimelineEntry]
    more: bool  # more events than the timeline shows (the newest are left out)
    read_model: dict[str, Any] | None
    differences: list[str]  # fields where the read model's row differs from the fold of the store
    topic_error: str | None  # why where-on-the-topic is unknown


# By the events' positions, which outbox_global_position_idx holds (migration 020).
OUTBOX_OF_EVENTS = ("SELECT global_position, published_at, parked_at, parked_error FROM outbox"
                    " WHERE global_position = ANY(%s)")


def timeline(customer_id: uuid.UUID, reveal: bool, *, units: PostgresUnitsOfWork,
             topic: TopicReader | None) -> Timeline:
    with units.reading() as unit:
        stored = unit.events.load(customer_id, limit=TIMELINE_MAX_EVENTS + 1)
        if not stored:
            raise CustomerNotFound(f"customer {customer_id} not found")
        outbox = {row[0]: row[1:] for row in unit.conn.execute(OUTBOX_OF_EVENTS,
                                                               ([e.global_position for e in stored],))}
        row = queries.from_read_model(unit.conn, customer_id)
        read_model = unit.open_row(row) if row is not None else None
    more, stored = len(stored) > TIMELINE_MAX_EVENTS, stored[:TIMELINE_MAX_EVENTS]
    events = [registry.upcast_recorded(e) for e in stored]
    located, topic_error = _on_the_topic(customer_id, events[0].recorded_at, topic)
    entries, state = [], None
    erased_now = any(e.metadata.get(PERSONAL_DATA_ERASED) for e in events)
    for event in events:
        state = fold([ProjectedEvent.from_recorded(event)], state)
        if state is not None and erased_now:
            state = _erased(state)
        entries.append(_entry(event, state, outbox, located, read_model, reveal))
    return Timeline(customer_id, reveal, entries, more, state_of(read_model, reveal),
                    [] if more else _differences(state, read_model), topic_error)


def _erased(row: CustomerRow) -> CustomerRow:
    return dataclasses.replace(row, erased=True)


def _entry(event: RecordedEvent, state: CustomerRow | None, outbox: dict[int, tuple], located: dict[int, tuple],
           read_model: CustomerRow | None, reveal: bool) -> TimelineEntry:
    published_at, parked_at, parked_error = outbox.get(event.global_position, (None, None, None))
    if event.global_position not in outbox:
        where = "published (outbox row expired)"
    elif parked_at is not None:
        where = "skipped" if published_at is not None else "parked"
    else:
        where = "published" if published_at is not None else "waiting"
    partition, offset = located.get(event.version, (None, None))
    metadata = event.metadata
    return TimelineEntry(
        event.global_position, event.version, event.event_type, event.schema_version, event.recorded_at,
        metadata.get("actor"), metadata.get("correlation_id"), metadata.get("causation_id"), metadata.get("event_id"),
        bool(metadata.get(PERSONAL_DATA_ERASED)), masked(event.event_type, event.data, reveal),
        state_of(state, reveal),
        Where(where, published_at, parked_error, partition, offset,
              read_model is not None and read_model.version >= event.version))


def _differences(folded: CustomerRow | None, read_model: CustomerRow | None) -> list[str]:
    if folded is None:
        return []
    if read_model is None:
        return ["the read model has no row for this customer"]
    return [f for f in ("name", "email", "version", "deleted")
            if getattr(folded, f) != getattr(read_model, f) and not (f in ("name", "email") and read_model.erased)]


def _on_the_topic(customer_id: uuid.UUID, since: datetime, topic: TopicReader | None
                  ) -> tuple[dict[int, tuple[int, int]], str | None]:
    """Each version's message on the live topic: partition and offset, read
    from the one partition the customer's key goes to."""
    if topic is None:
        return {}, "KAFKA_BOOTSTRAP_SERVERS is not set"
    from kafka.errors import KafkaError

    key = str(customer_id).encode()
    try:
        partitions = topic.partition_count()  # the ends are not needed: read() finds its own
        if not partitions:
            return {}, f"the topic {topic.topic} does not exist"
        partition = partition_for_key(key, partitions)
        start = topic.offset_at(partition, since - timedelta(seconds=5))
        if start is None:
            return {}, None
        found: dict[int, tuple[int, int]] = {}
        for record in topic.read(partition, start, limit=TIMELINE_MAX_EVENTS * 2,
                                 keep=lambda r: r.key == key):
            try:
                version = cloudevents.decode(record.value or b"").stream_version
            except cloudevents.NotOurMessage:
                continue
            found.setdefault(version, (record.partition, record.offset))
        return found, None
    except KafkaError as error:
        return {}, f"Kafka cannot be read just now: {error!r}"


# The topic.


@dataclass(frozen=True)
class MessageQuery:
    partition: int | None = None
    offset: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    newest: bool = False
    customer_id: uuid.UUID | None = None
    event_types: frozenset[str] = frozenset()
    limit: int = 50


@dataclass(frozen=True)
class DecodedMessage:
    partition: int
    offset: int
    timestamp: datetime
    key: str | None
    headers: dict[str, str]
    attributes: dict[str, Any]  # the CloudEvent without its data
    data: Any
    signature: str  # "valid", "not checked: ...", or why it is not valid
    error: str | None  # why it is not one of our messages


@dataclass(frozen=True)
class Messages:
    topic: str
    partition: int
    messages: list[DecodedMessage]
    revealed: bool


def messages(query: MessageQuery, reveal: bool, *, topic: TopicReader,
             signing: MessageSigning | None) -> Messages:
    """Messages of one partition (the customer's, when one is named: its key
    decides the partition), from an offset, a time or the newest."""
    partitions = topic.partitions()
    if not partitions:
        return Messages(topic.topic, 0, [], reveal)
    key = str(query.customer_id).encode() if query.customer_id else None
    partition = partition_for_key(key, len(partitions)) if key else (query.partition or 0)
    if not 0 <= partition < len(partitions):
        raise ValueError(f"the topic {topic.topic} has partitions 0 to {len(partitions) - 1}, not {partition}")
    offsets = partitions[partition]
    if query.newest:
        start = max(offsets.beginning, offsets.end - query.limit) if key is None else offsets.beginning
    elif query.since is not None:
        at = topic.offset_at(partition, query.since)
        start = offsets.end if at is None else at
    else:
        start = offsets.beginning if query.offset is None else query.offset

    def keep(record: TopicRecord) -> bool:
        if key is not None and record.key != key:
            return False
        if query.until is not None and record.timestamp > query.until:
            return False
        return not query.event_types or _header(record, "event-type") in query.event_types

    found = topic.read(partition, start, limit=10_000 if query.newest and key else query.limit, keep=keep)
    if query.newest and key:
        found = found[-query.limit:]
    return Messages(topic.topic, partition, [decode(r, reveal, signing) for r in found], reveal)


def _header(record: TopicRecord, name: str) -> str | None:
    for k, v in record.headers:
        if k == name:
            return v.decode("utf-8", "replace")
    return None


def decode(record: TopicRecord, reveal: bool, signing: MessageSigning | None) -> DecodedMessage:
    import json

    signature = next((v for k, v in record.headers if k == SIGNATURE_HEADER), None)
    if signing is None:
        verdict = "not checked: MESSAGE_SIGNING_SECRET_ARN is not set"
    else:
        verdict = signing.refusal(record.value, signature) or "valid"
    headers = {k: v.decode("utf-8", "replace") for k, v in record.headers}
    error, attributes, data = None, {}, None
    try:
        cloudevents.decode(record.value or b"")
        event = json.loads(record.value or b"")
        attributes = {k: v for k, v in event.items() if k != "data"}
        data = masked(str(event.get("type")), event["data"], reveal)
    except (cloudevents.NotOurMessage, ValueError) as failure:
        error = f"not one of our messages: {failure}"
    return DecodedMessage(record.partition, record.offset, record.timestamp,
                          record.key.decode("utf-8", "replace") if record.key is not None else None,
                          headers, attributes, data, verdict, error)


@dataclass(frozen=True)
class TopicPartitions:
    topic: str
    group_id: str
    partitions: list[PartitionOffsets]


def topic_partitions(topic: TopicReader, *, group_id: str) -> TopicPartitions:
    return TopicPartitions(topic.topic, group_id, topic.partitions(group_id))


# The operator's view.


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    end: int
    committed: int | None
    behind: int | None


@dataclass
class Overview:
    shards: list[Backlog] = field(default_factory=list)
    parked: list[ParkedRow] = field(default_factory=list)
    lag: list[PartitionLag] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    backfills: list[Backfill] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)  # a part that could not be read, and why


def overview(*, connections: Connections, shards: int, topic: TopicReader | None, group_id: str,
             dead_letters: Callable[[], list[Any]] | None, backfills: Callable[[], list[Backfill]]) -> Overview:
    """Each part read on its own: one that cannot be read says why, the others show."""
    import psycopg

    seen = Overview()
    try:
        with connections.connection() as conn:
            seen.shards = backlog_by_shard(conn, shards)
            seen.parked = parked_rows(conn)
        seen.backfills = backfills()
    except psycopg.Error as error:
        seen.problems["database"] = str(error).strip()
    if topic is None:
        seen.problems["kafka"] = "KAFKA_BOOTSTRAP_SERVERS is not set"
    else:
        from kafka.errors import KafkaError

        try:
            seen.lag = [_lag(p) for p in topic.partitions(group_id)]
        except KafkaError as error:
            seen.problems["kafka"] = f"cannot be read just now: {error!r}"
    if dead_letters is None:
        seen.problems["dead_letters"] = "PROJECTION_DLQ_URL is not set"
    else:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            seen.dead_letters = [{"message_id": letter.message_id, "kind": letter.kind, "error": letter.error,
                                  "time": letter.time, "offsets": [str(o) for o in letter.offsets()]}
                                 for letter in dead_letters()]
        except (BotoCoreError, ClientError) as error:
            seen.problems["dead_letters"] = str(error)
    return seen


def _lag(offsets: PartitionOffsets) -> PartitionLag:
    behind = None if offsets.committed is None else max(0, offsets.end - offsets.committed)
    return PartitionLag(offsets.partition, offsets.end, offsets.committed, behind)
