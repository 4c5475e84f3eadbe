"""The event store on PostgreSQL for tests that call it from many threads
or across many calls: each call on a connection of its own from a pool."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from chalicelib.eventstore.events import NewEvent, RecordedEvent, Reservation, Snapshot, StreamKey
from chalicelib.eventstore.postgres import PostgresEventStore
from chalicelib.eventstore.store import InMemoryEventStore
from chalicelib.infra.db import Connections


class PooledStore:
    def __init__(self, connections: Connections) -> None:
        self._connections = connections

    def append(self, stream_id: uuid.UUID, stream_type: str, expected_version: int, events: Sequence[NewEvent],
               snapshot: Snapshot | None = None, reserve: Sequence[Reservation] = (),
               release: Sequence[Reservation] = (), stream_key: StreamKey | None = None) -> list[int]:
        with self._connections.connection() as conn:
            return PostgresEventStore(conn).append(stream_id, stream_type, expected_version, events, snapshot,
                                                   reserve, release, stream_key)

    def load_snapshot(self, stream_id: uuid.UUID) -> Snapshot | None:
        with self._connections.connection() as conn:
            return PostgresEventStore(conn).load_snapshot(stream_id)

    def load(self, stream_id: uuid.UUID, after_version: int = 0, limit: int | None = None) -> list[RecordedEvent]:
        with self._connections.connection() as conn:
            return PostgresEventStore(conn).load(stream_id, after_version, limit)


# The stores every contract test runs against, by name, from a pytest request.
stores = {
    "memory": lambda request: InMemoryEventStore(),
    "postgres": lambda request: PooledStore(request.getfixturevalue("pool")),
}
