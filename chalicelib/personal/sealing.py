"""Personal data sealed on its way into the event store and opened on its
way out, field by field, as the domain declares it: the fields of each
event type (`DomainEvent.personal_data`), of the aggregate's state in
snapshots (`Aggregate.personal_state`), and the scopes of unique values
that are personal (`Aggregate.personal_reservations`, reserved by a keyed
hash). Fields whose key is erased open as None, and the event is marked
`personal_data_erased` in its metadata.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from chalicelib.eventstore.aggregate import Aggregate
from chalicelib.eventstore.errors import ReservationTaken
from chalicelib.eventstore.events import (
    PERSONAL_DATA_ERASED,
    EventRegistry,
    NewEvent,
    RecordedEvent,
    Reservation,
    Snapshot,
    StreamKey,
)
from chalicelib.eventstore.store import EventStore
from chalicelib.personal.cipher import Cipher, aad, is_sealed, open_sealed, seal
from chalicelib.personal.email_hash import EmailHash
from chalicelib.personal.keyring import KeyRing


@dataclass(frozen=True)
class Declared:
    """Which fields hold personal data, as the domain declares them."""

    events: dict[str, tuple[str, ...]]  # event type: its personal fields
    state: tuple[str, ...]  # the aggregate's personal state
    state_set_by: dict[str, tuple[str, ...]]  # event type: the personal state it sets
    reservations: tuple[str, ...]  # scopes of unique values that are personal

    @classmethod
    def of(cls, registry: EventRegistry, aggregate: type[Aggregate]) -> Declared:
        events = registry.with_personal_data()
        state = aggregate.personal_state
        return cls(events, state, {name: tuple(f for f in fields if f in state) for name, fields in events.items()},
                   aggregate.personal_reservations)

    @property
    def event_fields(self) -> tuple[str, ...]:
        """Every field name that is personal in some event type."""
        return tuple(sorted({field for fields in self.events.values() for field in fields}))


class StreamKeys:
    """The customers' data keys as one unit of work sees them: each looked
    up once (on the unit's connection, in its transaction), a new stream's
    made once, and one that was not stored forgotten."""

    def __init__(self, ring: KeyRing, conn: psycopg.Connection) -> None:
        self.ring = ring
        self._conn = conn
        self._found: dict[uuid.UUID, Cipher | None] = {}

    def key_for(self, stream_id: uuid.UUID) -> Cipher | None:
        if stream_id not in self._found:
            self._found[stream_id] = self.ring.key_for(stream_id, self._conn)
        return self._found[stream_id]

    def prefetch(self, stream_ids: Sequence[uuid.UUID]) -> None:
        """Look up the keys of these customers in one statement."""
        missing = [stream_id for stream_id in stream_ids if stream_id not in self._found]
        if missing:
            self._found.update(self.ring.keys_for(missing, self._conn))  # one that does not open: key_for says so

    def new_key(self, stream_id: uuid.UUID) -> tuple[Cipher, StreamKey]:
        key, wrapped = self.ring.new_key(stream_id)
        self._found[stream_id] = key
        return key, wrapped

    def forget(self, stream_id: uuid.UUID) -> None:
        """The stream's key, made here, was not stored with it: never use it."""
        self._found.pop(stream_id, None)
        self.ring.forget(stream_id)


class PersonalData:
    """Seals and opens the declared personal fields of events, snapshots,
    read-model rows and stored answers."""

    def __init__(self, keys: KeyRing, email_hash: EmailHash, declared: Declared) -> None:
        self.keys = keys
        self.email_hash = email_hash
        self.declared = declared

    def seal(self, key: Cipher, kind: str, stream_id: uuid.UUID, version: int | None, data: dict[str, Any],
             fields: Sequence[str]) -> dict[str, Any]:
        """`data` with its `fields` that hold text sealed (whatever the text)."""
        sealed = dict(data)
        for field in fields:
            value = sealed.get(field)
            if value.__class__ is str:
                sealed[field] = seal(key, aad(kind, stream_id, version, field), value)
        return sealed

    def open(self, key: Cipher | None, kind: str, stream_id: uuid.UUID, version: int | None, data: dict[str, Any],
             fields: Sequence[str]) -> tuple[dict[str, Any], bool]:
        """The data with its sealed fields readable; True when some could not
        be (`key` None: erased). Text stored in clear is left as it is."""
        opened = None
        erased = False
        for field in fields:
            value = data.get(field)
            if value is None or not is_sealed(value):
                continue
            if opened is None:
                opened = dict(data)
            if key is None:
                opened[field], erased = None, True
            else:
                opened[field] = open_sealed(key, aad(kind, stream_id, version, field), value)
        return (data, False) if opened is None else (opened, erased)

    def open_recorded(self, recorded: RecordedEvent, key: Cipher | None) -> RecordedEvent:
        """The event with its personal data readable, under its stream's key."""
        fields = self.declared.events.get(recorded.event_type)
        if not fields:
            return recorded
        data, erased = self.open(key, "event", recorded.stream_id, recorded.version, recorded.data, fields)
        if data is recorded.data:
            return recorded
        return _with(recorded, data, {**recorded.metadata, PERSONAL_DATA_ERASED: True} if erased
                     else recorded.metadata)

    def seal_answer(self, answer: dict[str, Any], key: Cipher | None) -> dict[str, Any]:
        """A command's answer (a customer's state: id, version, its personal
        state) as it may be stored: sealed, bound to that version."""
        if key is None:
            return answer
        return self.seal(key, "answer", uuid.UUID(answer["id"]), answer["version"], answer, self.declared.state)

    def open_answer(self, answer: dict[str, Any], key: Cipher | None) -> dict[str, Any]:
        opened, _ = self.open(key, "answer", uuid.UUID(answer["id"]), answer["version"], answer,
                              self.declared.state)
        return opened

    def hashed(self, reservation: Reservation) -> Reservation:
        if reservation.scope in self.declared.reservations and reservation.key is not None:
            return Reservation(reservation.scope, self.email_hash(reservation.key))
        return reservation


class SealedEventStore:
    """An event store whose stored personal data is sealed: the events and
    snapshots it appends are sealed with the stream's key (a new key with a
    new stream), those it loads opened; personal reservations are hashed.

    `for_state`: it loads aggregates to decide on. Their state keeps only
    the last value of each personal field (their apply assigns them), so
    only those are opened; earlier ones stay sealed and unread. A
    1,000-event customer costs two decryptions instead of two thousand."""

    def __init__(self, inner: EventStore, personal: PersonalData, keys: StreamKeys, *, for_state: bool) -> None:
        self._inner = inner
        self._personal = personal
        self._keys = keys
        self._for_state = for_state

    def append(self, stream_id: uuid.UUID, stream_type: str, expected_version: int, events: Sequence[NewEvent],
               snapshot: Snapshot | None = None, reserve: Sequence[Reservation] = (),
               release: Sequence[Reservation] = (), stream_key: StreamKey | None = None) -> list[int]:
        personal, declared = self._personal, self._personal.declared
        key: Cipher | None
        if expected_version == 0:
            key, stream_key = self._keys.new_key(stream_id)
        else:
            key = self._keys.key_for(stream_id)
        if key is not None:
            sealing = key
            # Each value bound to its own event: a sealed value copied to another version does not open.
            events = [dataclasses.replace(e, data=personal.seal(sealing, "event", stream_id, expected_version + n,
                                                                e.data, declared.events[e.event_type]))
                      if e.event_type in declared.events else e for n, e in enumerate(events, start=1)]
            if snapshot is not None:
                snapshot = dataclasses.replace(snapshot, state=personal.seal(
                    sealing, "snapshot", stream_id, snapshot.version, snapshot.state, declared.state))
        plain = {personal.hashed(r): r for r in reserve}
        try:
            return self._inner.append(stream_id, stream_type, expected_version, events, snapshot,
                                      list(plain), [personal.hashed(r) for r in release], stream_key=stream_key)
        except ReservationTaken as error:
            self._forget_unstored(stream_id, expected_version)
            raise ReservationTaken(plain.get(error.reservation, error.reservation)) from None
        except Exception:
            self._forget_unstored(stream_id, expected_version)
            raise

    def _forget_unstored(self, stream_id: uuid.UUID, expected_version: int) -> None:
        # A new stream's key was not stored with it: it must not be used for a stream of that id.
        if expected_version == 0:
            self._keys.forget(stream_id)

    def load_snapshot(self, stream_id: uuid.UUID) -> Snapshot | None:
        snapshot = self._inner.load_snapshot(stream_id)
        if snapshot is None:
            return None
        state, _ = self._personal.open(self._keys.key_for(stream_id), "snapshot", stream_id, snapshot.version,
                                       snapshot.state, self._personal.declared.state)
        return dataclasses.replace(snapshot, state=state)

    def load(self, stream_id: uuid.UUID, after_version: int = 0, limit: int | None = None) -> list[RecordedEvent]:
        recorded = self._inner.load(stream_id, after_version, limit)
        if not recorded:
            return recorded
        key = self._keys.key_for(stream_id)
        if not self._for_state:
            return [self._personal.open_recorded(r, key) for r in recorded]
        declared = self._personal.declared
        opened, pending = [], set(declared.state)
        for r in reversed(recorded):
            fields = [f for f in declared.state_set_by.get(r.event_type, ()) if f in pending]
            if fields:
                pending.difference_update(fields)
                data, _ = self._personal.open(key, "event", r.stream_id, r.version, r.data, fields)
                r = _with(r, data, r.metadata)
            opened.append(r)
        opened.reverse()
        return opened


def _with(recorded: RecordedEvent, data: dict[str, Any], metadata: dict[str, Any]) -> RecordedEvent:
    # Built directly: dataclasses.replace costs several times more, once per event.
    return RecordedEvent(recorded.global_position, recorded.stream_id, recorded.stream_type, recorded.version,
                         recorded.event_type, recorded.schema_version, data, metadata, recorded.recorded_at)
