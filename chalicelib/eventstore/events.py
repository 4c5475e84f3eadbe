"""Domain events, their stored envelope, and the registry that maps the two."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from .errors import UnknownEventType


@dataclass(frozen=True)
class DomainEvent:
    """Base class of events: a frozen dataclass of JSON-able fields.

    `event_type` is the name stored with the event and published to Kafka;
    it must never change once events of that type exist.
    """

    event_type: ClassVar[str] = ""
    schema_version: ClassVar[int] = 1
    # The fields that hold personal data: stored only sealed with the
    # stream's key, readable until that key is erased (chalicelib.personal).
    personal_data: ClassVar[tuple[str, ...]] = ()

    def to_data(self) -> dict[str, Any]:
        # Shallow: fields are JSON values already, so asdict's deep copy
        # would only cost time on every write.
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> DomainEvent:
        return cls(**data)


# Set in an event's metadata when it is read back with personal data that
# could not be opened (its customer's key erased).
PERSONAL_DATA_ERASED = "personal_data_erased"


@dataclass(frozen=True)
class Metadata:
    """What is known about the cause of an event, stored beside its data."""

    event_id: str
    occurred_at: str
    correlation_id: str
    causation_id: str | None
    actor: dict[str, Any] | None = None  # who asked: {"subject": ..., "client_id": ...}

    @staticmethod
    def new(correlation_id: str, causation_id: str | None, actor: dict[str, Any] | None = None) -> Metadata:
        return Metadata(
            event_id=str(uuid.uuid4()),
            occurred_at=datetime.now(UTC).isoformat(timespec="microseconds"),
            correlation_id=correlation_id,
            causation_id=causation_id,
            actor=actor,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "occurred_at": self.occurred_at,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "actor": self.actor,
        }


@dataclass(frozen=True)
class CommandContext:
    """Who asked, and in the course of what: carried from the request into
    every event it causes."""

    correlation_id: str
    causation_id: str | None = None
    actor: dict[str, Any] | None = None


@dataclass(frozen=True)
class NewEvent:
    """An event ready to be appended: serialized, not yet positioned."""

    event_type: str
    schema_version: int
    data: dict[str, Any]
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Reservation:
    """A value unique within its scope among live aggregates, e.g. an email."""

    scope: str
    key: str


@dataclass(frozen=True)
class StreamKey:
    """A stream's data key as it is stored: wrapped by a key-encryption key
    (`kek_id`). The store keeps it with the stream's first events."""

    kek_id: int
    wrapped: bytes


@dataclass(frozen=True)
class Snapshot:
    """An aggregate's state at a version, in the shape `schema_version`."""

    version: int
    schema_version: int
    state: dict[str, Any]


@dataclass(frozen=True)
class RecordedEvent:
    """An event as the store holds it; its fields are the columns of the
    events table that every reader selects (RECORDED_EVENT_COLUMNS)."""

    global_position: int
    stream_id: uuid.UUID
    stream_type: str
    version: int
    event_type: str
    schema_version: int
    data: dict[str, Any]
    metadata: dict[str, Any]
    recorded_at: datetime


def recorded_event_columns(table: str = "events") -> str:
    """The select list of a RecordedEvent, from `table` (a name or alias)."""
    return ", ".join(f"{table}.{field.name}" for field in dataclasses.fields(RecordedEvent))


Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class EventRegistry:
    """Maps stored event type names to classes and back, upcasting old shapes.

    Events are immutable: when an event's shape changes, its class gets a new
    `schema_version` and an upcaster from the previous one is registered.
    Every reader goes through `decode`/`upcast`, so stored events of any age
    read as today's shape; nothing stored is ever rewritten.
    """

    def __init__(self) -> None:
        self._by_name: dict[str, type[DomainEvent]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, cls: type[DomainEvent]) -> type[DomainEvent]:
        name = cls.event_type or cls.__name__
        if self._by_name.get(name, cls) is not cls:
            raise ValueError(f"event type {name!r} is registered twice")
        cls.event_type = name
        self._by_name[name] = cls
        return cls

    def serialize(self, event: DomainEvent, metadata: Metadata) -> NewEvent:
        return NewEvent(
            event_type=event.event_type,
            schema_version=event.schema_version,
            data=event.to_data(),
            metadata=metadata.to_dict(),
        )

    def upcaster(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Register a function turning data of `from_version` into `from_version + 1`."""

        def register(function: Upcaster) -> Upcaster:
            self._upcasters[event_type, from_version] = function
            return function

        return register

    def upcast(self, event_type: str, schema_version: int, data: dict[str, Any]) -> dict[str, Any]:
        """The data in today's shape of the event type."""
        current = self.current_schema_version(event_type)
        if schema_version > current:
            raise UnknownEventType(f"{event_type} v{schema_version} is newer than this code (v{current})")
        while schema_version < current:
            try:
                data = self._upcasters[event_type, schema_version](dict(data))
            except KeyError:
                raise UnknownEventType(f"{event_type}: no upcaster from v{schema_version}") from None
            schema_version += 1
        return data

    def upcast_recorded(self, recorded: RecordedEvent) -> RecordedEvent:
        current = self.current_schema_version(recorded.event_type)
        if recorded.schema_version == current:
            return recorded
        data = self.upcast(recorded.event_type, recorded.schema_version, recorded.data)
        return dataclasses.replace(recorded, data=data, schema_version=current)

    def deserialize(self, recorded: RecordedEvent) -> DomainEvent:
        return self.decode(recorded.event_type, recorded.schema_version, recorded.data)

    def decode(self, event_type: str, schema_version: int, data: dict[str, Any]) -> DomainEvent:
        data = self.upcast(event_type, schema_version, data)
        return self._by_name[event_type].from_data(data)

    def with_personal_data(self) -> dict[str, tuple[str, ...]]:
        """Every event type that holds personal data, with its fields."""
        return {name: cls.personal_data for name, cls in self._by_name.items() if cls.personal_data}

    def event_classes(self) -> list[type[DomainEvent]]:
        """Every registered event class, in the order they were registered."""
        return list(self._by_name.values())

    def current_schema_version(self, event_type: str) -> int:
        try:
            return self._by_name[event_type].schema_version
        except KeyError:
            raise UnknownEventType(event_type) from None
