"""The whole store in commit order, for readers that go through all of it:
the catch-up feed (GET /events) and backfills.

Events are read in (transaction_id, global_position) order (migration 017)
and only below the safe horizon, `pg_snapshot_xmin(pg_current_snapshot())`:
every transaction below it has ended, and every event still to come sorts
at or above it. So a reader that goes on from the last position it read
never misses an event, however out of order transactions commit, and what
it read below the horizon never changes. A stream's events come in version
order.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg.types.json import set_json_loads

from .events import RecordedEvent, recorded_event_columns
from .postgres import one
from .rows import dataclass_row


class BadPosition(ValueError):
    """Not a position of the feed."""


@dataclass(frozen=True, order=True)
class Position:
    """A place in the store's commit order. Written `<transaction>.<global position>`."""

    transaction: int
    global_position: int

    def __str__(self) -> str:
        return f"{self.transaction}.{self.global_position}"

    @classmethod
    def parse(cls, text: str) -> Position:
        transaction, dot, position = text.partition(".")
        if not dot or not transaction.isascii() or not position.isascii() or not transaction.isdigit() \
                or not position.isdigit() or len(transaction) > 19 or len(position) > 19:
            raise BadPosition(f"{text[:40]!r} is not a position of the feed (two whole numbers, such as 0.0 or"
                              " 7301.125, as a page's next link gives)")
        return cls(int(transaction), int(position))


START = Position(0, 0)

_READ = """
SELECT e.transaction_id::text::bigint AS transaction, """ + recorded_event_columns("e") + """
FROM events e
WHERE (e.transaction_id, e.global_position) > (%(after_transaction)s::text::xid8, %(after_position)s)
  AND e.transaction_id < %(below)s::text::xid8{filters}
ORDER BY e.transaction_id, e.global_position
LIMIT %(limit)s
"""

_row = dataclass_row(RecordedEvent, leading=("transaction",))


def horizon(conn: psycopg.Connection) -> int:
    """The safe horizon now: events of transactions below it are all there is below it."""
    return int(one(conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")))


def next_transaction(conn: psycopg.Connection) -> int:
    """The id the next transaction to begin will get: every transaction
    running now or ended is below it (pg_snapshot_xmax)."""
    return int(one(conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")))


@dataclass(frozen=True)
class Selection:
    """Which events: all of them, or those of one stream, of some types,
    after a global position (the `position` of the messages on Kafka)."""

    stream_id: uuid.UUID | None = None
    event_types: tuple[str, ...] = ()
    after_global_position: int | None = None

    def where(self) -> tuple[str, dict[str, Any]]:
        """The conditions, to be ANDed, and their parameters."""
        conditions = ""
        params: dict[str, Any] = {}
        if self.stream_id is not None:
            conditions += " AND e.stream_id = %(stream_id)s"
            params["stream_id"] = self.stream_id
        if self.event_types:
            conditions += " AND e.event_type = ANY(%(event_types)s)"
            params["event_types"] = list(self.event_types)
        if self.after_global_position is not None:
            conditions += " AND e.global_position > %(after_global_position)s"
            params["after_global_position"] = self.after_global_position
        return conditions, params


EVERYTHING = Selection()


def read(conn: psycopg.Connection, after: Position, limit: int, *, below: int,
         selection: Selection = EVERYTHING) -> list[tuple[Position, RecordedEvent]]:
    """The next events after `after`, of transactions below `below` (at most
    the horizon), in commit order, each with its position; at most `limit`."""
    conditions, params = selection.where()
    params.update(after_transaction=str(after.transaction), after_position=after.global_position, below=str(below),
                  limit=limit)
    cursor = conn.cursor(row_factory=_row)
    set_json_loads(orjson.loads, cursor)  # the events' data and metadata: most of what reading them costs
    rows = cursor.execute(_READ.format(filters=conditions), params).fetchall()
    return [(Position(transaction, event.global_position), event) for transaction, event in rows]


def count(conn: psycopg.Connection, *, below: int, selection: Selection = EVERYTHING) -> int:
    """How many events `read` gives from the start, below `below`."""
    conditions, params = selection.where()
    return int(one(conn.execute("SELECT count(*) FROM events e WHERE e.transaction_id < %(below)s::text::xid8"
                                + conditions, {**params, "below": str(below)})))
