"""The event store on PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

import psycopg
from psycopg_pool import ConnectionPool

from .events import NewEvent, RecordedEvent
from .store import ConcurrencyError

# One statement, so one round trip and one implicit transaction: the events
# and their outbox rows commit together or not at all. Rows are numbered in
# the order given (WITH ORDINALITY) so versions and positions agree.
# One statement, so one round trip and one implicit transaction: the events
# and their outbox rows commit together or not at all. The events travel as
# one JSON array (cheaper to send than four typed arrays) and are numbered in
# the order given, so versions and positions agree.
_APPEND = """
WITH new_events AS (
    INSERT INTO events (stream_id, stream_type, version, event_type,
                        schema_version, data, metadata)
    SELECT %(stream_id)s, %(stream_type)s, %(expected_version)s + u.n,
           u.e->>'event_type', (u.e->>'schema_version')::int, u.e->'data', u.e->'metadata'
    FROM jsonb_array_elements(%(events)s::jsonb) WITH ORDINALITY AS u(e, n)
    -- The unique key stops two writers at one version; this stops a writer
    -- that expects a version the stream has not reached (a gap).
    WHERE %(expected_version)s = coalesce(
        (SELECT max(version) FROM events WHERE stream_id = %(stream_id)s), 0)
    ORDER BY u.n
    RETURNING global_position, stream_id
)
INSERT INTO outbox (global_position, stream_id)
SELECT global_position, stream_id FROM new_events ORDER BY global_position
RETURNING global_position
"""

_LOAD = """
SELECT global_position, stream_id, stream_type, version, event_type,
       schema_version, data, metadata, recorded_at
FROM events WHERE stream_id = %s ORDER BY version
"""


class PostgresEventStore:
    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def append(
        self,
        stream_id: uuid.UUID,
        stream_type: str,
        expected_version: int,
        events: Sequence[NewEvent],
    ) -> list[int]:
        params = {
            "stream_id": stream_id,
            "stream_type": stream_type,
            "expected_version": expected_version,
            "events": json.dumps([
                {"event_type": e.event_type, "schema_version": e.schema_version,
                 "data": e.data, "metadata": e.metadata}
                for e in events
            ]),
        }
        with self._pool.connection() as conn:
            try:
                rows = conn.execute(_APPEND, params).fetchall()
            except psycopg.errors.UniqueViolation as error:
                if error.diag.constraint_name == "events_stream_version_key":
                    raise ConcurrencyError(stream_id, expected_version) from None
                raise
        if len(rows) != len(events):
            raise ConcurrencyError(stream_id, expected_version)
        return sorted(row[0] for row in rows)

    def load(self, stream_id: uuid.UUID) -> list[RecordedEvent]:
        with self._pool.connection() as conn:
            rows = conn.execute(_LOAD, (stream_id,)).fetchall()
        return [RecordedEvent(*row) for row in rows]
