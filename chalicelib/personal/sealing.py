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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from chalicelib.eventstore.aggregate import Aggregate
from chalicelib.eventstore.errors import ReservationTaken
from chalicelib.eventstore.events import PERSONAL_DATA_ERASED, EventRegistry, NewEvent, RecordedEvent, Reservation
from chalicelib.eventstore.store import EventStore
from chalicelib.personal.cipher import LEGACY_PREFIX, aad, is_sealed, open_legacy, open_sealed, seal
from chalicelib.personal.email_hash import EmailHash
from chalicelib.personal.keyring import KeyRing

_UNKNOWN = object()

# Gives a connection as a context manager: a pool's `connection`, or one
# already in a transaction (TransactionConnection.connection).
Connect = Callable[[], Any]


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


class PersonalData:
    """Seals and opens the declared personal fields of events, snapshots,
    read-model rows and stored answers."""

    def __init__(self, keys: KeyRing, email_hash: EmailHash, declared: Declared) -> None:
        self.keys = keys
        self.email_hash = email_hash
        self.declared = declared

    def seal(self, key, kind: str, stream_id: uuid.UUID, version: int | None, data: dict,
             fields: Sequence[str]) -> dict:
        """`data` with its `fields` that hold text sealed (whatever the text)."""
        sealed = dict(data)
        for field in fields:
            value = sealed.get(field)
            if value.__class__ is str:
                sealed[field] = seal(key, aad(kind, stream_id, version, field), value)
        return sealed

    def open(self, kind: str, stream_id: uuid.UUID, version: int | None, data: dict, fields: Sequence[str],
             connect: Connect, key: Any = _UNKNOWN) -> tuple[dict, bool]:
        """The data with its fields readable; True when some could not be
        (erased). `key`: the stream's key when the caller has it already."""
        opened = None
        erased = False
        for field in fields:
            value = data.get(field)
            sealed = is_sealed(value)
            if not sealed and not (value.__class__ is str and value.startswith(LEGACY_PREFIX)):
                continue
            if opened is None:
                opened = dict(data)
                if key is _UNKNOWN:
                    key = self.keys.key_for(stream_id, connect)
            if key is None:
                opened[field], erased = None, True
            elif sealed:
                opened[field] = open_sealed(key, aad(kind, stream_id, version, field), value)
            else:  # sealed by the first release, or a caller's text that only looks so
                legacy = open_legacy(key, stream_id, field, value)
                opened[field] = value if legacy is None else legacy
        return (data, False) if opened is None else (opened, erased)

    def open_recorded(self, recorded: RecordedEvent, connect: Connect, key: Any = _UNKNOWN) -> RecordedEvent:
        fields = self.declared.events.get(recorded.event_type)
        if not fields:
            return recorded
        data, erased = self.open("event", recorded.stream_id, recorded.version, recorded.data, fields, connect, key)
        if data is recorded.data:
            return recorded
        return _with(recorded, data, {**recorded.metadata, PERSONAL_DATA_ERASED: True} if erased
                     else recorded.metadata)

    def seal_answer(self, answer: dict, connect: Connect) -> dict:
        """A command's answer (a customer's state: id, version, its personal
        state) as it may be stored: sealed, bound to that version."""
        stream_id = uuid.UUID(answer["id"])
        key = self.keys.key_for(stream_id, connect)
        if key is None:
            return answer
        return self.seal(key, "answer", stream_id, answer["version"], answer, self.declared.state)

    def open_answer(self, answer: dict, connect: Connect) -> dict:
        opened, _ = self.open("answer", uuid.UUID(answer["id"]), answer["version"], answer, self.declared.state,
                              connect)
        return opened

    def hashed(self, reservation: Reservation) -> Reservation:
        if reservation.scope in self.declared.reservations and reservation.key is not None:
            return Reservation(reservation.scope, self.email_hash(reservation.key))
        return reservation


class SealedEventStore:
    """An event store whose stored personal data is sealed: the events and
    snapshots it appends are sealed with the stream's key (a new key with a
    new stream), those it loads opened; personal reservations are hashed."""

    def __init__(self, inner: EventStore, personal: PersonalData, connect: Connect, *,
                 for_state: bool = False) -> None:
        self._inner = inner
        self._personal = personal
        self._connect = connect
        # Loading an aggregate to decide on: its state keeps only the last
        # value of each personal field (its apply assigns them), so only
        # those are opened; earlier ones stay sealed and unread. A 1,000-event
        # customer costs two decryptions instead of two thousand.
        self._for_state = for_state

    def append(self, stream_id, stream_type, expected_version, events: Sequence[NewEvent], snapshot=None,
               reserve=(), release=(), stream_key=None):
        personal, declared = self._personal, self._personal.declared
        if expected_version == 0:
            key, stream_key = personal.keys.new_key(stream_id)
        else:
            key = personal.keys.key_for(stream_id, self._connect)
        if key is not None:
            # Each value bound to its own event: a sealed value copied to another version does not open.
            events = [dataclasses.replace(e, data=personal.seal(key, "event", stream_id, expected_version + n, e.data,
                                                                declared.events[e.event_type]))
                      if e.event_type in declared.events else e for n, e in enumerate(events, start=1)]
            if snapshot is not None:
                snapshot = dataclasses.replace(snapshot, state=personal.seal(
                    key, "snapshot", stream_id, snapshot.version, snapshot.state, declared.state))
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
            self._personal.keys.forget(stream_id)

    def load_snapshot(self, stream_id):
        snapshot = self._inner.load_snapshot(stream_id)
        if snapshot is None:
            return None
        state, _ = self._personal.open("snapshot", stream_id, snapshot.version, snapshot.state,
                                       self._personal.declared.state, self._connect)
        return dataclasses.replace(snapshot, state=state)

    def load(self, stream_id, after_version=0, limit=None):
        recorded = self._inner.load(stream_id, after_version, limit)
        if not recorded:
            return recorded
        # One stream, one key: looked up once for the whole load.
        key = self._personal.keys.key_for(stream_id, self._connect)
        if not self._for_state:
            return [self._personal.open_recorded(r, self._connect, key) for r in recorded]
        declared = self._personal.declared
        opened, pending = [], set(declared.state)
        for r in reversed(recorded):
            fields = [f for f in declared.state_set_by.get(r.event_type, ()) if f in pending]
            if fields:
                pending.difference_update(fields)
                data, _ = self._personal.open("event", r.stream_id, r.version, r.data, fields, self._connect, key)
                r = _with(r, data, r.metadata)
            opened.append(r)
        opened.reverse()
        return opened


def _with(recorded: RecordedEvent, data: dict, metadata: dict) -> RecordedEvent:
    # Built directly: dataclasses.replace costs several times more, once per event.
    return RecordedEvent(recorded.global_position, recorded.stream_id, recorded.stream_type, recorded.version,
                         recorded.event_type, recorded.schema_version, data, metadata, recorded.recorded_at)
