"""Aggregate base: state is rebuilt by applying events in order."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import ClassVar, TypeVar

from .events import DomainEvent, Reservation, Snapshot

A = TypeVar("A", bound="Aggregate")


class Aggregate:
    """Subclasses set `stream_type`, implement `apply`, and call `_record`
    from their command methods; they never touch storage."""

    stream_type: ClassVar[str]
    # The shape of snapshot_state(); raise it whenever that shape changes, and
    # older snapshots are ignored instead of misread.
    state_schema_version: ClassVar[int] = 1
    # The state's fields that hold personal data (sealed in snapshots, blank
    # once erased), and the scopes of unique values that are personal data
    # (reserved by a keyed hash, never by the value).
    personal_state: ClassVar[tuple[str, ...]] = ()
    personal_reservations: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.id: uuid.UUID | None = None
        self.version = 0
        self._pending: list[DomainEvent] = []
        self._reserve: list[Reservation] = []
        self._release: list[Reservation] = []

    def apply(self, event: DomainEvent) -> None:
        raise NotImplementedError

    def _record(self, event: DomainEvent) -> None:
        self.apply(event)
        self.version += 1
        self._pending.append(event)

    def _reserve_unique(self, scope: str, key: str) -> None:
        """Claim a value no other live aggregate may hold (saved with the events)."""
        self._reserve.append(Reservation(scope, key))

    def _release_unique(self, scope: str, key: str) -> None:
        self._release.append(Reservation(scope, key))

    @property
    def pending_events(self) -> list[DomainEvent]:
        return list(self._pending)

    @property
    def pending_reservations(self) -> tuple[list[Reservation], list[Reservation]]:
        """(to reserve, to release)"""
        return list(self._reserve), list(self._release)

    @property
    def loaded_version(self) -> int:
        """The version the store had when this aggregate was loaded."""
        return self.version - len(self._pending)

    def mark_saved(self) -> None:
        self._pending.clear()
        self._reserve.clear()
        self._release.clear()

    def snapshot_state(self) -> dict:
        """The state as JSON, for a snapshot; subclasses that take snapshots
        implement it and restore_state."""
        raise NotImplementedError

    def restore_state(self, state: dict) -> None:
        raise NotImplementedError

    @classmethod
    def rehydrate(cls: type[A], stream_id: uuid.UUID, events: Iterable[DomainEvent],
                  snapshot: Snapshot | None = None) -> A:
        aggregate = cls()
        aggregate.id = stream_id
        if snapshot is not None:
            aggregate.restore_state(snapshot.state)
            aggregate.version = snapshot.version
        for event in events:
            aggregate.apply(event)
            aggregate.version += 1
        return aggregate
