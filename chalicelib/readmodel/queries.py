"""Reading customers: from the read model, or built from the event store
when the caller needs more than the read model has (read-your-writes, strong
consistency, the time machine)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from chalicelib.eventstore.postgres import one_row
from chalicelib.readmodel.rows import COLUMNS, TABLE, CustomerRow, customer_row

if TYPE_CHECKING:
    from chalicelib.eventstore.store import EventStore

_GET = sql.SQL("SELECT " + COLUMNS + " FROM {} WHERE id = %s").format(sql.Identifier(TABLE))
# Only where personal data is not encrypted: otherwise the keyed hash.
_BY_EMAIL = sql.SQL("SELECT " + COLUMNS + " FROM {} WHERE email #>> '{{}}' = %s AND NOT deleted"
                    " AND jsonb_typeof(email) = 'string' ORDER BY created_at").format(sql.Identifier(TABLE))
_BY_EMAIL_HASH = sql.SQL("SELECT " + COLUMNS + " FROM {} WHERE email_hash = %s AND NOT deleted"
                         " ORDER BY created_at").format(sql.Identifier(TABLE))


def from_read_model(conn: psycopg.Connection, customer_id: uuid.UUID) -> CustomerRow | None:
    return conn.cursor(row_factory=customer_row).execute(_GET, (customer_id,)).fetchone()


def find_by_email(conn: psycopg.Connection, email: str, email_hash: str | None = None) -> list[CustomerRow]:
    """By the keyed hash of the email when personal data is encrypted, else by the email."""
    if email_hash is not None:
        return conn.cursor(row_factory=customer_row).execute(_BY_EMAIL_HASH, (email_hash,)).fetchall()
    return conn.cursor(row_factory=customer_row).execute(_BY_EMAIL, (email,)).fetchall()


def from_event_store(store: EventStore, customer_id: uuid.UUID) -> CustomerRow | None:
    """The row as the projection would make it from every event so far."""
    from chalicelib.readmodel.projection import ProjectedEvent, fold  # not needed by a read of the read model

    return fold(ProjectedEvent.from_recorded(r) for r in store.load(customer_id))


def state_at(store: EventStore, customer_id: uuid.UUID, *, version: int | None = None,
             as_of: datetime | None = None) -> CustomerRow | None:
    """The customer as it was at a version, or at a moment (by the time the
    store recorded each event); None when it did not exist yet. `erased`
    when its personal data is erased now, as the store says of the events it
    could not open: the past state is shown without it."""
    from chalicelib.eventstore.events import PERSONAL_DATA_ERASED
    from chalicelib.readmodel.projection import ProjectedEvent, fold

    events, erased = [], False
    for recorded in store.load(customer_id):
        if version is not None and recorded.version > version:
            break
        if as_of is not None and recorded.recorded_at > as_of:
            break
        events.append(ProjectedEvent.from_recorded(recorded))
        erased = erased or bool(recorded.metadata.get(PERSONAL_DATA_ERASED))
    row = fold(events)
    return dataclasses.replace(row, erased=True) if row is not None and erased else row


# Events are looked at from the newest back, at most this many: the check
# stays cheap however long the history, and a read model further behind
# than that is reported as at least that far behind.
LAG_WINDOW_EVENTS = 10_000

# For a quick health check: the newest events only.
QUICK_LAG_WINDOW_EVENTS = 100


def lag_sql(window: int) -> sql.Composed:
    """(events among the newest `window` the read model has not applied,
    seconds since the oldest of them was recorded). An event an operator
    skipped was never published: not lag."""
    from chalicelib.eventstore.outbox import SKIPPED_EVENTS

    return sql.SQL("""
SELECT count(*), extract(epoch FROM clock_timestamp() - min(r.recorded_at))
FROM (SELECT global_position, stream_id, version, recorded_at FROM events
      ORDER BY global_position DESC LIMIT {window}) r
LEFT JOIN {table} v ON v.id = r.stream_id
WHERE r.version > coalesce(v.version, 0) AND r.global_position NOT IN ({skipped})""").format(
        window=sql.Literal(window), table=sql.Identifier(TABLE), skipped=sql.SQL(SKIPPED_EVENTS))


def projection_lag(conn: psycopg.Connection, window: int = LAG_WINDOW_EVENTS) -> tuple[int, float | None]:
    """(events the read model has not applied yet, seconds since the oldest
    of them was recorded): how far the read model is behind the store."""
    behind, age = one_row(conn.execute(lag_sql(window)))
    return behind, float(age) if age is not None else None
