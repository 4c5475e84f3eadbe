"""Fakes of the service's ports, for tests that need no database or broker."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from chalicelib.domain.customer import Customer, registry
from chalicelib.eventstore.events import NewEvent, RecordedEvent, Reservation, Snapshot, StreamKey
from chalicelib.eventstore.relay import Acknowledgement
from chalicelib.eventstore.store import EventStore, InMemoryEventStore, Repository
from chalicelib.idempotency import KeyReused
from chalicelib.usecases.commands import CustomerCommands


class RacingStore(InMemoryEventStore):
    """Another writer appends to the stream just before each of our appends."""

    def __init__(self, races: int) -> None:
        super().__init__()
        self.races = races

    def append(self, stream_id, stream_type, expected_version, events: Sequence[NewEvent],
               snapshot: Snapshot | None = None, reserve: Sequence[Reservation] = (),
               release: Sequence[Reservation] = (), stream_key: StreamKey | None = None) -> list[int]:
        if self.races > 0:
            self.races -= 1
            theirs = [e.__class__(e.event_type, e.schema_version, {**e.data, "email": f"rival{self.races}@example.com"},
                                  e.metadata) for e in events]
            super().append(stream_id, stream_type, expected_version, theirs)
        return super().append(stream_id, stream_type, expected_version, events, snapshot, reserve, release,
                              stream_key)


def commands_on(store: EventStore, max_retries: int = 5, snapshot_every: int | None = None) -> CustomerCommands:
    """The command handlers on a store of the test's."""
    return CustomerCommands(Repository(store, registry, Customer, snapshot_every=snapshot_every), max_retries)


class FakeUnitOfWork:
    def __init__(self, store: EventStore, answers: dict[str, tuple[str, dict[str, Any]]]) -> None:
        self._customers = Repository(store, registry, Customer)
        self._answers = answers
        self._claimed: dict[str, str] = {}

    @property
    def customers(self) -> Repository[Customer]:
        return self._customers

    def answered(self, key: str, fingerprint: str) -> dict[str, Any] | None:
        if key in self._answers:
            stored_fingerprint, answer = self._answers[key]
            if stored_fingerprint != fingerprint:
                raise KeyReused(f"Idempotency-Key {key!r} was already used for a different request")
            return answer
        self._claimed[key] = fingerprint
        return None

    def keep_answer(self, key: str, answer: dict[str, Any]) -> None:
        self._answers[key] = (self._claimed[key], answer)


class FakeUnitsOfWork:
    """Units of work on an in-memory store (commands only)."""

    def __init__(self, store: EventStore | None = None) -> None:
        self.store = store if store is not None else InMemoryEventStore()
        self.answers: dict[str, tuple[str, dict[str, Any]]] = {}
        self.begun = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def begin(self, *, transaction: bool = False) -> Iterator[FakeUnitOfWork]:
        with self._lock:
            self.begun += 1
        yield FakeUnitOfWork(self.store, self.answers)


class RecordingSender:
    """A relay's sender that keeps what it was sent, in `events`, and the
    order of sends and waits, in `calls` ("send 1", "wait 1", ...)."""

    def __init__(self, on_send: Callable[[Sequence[RecordedEvent]], None] | None = None) -> None:
        self.events: list[RecordedEvent] = []
        self.calls: list[str] = []
        self._on_send = on_send
        self._lock = threading.Lock()

    def send(self, events: Sequence[RecordedEvent]) -> Acknowledgement:
        if self._on_send is not None:
            self._on_send(events)
        with self._lock:
            self.events.extend(events)
            batch = sum(1 for call in self.calls if call.startswith("send")) + 1
            self.calls.append(f"send {batch}")

        def wait() -> None:
            with self._lock:
                self.calls.append(f"wait {batch}")

        return wait

    def clear(self) -> None:
        with self._lock:
            self.events.clear()
            self.calls.clear()
