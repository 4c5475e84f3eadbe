"""The projection: events in (CloudEvents from Kafka, or recorded events from
the store), rows of the customer read model out.

It trusts neither delivery order nor exactly-once delivery:
- a row only ever moves forward: the upsert applies when the new version is
  higher than the stored one, so a duplicate or an older event is a no-op and
  two batches racing for one customer cannot lose an update (each writes a
  whole state, derived from a contiguous run of events);
- a gap (an event whose predecessors were not seen) is filled from the event
  store, the source of truth.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb, set_json_loads

from chalicelib.domain.customer import Customer, CustomerCreated, registry
from chalicelib.eventstore import cloudevents
from chalicelib.eventstore.events import DomainEvent, RecordedEvent, Snapshot
from chalicelib.infra import kafka_delivery
from chalicelib.infra.logs import log
from chalicelib.readmodel.rows import COLUMNS, TABLE, CustomerRow, customer_row
from chalicelib.readmodel.sealed import Prefetch, SealRow, no_prefetch, plain


@dataclass(frozen=True)
class ProjectedEvent:
    """A customer's event as the projection sees it, from Kafka or the store."""

    customer_id: uuid.UUID
    version: int
    event: DomainEvent
    time: datetime

    @staticmethod
    def from_recorded(recorded: RecordedEvent) -> ProjectedEvent:
        return ProjectedEvent(
            customer_id=recorded.stream_id,
            version=recorded.version,
            event=registry.deserialize(recorded),
            time=datetime.fromisoformat(recorded.metadata["occurred_at"]),
        )


class NotACustomerEvent(ValueError):
    """A record the projection cannot read (poison): a dead letter."""


def from_cloudevent(raw: bytes) -> ProjectedEvent:
    try:
        message = cloudevents.decode(raw)
        return ProjectedEvent(message.stream_id, message.stream_version,
                              # The relay publishes today's shape and says which.
                              registry.decode(message.event_type, message.schema_version, message.data),
                              message.time)
    except (ValueError, KeyError, TypeError, LookupError) as error:
        raise NotACustomerEvent(str(error)) from None


def fold(events: Iterable[ProjectedEvent], row: CustomerRow | None = None) -> CustomerRow | None:
    """The row after these events (contiguous, following the row's version):
    the Customer's own fold (its apply), with the times the read model
    shows. ValueError for a history no customer can have."""
    customer = None
    if row is not None:
        customer = Customer.rehydrate(row.id, (), Snapshot(row.version, Customer.state_schema_version, {
            "name": row.name, "email": row.email, "deleted": row.deleted and not row.erased, "erased": row.erased}))
        created_at, updated_at = row.created_at, row.updated_at
    for projected in events:
        created = isinstance(projected.event, CustomerCreated)
        if (customer is None) != created:
            raise ValueError(f"cannot apply {type(projected.event).__name__} v{projected.version} to"
                             f" {'no customer' if customer is None else 'an existing customer'}")
        if customer is None:
            customer, created_at = Customer(), projected.time
            customer.id = projected.customer_id
        customer.apply(projected.event)
        customer.version, updated_at = projected.version, projected.time
    if customer is None or customer.id is None:
        return None
    # An erased customer reads as deleted too: it is no longer a live customer.
    return CustomerRow(customer.id, customer.name, customer.email, customer.version, not customer.exists,
                       created_at, updated_at, None, customer.erased)


# Loads a customer's events after a version, from the event store.
LoadAfter = Callable[[uuid.UUID, int], Sequence[ProjectedEvent]]


@dataclass
class ProjectionResult:
    records: int = 0
    poison: int = 0
    rows_written: int = 0
    duplicates: int = 0
    gaps_filled: int = 0
    unprojectable: int = 0
    # When the newest event of the batch happened: how far behind it is.
    newest_event_time: datetime | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "newest_event_time"}


_SELECT = "SELECT " + COLUMNS + " FROM {table} WHERE id = ANY(%s)"

_UPSERT = """
INSERT INTO {table} (""" + COLUMNS + """)
SELECT """ + COLUMNS + """
FROM jsonb_to_recordset(%s::jsonb) AS r(id uuid, name jsonb, email jsonb, version int, deleted boolean,
                                         created_at timestamptz, updated_at timestamptz, email_hash text,
                                         erased boolean)
ON CONFLICT (id) DO UPDATE SET
    name = EXCLUDED.name, email = EXCLUDED.email, version = EXCLUDED.version, deleted = EXCLUDED.deleted,
    created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, email_hash = EXCLUDED.email_hash,
    erased = EXCLUDED.erased, projected_at = clock_timestamp()
WHERE {table}.version < EXCLUDED.version
"""


# Takes the records of a batch that cannot be read, with why.
OnUnreadable = Callable[[list[tuple[kafka_delivery.DeliveredRecord, str]]], None]


# Why a record must not be trusted (it is not the relay's), or None.
Refusal = Callable[[kafka_delivery.DeliveredRecord], str | None]


def project_kafka_batch(event: dict[str, Any], conn: psycopg.Connection, load_after: LoadAfter,
                        on_unreadable: OnUnreadable = lambda unreadable: None,
                        seal_row: SealRow = plain, refusal: Refusal | None = None,
                        prefetch: Prefetch = no_prefetch) -> ProjectionResult:
    """A batch of the Kafka event source mapping, applied in one transaction.
    Unreadable records, and those `refusal` refuses, go to `on_unreadable`
    first: should that fail, the whole batch fails and is delivered again."""
    events, records, unreadable = [], 0, []
    for record in kafka_delivery.records(event):
        records += 1
        try:
            refused = refusal(record) if refusal is not None else None
            if refused is not None:
                raise NotACustomerEvent(refused)
            events.append(from_cloudevent(record.value or b""))
        except NotACustomerEvent as error:
            # Retrying cannot make it readable: set it aside, go on.
            unreadable.append((record, str(error)))
            log("projection_poison_record", level="error", topic=record.topic, partition=record.partition,
                offset=record.offset, error=str(error))
    if unreadable:
        on_unreadable(unreadable)
    result = project(conn, events, load_after, seal_row=seal_row, prefetch=prefetch)
    result.records, result.poison = records, len(unreadable)
    result.newest_event_time = max((e.time for e in events), default=None)
    return result


def project(conn: psycopg.Connection, events: Iterable[ProjectedEvent], load_after: LoadAfter,
            table: str = TABLE, seal_row: SealRow = plain, prefetch: Prefetch = no_prefetch) -> ProjectionResult:
    """Apply events in one transaction: one read, one write. `seal_row`
    seals each row's personal data and gives it the keyed hash lookup by
    email compares (readmodel.sealed); `prefetch` looks up what it needs
    for these customers in the read's round trip."""
    result = ProjectionResult()
    by_customer: dict[uuid.UUID, dict[int, ProjectedEvent]] = defaultdict(dict)
    for projected in events:
        by_customer[projected.customer_id].setdefault(projected.version, projected)
    if not by_customer:
        return result
    name = sql.Identifier(table)
    with conn.transaction():
        # The write lock first, before reading: a batch that read under a
        # weaker lock and then asked for this one could form a cycle with a
        # rebuild's swap (which holds back writers, then renames the table)
        # and PostgreSQL would abort one of them. Taken first, a batch either
        # finishes before the swap or waits for it and then writes to the
        # new table.
        # One round trip: the lock, the rows and what sealing them needs (the
        # customers' keys) are sent together and answered together.
        with conn.pipeline():
            conn.execute(sql.SQL("LOCK TABLE {} IN ROW EXCLUSIVE MODE").format(name))
            reader = conn.cursor(row_factory=customer_row)
            set_json_loads(orjson.loads, reader)  # the sealed values: most of what the read costs
            reader.execute(sql.SQL(_SELECT).format(table=name), (list(by_customer),))
            prefetch(list(by_customer))
            current = {row.id: row for row in reader}
        new_rows = []
        for customer_id, by_version in by_customer.items():
            row = current.get(customer_id)
            at = row.version if row else 0
            pending = [by_version[v] for v in sorted(by_version) if v > at]
            result.duplicates += len(by_version) - len(pending)
            if not pending:
                continue
            if [p.version for p in pending] != list(range(at + 1, at + 1 + len(pending))):
                pending = list(load_after(customer_id, at))
                result.gaps_filled += 1
            try:
                new_row = fold(pending, row)
                # A customer whose stored key does not open cannot be sealed (ValueError)
                sealed_row = None if new_row is None else seal_row(new_row, row)
            except ValueError as error:
                new_row, reason = None, f"{type(error).__name__}: {error}"
            else:
                reason = "the event store has no such events"
            if new_row is None:
                # Not in the store (another environment's topic, a forged
                # record) or not a history a customer can have: retrying
                # would not help, so say so and leave the row alone.
                result.unprojectable += 1
                log("projection_unprojectable_customer", level="error", customer_id=str(customer_id),
                    versions=sorted(by_version), reason=reason)
                continue
            new_rows.append(sealed_row)
        if new_rows:
            # orjson writes dataclasses, UUIDs and aware datetimes as the JSON the upsert reads.
            conn.execute(sql.SQL(_UPSERT).format(table=name), (orjson.dumps(new_rows).decode(),))
        result.rows_written = len(new_rows)
    return result


_ERASED_ROW = """
INSERT INTO {table} (id, name, email, version, deleted, erased, created_at, updated_at)
VALUES (%s, NULL, NULL, %s, true, true, clock_timestamp(), clock_timestamp())
ON CONFLICT (id) DO UPDATE SET name = NULL, email = NULL, email_hash = NULL, deleted = true, erased = true,
    version = EXCLUDED.version, updated_at = EXCLUDED.updated_at, projected_at = clock_timestamp()
WHERE {table}.version < EXCLUDED.version
"""


def erase(conn: psycopg.Connection, customer_id: uuid.UUID, version: int) -> None:
    """The customer's row without its personal data, at the erasure's
    version: GET answers 404 at once, and events still on their way through
    Kafka (older versions) cannot write the name back."""
    conn.execute(sql.SQL(_ERASED_ROW).format(table=sql.Identifier(TABLE)), (customer_id, version))


def seal_row_in_clear(conn: psycopg.Connection, customer_id: uuid.UUID, seal_row: SealRow) -> None:
    """Seal a row written in clear (`python -m ops encrypt-events`), giving it its email's hash."""
    row = conn.cursor(row_factory=customer_row).execute(
        sql.SQL("SELECT " + COLUMNS + " FROM {} WHERE id = %s FOR UPDATE").format(sql.Identifier(TABLE)),
        (customer_id,)).fetchone()
    if row is None or not (isinstance(row.name, str) or isinstance(row.email, str)):
        return
    sealed = seal_row(row, None)
    conn.execute(sql.SQL("UPDATE {} SET name = %s, email = %s, email_hash = %s WHERE id = %s").format(
        sql.Identifier(TABLE)), (Jsonb(sealed.name), Jsonb(sealed.email), sealed.email_hash, customer_id))
