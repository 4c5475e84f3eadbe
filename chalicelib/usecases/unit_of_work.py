"""The unit of work: what one command (or one read, or one projection
batch) works with.

- One connection, held from its start to its end (a Lambda container has
  one; the local server's pool hands each request its own).
- Its transaction. A command without an Idempotency-Key needs none of its
  own: what it writes is one statement (events, outbox rows, reservations,
  a new customer's key), atomic by itself, and the state it decided on is
  guarded by the expected version. With a key, the key's row, the events and
  the answer commit together (chalicelib.idempotency); erasure too.
- The event store on that connection, personal data sealed on the way in
  and opened on the way out (chalicelib.personal.sealing).
- Each customer's key, looked up once for the whole unit.
- The Idempotency-Key row.

Use cases take a `UnitsOfWork` and begin one per job; the composition root
makes it once per container.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any, Protocol

import psycopg

from chalicelib import idempotency
from chalicelib.domain.customer import Customer, registry
from chalicelib.eventstore.events import RecordedEvent
from chalicelib.eventstore.postgres import PostgresEventStore
from chalicelib.eventstore.store import EventStore, Repository
from chalicelib.infra.db import Connections
from chalicelib.infra.settings import ConfigurationError
from chalicelib.personal.sealing import PersonalData, SealedEventStore, StreamKeys
from chalicelib.readmodel import sealed
from chalicelib.readmodel.rows import CustomerRow


class UnitOfWork(Protocol):
    """What a command needs of its unit of work."""

    @property
    def customers(self) -> Repository[Customer]: ...

    def answered(self, key: str, fingerprint: str) -> dict[str, Any] | None:
        """The answer kept under this Idempotency-Key, or None: the key is
        now this unit's (in its transaction). KeyReused for another request."""
        ...

    def keep_answer(self, key: str, answer: dict[str, Any]) -> None: ...


class UnitsOfWork(Protocol):
    def begin(self, *, transaction: bool = False) -> contextlib.AbstractContextManager[UnitOfWork]:
        """A command's unit of work; `transaction`: all it does commits together, or nothing."""
        ...


class PostgresUnitOfWork:
    def __init__(self, conn: psycopg.Connection, personal: PersonalData | None, *, for_state: bool,
                 snapshot_every: int | None, idempotency_ttl_seconds: float) -> None:
        self.conn = conn
        self.personal = personal
        self.keys = StreamKeys(personal.keys, conn) if personal is not None else None
        store: EventStore = PostgresEventStore(conn)
        if personal is not None and self.keys is not None:
            store = SealedEventStore(store, personal, self.keys, for_state=for_state)
        self.events = store
        self._customers = Repository(store, registry, Customer, snapshot_every=snapshot_every)
        self._idempotency_ttl_seconds = idempotency_ttl_seconds
        self.seal_row: sealed.SealRow = sealed.plain
        self.open_row: sealed.OpenRow = sealed.plain
        self.prefetch_keys: sealed.Prefetch = sealed.no_prefetch
        if personal is not None and self.keys is not None:
            self.seal_row = sealed.sealer(personal, self.keys)
            self.open_row = sealed.opener(personal, self.keys)
            self.prefetch_keys = self.keys.prefetch

    @property
    def customers(self) -> Repository[Customer]:
        return self._customers

    def sealing(self) -> tuple[PersonalData, StreamKeys]:
        """What seals this unit's personal data; ConfigurationError without encryption."""
        if self.personal is None or self.keys is None:
            raise ConfigurationError("KMS_KEY_ID is not set: personal data is stored in clear, so it cannot be"
                                     " erased or sealed; `make run` and the template set it")
        return self.personal, self.keys

    def open_rows(self, rows: list[CustomerRow]) -> list[CustomerRow]:
        """Read-model rows with their personal data readable, their keys looked up together."""
        if self.keys is not None:
            self.keys.prefetch([row.id for row in rows])
        return [self.open_row(row) for row in rows]

    def open_event(self, recorded: RecordedEvent) -> RecordedEvent:
        """A stored event with its personal data readable."""
        if self.personal is None or self.keys is None:
            return recorded
        return self.personal.open_recorded(recorded, self.keys.key_for(recorded.stream_id))

    def answered(self, key: str, fingerprint: str) -> dict[str, Any] | None:
        stored = idempotency.claim(self.conn, key, fingerprint, self._idempotency_ttl_seconds)
        if stored is None or self.personal is None or self.keys is None:
            return stored
        return self.personal.open_answer(stored, self.keys.key_for(uuid.UUID(stored["id"])))

    def keep_answer(self, key: str, answer: dict[str, Any]) -> None:
        stored = answer
        if self.personal is not None and self.keys is not None:
            # The answer holds the customer's personal data: kept sealed.
            stored = self.personal.seal_answer(answer, self.keys.key_for(uuid.UUID(answer["id"])))
        idempotency.keep(self.conn, key, stored, answer.get("id"))


class PostgresUnitsOfWork:
    """Units of work on the container's connections."""

    def __init__(self, connections: Connections, personal: PersonalData | None, *, snapshot_every: int | None,
                 idempotency_ttl_seconds: float) -> None:
        self.connections = connections
        self.personal = personal
        self._snapshot_every = snapshot_every
        self._idempotency_ttl_seconds = idempotency_ttl_seconds

    @contextlib.contextmanager
    def begin(self, *, transaction: bool = False, for_state: bool = True) -> Iterator[PostgresUnitOfWork]:
        """`for_state`: it loads customers to decide on (chalicelib.personal.sealing)."""
        with self.connections.connection() as conn:
            unit = PostgresUnitOfWork(conn, self.personal, for_state=for_state,
                                      snapshot_every=self._snapshot_every,
                                      idempotency_ttl_seconds=self._idempotency_ttl_seconds)
            if not transaction:
                yield unit
                return
            with conn.transaction():
                yield unit

    def reading(self) -> contextlib.AbstractContextManager[PostgresUnitOfWork]:
        """A unit for reading: every event opened whole, no transaction."""
        return self.begin(for_state=False)

