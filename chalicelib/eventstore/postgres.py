"""The event store on PostgreSQL, on one connection: a unit of work's (its
transaction, when it has one), or any other the caller holds."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from .errors import ConcurrencyError, ReservationTaken
from .events import NewEvent, RecordedEvent, Reservation, Snapshot, StreamKey, recorded_event_columns
from .rows import dataclass_row

recorded_event_row = dataclass_row(RecordedEvent)
_snapshot_row = dataclass_row(Snapshot)

# One statement, so one round trip and one implicit transaction: the events
# and their outbox rows commit together or not at all.
#
# The unique key stops two writers at one version. The gap check stops a
# writer that expects a version the stream has not reached; it is left out
# when a stream is created (expected version 0), where the unique key on
# version 1 already refuses a second creation. A single event, the common
# case, is sent as plain parameters; several travel as one JSON array,
# numbered in the order given so versions and positions agree; both the
# gap check and the array have a measurable cost, so they are sent only when
# needed.
_GAP_CHECK = """
    WHERE %(expected_version)s = coalesce(
        (SELECT max(version) FROM events WHERE stream_id = %(stream_id)s), 0)"""

# The events' place in commit order (migration 017): this transaction's id,
# or the stream's previous event's when that is higher (this transaction may
# have written something, and so got its id, before that event committed).
_NEW_STREAM_TRANSACTION = "pg_current_xact_id()"
_NEXT_TRANSACTION = """(SELECT greatest(pg_current_xact_id(), p.transaction_id) FROM events p
            WHERE p.stream_id = %(stream_id)s AND p.version = %(expected_version)s)"""

_ONE_EVENT = """
    SELECT %(stream_id)s, %(stream_type)s, %(expected_version)s + 1,
           %(event_type)s, %(schema_version)s, %(data)s::jsonb, %(metadata)s::jsonb, {transaction}{gap_check}"""

_MANY_EVENTS = """
    SELECT %(stream_id)s, %(stream_type)s, %(expected_version)s + u.n,
           u.e->>'event_type', (u.e->>'schema_version')::int, u.e->'data', u.e->'metadata', {transaction}
    FROM jsonb_array_elements(%(events)s::jsonb) WITH ORDINALITY AS u(e, n){gap_check}
    ORDER BY u.n"""

_APPEND = """
WITH new_events AS (
    INSERT INTO events (stream_id, stream_type, version, event_type,
                        schema_version, data, metadata, transaction_id){rows}
    RETURNING global_position, stream_id
){snapshot}
INSERT INTO outbox (global_position, stream_id)
SELECT global_position, stream_id FROM new_events ORDER BY global_position
RETURNING global_position
"""

# Written only when the events were (a refused append leaves no snapshot).
_SNAPSHOT = """, new_snapshot AS (
    INSERT INTO snapshots (stream_id, stream_type, version, schema_version, state)
    SELECT %(stream_id)s, %(stream_type)s, %(snapshot_version)s, %(snapshot_schema_version)s,
           %(snapshot_state)s::jsonb
    WHERE EXISTS (SELECT 1 FROM new_events)
    ON CONFLICT (stream_id) DO UPDATE SET
        version = EXCLUDED.version, schema_version = EXCLUDED.schema_version,
        state = EXCLUDED.state, created_at = clock_timestamp()
    WHERE snapshots.version < EXCLUDED.version
)"""

# Unique values given up and taken by the stream, also only with the events.
# They travel as JSON, which psycopg passes through, rather than as text
# arrays, which it quotes element by element in Python.
_RELEASE = """, released AS (
    DELETE FROM reservations
    WHERE owner = %(stream_id)s
      AND (scope, key) IN (SELECT r.scope, r.key FROM jsonb_to_recordset(%(release)s::jsonb) AS r(scope text, key text))
      AND EXISTS (SELECT 1 FROM new_events)
)"""

_RESERVE = """, reserved AS (
    INSERT INTO reservations (scope, key, owner)
    SELECT r.scope, r.key, %(stream_id)s FROM jsonb_to_recordset(%(reserve)s::jsonb) AS r(scope text, key text)
    WHERE EXISTS (SELECT 1 FROM new_events)
)"""


# A new stream's wrapped data key (personal data), stored with its first events.
_STREAM_KEY = """, stream_key AS (
    INSERT INTO stream_keys (stream_id, kek_id, wrapped_key)
    SELECT %(stream_id)s, %(kek_id)s, %(wrapped_key)s
    WHERE EXISTS (SELECT 1 FROM new_events)
)"""


@functools.cache
def _append_sql(*, many: bool, check_gap: bool, snapshot: bool, release: bool, reserve: bool,
                stream_key: bool = False) -> str:
    """The append statement with just the parts this append needs."""
    rows = (_MANY_EVENTS if many else _ONE_EVENT).format(
        gap_check=_GAP_CHECK if check_gap else "",
        transaction=_NEXT_TRANSACTION if check_gap else _NEW_STREAM_TRANSACTION)
    extras = ((_SNAPSHOT if snapshot else "") + (_RELEASE if release else "") + (_RESERVE if reserve else "")
              + (_STREAM_KEY if stream_key else ""))
    return _APPEND.format(rows=rows, snapshot=extras)


_LOAD_SNAPSHOT = "SELECT version, schema_version, state FROM snapshots WHERE stream_id = %s"

_LOAD = f"""
SELECT {recorded_event_columns()}
FROM events WHERE stream_id = %s AND version > %s ORDER BY version LIMIT %s
"""


class PostgresEventStore:
    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn

    def append(self, stream_id: uuid.UUID, stream_type: str, expected_version: int, events: Sequence[NewEvent],
               snapshot: Snapshot | None = None, reserve: Sequence[Reservation] = (),
               release: Sequence[Reservation] = (), stream_key: StreamKey | None = None) -> list[int]:
        if not events:
            return []
        params: dict[str, Any] = {"stream_id": stream_id, "stream_type": stream_type,
                                  "expected_version": expected_version}
        many = len(events) > 1
        if many:
            params["events"] = json.dumps([
                {"event_type": e.event_type, "schema_version": e.schema_version, "data": e.data, "metadata": e.metadata}
                for e in events
            ])
        else:
            (event,) = events
            params.update(event_type=event.event_type, schema_version=event.schema_version,
                          data=json.dumps(event.data), metadata=json.dumps(event.metadata))
        if snapshot is not None:
            params.update(snapshot_version=snapshot.version, snapshot_schema_version=snapshot.schema_version,
                          snapshot_state=json.dumps(snapshot.state))
        if release:
            params["release"] = json.dumps([{"scope": r.scope, "key": r.key} for r in release])
        if reserve:
            params["reserve"] = json.dumps([{"scope": r.scope, "key": r.key} for r in reserve])
        if stream_key is not None:
            params.update(kek_id=stream_key.kek_id, wrapped_key=stream_key.wrapped)
        sql = _append_sql(many=many, check_gap=expected_version > 0, snapshot=snapshot is not None,
                          release=bool(release), reserve=bool(reserve), stream_key=stream_key is not None)
        conn = self._conn
        try:
            if conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
                # Inside a caller's transaction: a savepoint, so that a
                # lost race leaves that transaction usable for the retry.
                with conn.transaction():
                    rows = conn.execute(sql, params).fetchall()
            else:
                rows = conn.execute(sql, params).fetchall()
        except psycopg.errors.UniqueViolation as error:
            if error.diag.constraint_name == "events_stream_version_key":
                raise ConcurrencyError(stream_id, expected_version) from None
            if error.diag.constraint_name == "reservations_pkey":
                raise ReservationTaken(_taken(reserve, error)) from None
            raise
        if len(rows) != len(events):
            raise ConcurrencyError(stream_id, expected_version)
        return sorted(row[0] for row in rows)

    def load_snapshot(self, stream_id: uuid.UUID) -> Snapshot | None:
        return self._conn.cursor(row_factory=_snapshot_row).execute(_LOAD_SNAPSHOT, (stream_id,)).fetchone()

    def load(self, stream_id: uuid.UUID, after_version: int = 0, limit: int | None = None) -> list[RecordedEvent]:
        return self._conn.cursor(row_factory=recorded_event_row).execute(
            _LOAD, (stream_id, after_version, limit)).fetchall()


def _taken(reserve: Sequence[Reservation], error: psycopg.errors.UniqueViolation) -> Reservation:
    """Which reservation was refused, from PostgreSQL's "Key (scope, key)=(s, k)"."""
    if len(reserve) == 1:
        return reserve[0]
    detail = error.diag.message_detail or ""
    return next((r for r in reserve if f"({r.scope}, {r.key})" in detail), reserve[0])


# What a stream leaves beside its events, forgotten or rewritten with it:
# erasure, and `python -m ops encrypt-events`, which seals personal data
# stored in clear (the one sanctioned rewrite of stored events).

def delete_snapshots(conn: psycopg.Connection, stream_id: uuid.UUID) -> None:
    conn.execute("DELETE FROM snapshots WHERE stream_id = %s", (stream_id,))


def reservation_owner(conn: psycopg.Connection, reservation: Reservation) -> uuid.UUID | None:
    """The stream that holds this unique value now, if any."""
    row = conn.execute("SELECT owner FROM reservations WHERE scope = %s AND key = %s",
                       (reservation.scope, reservation.key)).fetchone()
    return row[0] if row is not None else None


def release_reservations(conn: psycopg.Connection, owner: uuid.UUID) -> None:
    conn.execute("DELETE FROM reservations WHERE owner = %s", (owner,))


def rekey_reservations(conn: psycopg.Connection, owner: uuid.UUID, scope: str,
                       rekey: Callable[[str], str | None]) -> None:
    """Replace the keys of the owner's reservations in `scope` for which
    `rekey` gives a new one (say, an address by its keyed hash)."""
    for (key,) in conn.execute("SELECT key FROM reservations WHERE owner = %s AND scope = %s",
                               (owner, scope)).fetchall():
        new = rekey(key)
        if new is not None and new != key:
            conn.execute("UPDATE reservations SET key = %s WHERE scope = %s AND key = %s", (new, scope, key))


def event_data_for_update(conn: psycopg.Connection, stream_id: uuid.UUID,
                          event_types: Sequence[str]) -> list[tuple[int, int, str, dict[str, Any]]]:
    """(global position, version, type, data) of the stream's events of
    these types, locked until the transaction ends."""
    rows = conn.execute("SELECT global_position, version, event_type, data FROM events WHERE stream_id = %s"
                        " AND event_type = ANY(%s) FOR UPDATE", (stream_id, list(event_types))).fetchall()
    return [(position, version, event_type, data) for position, version, event_type, data in rows]


def replace_event_data(conn: psycopg.Connection, global_position: int, data: dict[str, Any]) -> None:
    conn.execute("UPDATE events SET data = %s WHERE global_position = %s", (json.dumps(data), global_position))


# Events with one of these fields holding a JSON string (not a sealed object).
_WITH_TEXT = """FROM events WHERE EXISTS (
    SELECT 1 FROM unnest(%s::text[]) AS f(name) WHERE jsonb_typeof(data -> f.name) = 'string')"""


def streams_with_text_in(conn: psycopg.Connection, fields: Sequence[str], *, after: uuid.UUID | None = None,
                         limit: int | None = None) -> list[uuid.UUID]:
    """Streams with an event whose `fields` hold text, in id order, after `after`."""
    return [row[0] for row in conn.execute(
        "SELECT DISTINCT stream_id " + _WITH_TEXT + " AND stream_id > %s ORDER BY stream_id LIMIT %s",
        (list(fields), after or uuid.UUID(int=0), limit))]


def count_streams_with_text_in(conn: psycopg.Connection, fields: Sequence[str]) -> int:
    return one(conn.execute("SELECT count(DISTINCT stream_id) " + _WITH_TEXT, (list(fields),)))


def one(cursor: psycopg.Cursor[Any]) -> Any:
    """The first column of a statement's one row (an aggregate, a RETURNING)."""
    return one_row(cursor)[0]


def one_row(cursor: psycopg.Cursor[Any]) -> Any:
    """The one row of a statement that always returns one (aggregates)."""
    row = cursor.fetchone()
    if row is None:
        raise LookupError("the statement returned no row")
    return row
