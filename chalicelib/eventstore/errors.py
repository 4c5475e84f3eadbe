"""Everything the event store raises, under one base class."""

from __future__ import annotations

import uuid
from typing import Any


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

    def __init__(self, reservation: Any) -> None:  # a Reservation
        super().__init__(f"{reservation.scope} {reservation.key!r} is already taken")
        self.reservation = reservation


class UnknownEventType(EventStoreError, LookupError):
    """A stored event of a type or shape this code cannot read."""


class Unavailable(EventStoreError):
    """Something the work needs (the broker, the database, the key service)
    cannot be reached just now: the same work is tried again later."""


class PublishError(Unavailable):
    """The broker did not acknowledge every event of a batch: tried again."""


class RowParked(EventStoreError):
    """A row of the claimed batch was parked; claim again."""


class UnpublishableEvent(EventStoreError):
    """This event cannot become a message, however often it is tried."""

    def __init__(self, event: Any, reason: str) -> None:  # a RecordedEvent
        super().__init__(reason)
        self.event = event


class UnreadableEvent(EventStoreError):
    """A stored event this code cannot make a message of (its shape is
    newer than the code, say): no retry helps."""

    def __init__(self, event: Any, reason: str) -> None:  # a RecordedEvent
        super().__init__(f"{event.stream_id} v{event.version} {event.event_type}: {reason}")
        self.event = event
