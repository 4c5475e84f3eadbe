"""Everything the event store raises, under one base class."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .events import Reservation


class EventStoreError(Exception):
    """Base of the event store's errors."""


class ConcurrencyError(EventStoreError):
    """The stream moved on since it was read: reload and decide again."""

    def __init__(self, stream_id: uuid.UUID, expected_version: int) -> None:
        super().__init__(f"stream {stream_id} is no longer at version {expected_version}")
        self.stream_id = stream_id
        self.expected_version = expected_version


class RetriesExhausted(EventStoreError):
    """A command lost the race for its stream more times than allowed."""


class ReservationTaken(EventStoreError):
    """A unique value (say, an email) belongs to another stream: nothing stored."""

    def __init__(self, reservation: Reservation) -> None:
        super().__init__(f"{reservation.scope} {reservation.key!r} is already taken")
        self.reservation = reservation


class UnknownEventType(EventStoreError, LookupError):
    """A stored event of a type or shape this code cannot read."""
