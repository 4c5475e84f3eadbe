"""Personal data stored only encrypted, so that it can be erased
(crypto-shredding), and emails compared only by a keyed hash.

- Each customer has a data key of its own: 32 random bytes, made here,
  stored only wrapped (AES-256-GCM) by a key-encryption key in `stream_keys`.
- Key-encryption keys come from KMS (GenerateDataKey under KMS_KEY_ID) and
  are stored only as KMS wrapped them (`key_encryption_keys`). A container
  makes one on its first creation and unwraps others with one KMS Decrypt
  each; plaintext keys are cached (bounded, with expiry), so that in the
  common case a command makes no KMS call.
- Personal fields (a customer's name, emails) are encrypted with AES-256-GCM
  under the customer's data key, with the customer id and the field's name
  as associated data: a value cannot be moved to another customer or field.
  In storage they read `pd1:<base64 of nonce and ciphertext>`.
- Erasing deletes the customer's wrapped key: every copy of its personal
  data, in events, snapshots and backups, can no longer be read. Fields
  that cannot be read come back as None, and the event is marked
  `personal_data_erased` in its metadata.
- Emails are compared (uniqueness) by HMAC-SHA256 under a key kept in
  Secrets Manager (EMAIL_HASH_SECRET_ARN), never by the address.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib
import hmac
import json
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from chalicelib.domain.customer import EMAIL_SCOPE
from chalicelib.eventstore.errors import ReservationTaken
from chalicelib.eventstore.events import PERSONAL_DATA_ERASED, NewEvent, RecordedEvent, Reservation
from chalicelib.eventstore.store import EventStore

PREFIX = "pd1:"
# Which fields of which events hold personal data.
PERSONAL_FIELDS: dict[str, tuple[str, ...]] = {
    "CustomerCreated": ("name", "email"),
    "CustomerEmailChanged": ("email", "previous_email"),
}
SNAPSHOT_FIELDS = ("name", "email")
# The personal fields a Customer's state is made of, and the events that set them.
STATE_FIELDS = ("name", "email")
STATE_FIELDS_OF: dict[str, tuple[str, ...]] = {"CustomerCreated": ("name", "email"), "CustomerEmailChanged": ("email",)}
ERASED = PERSONAL_DATA_ERASED
_UNKNOWN = object()

_NONCE_BYTES = 12
KEY_CACHE_SIZE = 10_000
KEY_CACHE_SECONDS = 300.0


def is_encrypted(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


@functools.lru_cache(maxsize=4096)
def _aad(stream_id: uuid.UUID, field: str) -> bytes:
    # Cached: a load opens the same stream's fields hundreds of times.
    return f"{stream_id}:{field}".encode()


_AESGCM = None


def cipher(key: bytes):
    """AES-256-GCM with this key; made once per key (its key schedule is not free)."""
    global _AESGCM
    if _AESGCM is None:
        # Imported on first use: cryptography costs cold start.
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        _AESGCM = AESGCM
    return _AESGCM(key)


def encrypt(key, stream_id: uuid.UUID, field: str, value: str) -> str:
    """`key`: a cipher from `cipher()`."""
    nonce = os.urandom(_NONCE_BYTES)
    sealed = key.encrypt(nonce, value.encode(), _aad(stream_id, field))
    return PREFIX + base64.b64encode(nonce + sealed).decode()


def decrypt(key, stream_id: uuid.UUID, field: str, value: str) -> str:
    raw = binascii.a2b_base64(value[4:])  # after PREFIX
    return key.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _aad(stream_id, field)).decode()


@dataclasses.dataclass(frozen=True)
class WrappedKey:
    kek_id: int
    wrapped: bytes


# Gives a connection as a context manager: a pool's `connection`, or one
# already in a transaction (TransactionConnection.connection).
Connect = Callable[[], Any]


class KeyRing:
    """Customers' data keys: made, wrapped, found and forgotten. Key lookups
    run on the caller's connection (its transaction, its pool slot); the
    rare key-encryption key is stored on a connection of its own, committed
    at once, so that no rolled-back transaction takes it along."""

    def __init__(self, open_connection: Callable[[], psycopg.Connection], kms: Callable[[], Any], kms_key_id: str,
                 cache_size: int = KEY_CACHE_SIZE, cache_seconds: float = KEY_CACHE_SECONDS) -> None:
        self._open_connection = open_connection
        self._kms = kms
        self.kms_key_id = kms_key_id
        self._cache_size = cache_size
        self._cache_seconds = cache_seconds
        self._keys: OrderedDict[uuid.UUID, tuple[Any, float]] = OrderedDict()  # ciphers, with expiry
        self._keks: dict[int, bytes] = {}
        self._current_kek: tuple[int, bytes] | None = None
        self._lock = threading.Lock()
        self._kek_lock = threading.Lock()
        self.kms_calls = 0

    def new_key(self, stream_id: uuid.UUID):
        """A new customer's data key (as a cipher), and its wrapped form to store."""
        kek_id, kek = self._kek_for_new_keys()
        key = os.urandom(32)
        nonce = os.urandom(_NONCE_BYTES)
        wrapped = nonce + cipher(kek).encrypt(nonce, key, str(stream_id).encode())
        return self._remember(stream_id, key), WrappedKey(kek_id, wrapped)

    @staticmethod
    def store(conn: psycopg.Connection, stream_id: uuid.UUID, wrapped: WrappedKey) -> None:
        """Store a stream's wrapped key, unless it has one (its first events store it otherwise)."""
        conn.execute("INSERT INTO stream_keys (stream_id, kek_id, wrapped_key) VALUES (%s, %s, %s)"
                     " ON CONFLICT (stream_id) DO NOTHING", (stream_id, wrapped.kek_id, wrapped.wrapped))

    def key_for(self, stream_id: uuid.UUID, connect: Connect):
        """The customer's data key, as a cipher; None when it has none
        (erased, or never had one)."""
        with self._lock:
            cached = self._keys.get(stream_id)
            if cached is not None and cached[1] > time.monotonic():
                self._keys.move_to_end(stream_id)
                return cached[0]
        with connect() as conn:
            row = conn.execute("SELECT kek_id, wrapped_key FROM stream_keys WHERE stream_id = %s",
                               (stream_id,)).fetchone()
        if row is None:
            return None
        kek_id, wrapped = row[0], bytes(row[1])
        key = cipher(self._kek(kek_id)).decrypt(wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:],
                                                str(stream_id).encode())
        return self._remember(stream_id, key)

    def forget(self, stream_id: uuid.UUID) -> None:
        with self._lock:
            self._keys.pop(stream_id, None)

    def _remember(self, stream_id: uuid.UUID, key: bytes):
        made = cipher(key)
        with self._lock:
            self._keys[stream_id] = (made, time.monotonic() + self._cache_seconds)
            self._keys.move_to_end(stream_id)
            while len(self._keys) > self._cache_size:
                self._keys.popitem(last=False)
        return made

    def _kek_for_new_keys(self) -> tuple[int, bytes]:
        if self._current_kek is None:
            with self._kek_lock:
                if self._current_kek is None:
                    self.kms_calls += 1
                    made = self._kms().generate_data_key(KeyId=self.kms_key_id, KeySpec="AES_256")
                    with self._open_connection() as conn:
                        (kek_id,) = conn.execute(
                            "INSERT INTO key_encryption_keys (kms_key_id, wrapped) VALUES (%s, %s) RETURNING id",
                            (made["KeyId"], made["CiphertextBlob"])).fetchone()
                    self._keks[kek_id] = made["Plaintext"]
                    self._current_kek = (kek_id, made["Plaintext"])
        return self._current_kek

    def _kek(self, kek_id: int) -> bytes:
        kek = self._keks.get(kek_id)
        if kek is None:
            with self._kek_lock:
                kek = self._keks.get(kek_id)
                if kek is None:
                    with self._open_connection() as conn:
                        (wrapped,) = conn.execute("SELECT wrapped FROM key_encryption_keys WHERE id = %s",
                                                  (kek_id,)).fetchone()
                    self.kms_calls += 1
                    kek = self._kms().decrypt(CiphertextBlob=bytes(wrapped), KeyId=self.kms_key_id)["Plaintext"]
                    self._keks[kek_id] = kek
        return kek


class EmailHash:
    """HMAC-SHA256 of an email, under a key from Secrets Manager."""

    def __init__(self, key: Callable[[], bytes]) -> None:
        self._key_source = key
        self._key: bytes | None = None

    def __call__(self, email: str) -> str:
        if self._key is None:
            self._key = self._key_source()
        return "hmac-sha256:" + hmac.new(self._key, email.encode(), hashlib.sha256).hexdigest()


def email_hash_key(secret_value: dict) -> bytes:
    key = secret_value.get("hmacKey")
    if not isinstance(key, str) or len(key) < 32:
        raise ValueError("the email hash secret needs hmacKey, a random string of 32 characters or more")
    return key.encode()


class PersonalData:
    """Encrypts and decrypts the personal fields of events and snapshots."""

    def __init__(self, keys: KeyRing, email_hash: EmailHash) -> None:
        self.keys = keys
        self.email_hash = email_hash

    def seal(self, key, stream_id: uuid.UUID, data: dict, fields: Sequence[str]) -> dict:
        sealed = dict(data)
        for field in fields:
            value = sealed.get(field)
            if isinstance(value, str) and not is_encrypted(value):
                sealed[field] = encrypt(key, stream_id, field, value)
        return sealed

    def open(self, stream_id: uuid.UUID, data: dict, fields: Sequence[str], connect: Connect,
             key: Any = _UNKNOWN) -> tuple[dict, bool]:
        """The data with its fields readable; True when some could not be
        (erased). `key`: the stream's key when the caller has it already."""
        opened = None
        erased = False
        for field in fields:
            value = data.get(field)
            if value.__class__ is not str or not value.startswith(PREFIX):
                continue
            if opened is None:
                opened = dict(data)
                if key is _UNKNOWN:
                    key = self.keys.key_for(stream_id, connect)
            if key is None:
                opened[field], erased = None, True
            else:
                opened[field] = decrypt(key, stream_id, field, value)
        return (data, False) if opened is None else (opened, erased)

    def open_recorded(self, recorded: RecordedEvent, connect: Connect, key: Any = _UNKNOWN) -> RecordedEvent:
        fields = PERSONAL_FIELDS.get(recorded.event_type)
        if not fields:
            return recorded
        data, erased = self.open(recorded.stream_id, recorded.data, fields, connect, key)
        if data is recorded.data:
            return recorded
        return _with(recorded, data, {**recorded.metadata, ERASED: True} if erased else recorded.metadata)

    def hashed(self, reservation: Reservation) -> Reservation:
        if reservation.scope == EMAIL_SCOPE and reservation.key is not None:
            return Reservation(reservation.scope, self.email_hash(reservation.key))
        return reservation


class EncryptedEventStore:
    """An event store whose stored personal data is encrypted: the events and
    snapshots it appends are sealed with the stream's key (a new key with a
    new stream), those it loads opened; email reservations are hashed."""

    def __init__(self, inner: EventStore, personal: PersonalData, connect: Connect, *,
                 for_state: bool = False) -> None:
        self._inner = inner
        self._personal = personal
        self._connect = connect
        # Loading an aggregate to decide on: its state keeps only the last
        # value of each personal field (a Customer's apply assigns them), so
        # only those are decrypted; earlier ones stay sealed and unread. A
        # 1,000-event customer costs two decryptions instead of two thousand.
        self._for_state = for_state

    def append(self, stream_id, stream_type, expected_version, events: Sequence[NewEvent], snapshot=None,
               reserve=(), release=(), stream_key=None):
        personal = self._personal
        if expected_version == 0:
            key, stream_key = personal.keys.new_key(stream_id)
        else:
            key = personal.keys.key_for(stream_id, self._connect)
        if key is not None:
            events = [dataclasses.replace(e, data=personal.seal(key, stream_id, e.data, PERSONAL_FIELDS[e.event_type]))
                      if e.event_type in PERSONAL_FIELDS else e for e in events]
            if snapshot is not None:
                snapshot = dataclasses.replace(snapshot, state=personal.seal(key, stream_id, snapshot.state,
                                                                             SNAPSHOT_FIELDS))
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
        state, _ = self._personal.open(stream_id, snapshot.state, SNAPSHOT_FIELDS, self._connect)
        return dataclasses.replace(snapshot, state=state)

    def load(self, stream_id, after_version=0, limit=None):
        recorded = self._inner.load(stream_id, after_version, limit)
        if not recorded:
            return recorded
        # One stream, one key: looked up once for the whole load.
        key = self._personal.keys.key_for(stream_id, self._connect)
        if not self._for_state:
            return [self._personal.open_recorded(r, self._connect, key) for r in recorded]
        opened, pending = [], set(STATE_FIELDS)
        for r in reversed(recorded):
            fields = [f for f in STATE_FIELDS_OF.get(r.event_type, ()) if f in pending]
            if fields:
                pending.difference_update(fields)
                data, _ = self._personal.open(r.stream_id, r.data, fields, self._connect, key)
                r = _with(r, data, r.metadata)
            opened.append(r)
        opened.reverse()
        return opened


def _with(recorded: RecordedEvent, data: dict, metadata: dict) -> RecordedEvent:
    # Built directly: dataclasses.replace costs several times more, once per event.
    return RecordedEvent(recorded.global_position, recorded.stream_id, recorded.stream_type, recorded.version,
                         recorded.event_type, recorded.schema_version, data, metadata, recorded.recorded_at)


def new_hmac_key_secret() -> str:
    """The value of a new email hash secret."""
    return json.dumps({"hmacKey": base64.b64encode(os.urandom(32)).decode()})


def delete_key(conn: psycopg.Connection, stream_id: uuid.UUID) -> bool:
    return conn.execute("DELETE FROM stream_keys WHERE stream_id = %s", (stream_id,)).rowcount > 0
