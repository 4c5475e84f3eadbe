"""Each stream's data key: 32 random bytes made here, stored only wrapped
(AES-256-GCM) by a key-encryption key in `stream_keys`; deleting it erases
every copy of the stream's personal data, backups included.

Key-encryption keys come from KMS (GenerateDataKey under KMS_KEY_ID, with
the ENCRYPTION_CONTEXT the key policy requires) and are stored only as KMS
wrapped them (`key_encryption_keys`). A container makes one on its first
creation and unwraps others with one KMS Decrypt each. Keys in clear are
kept in memory for KEY_CACHE_SECONDS at most, key-encryption keys and data
keys alike: in the common case a command makes no KMS call, and a key whose
use KMS stops allowing (disabled, or a role's grant withdrawn) stops
serving within that time.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from chalicelib.eventstore.errors import Unavailable
from chalicelib.eventstore.events import StreamKey
from chalicelib.eventstore.postgres import one
from chalicelib.personal.cipher import NONCE_BYTES, Cipher, cipher

KEY_CACHE_SIZE = 10_000
KEY_CACHE_SECONDS = 300.0
# Every KMS call for a key-encryption key names it; the key policy allows
# no call without it, so KMS_KEY_ID serves this service's keys and nothing
# else.
ENCRYPTION_CONTEXT = {"service": "customer-service", "purpose": "personal-data-keys"}


class KeyServiceUnavailable(Unavailable):
    """KMS could not be asked for a key-encryption key: tried again later."""


class KeyNeedsRewrap(LookupError):
    """A key-encryption key stored without the encryption context, which
    every KMS call of the service names: `python -m ops rewrap-keys`."""


class KeyDoesNotOpen(ValueError):
    """A customer's stored data key that its key-encryption key does not
    open: damaged, or copied from another customer's row (the wrap is bound
    to its stream). Its events cannot be read; no retry changes that."""

    def __init__(self, stream_id: uuid.UUID) -> None:
        super().__init__(f"the stored data key of customer {stream_id} does not open"
                         " (damaged, or another customer's)")
        self.stream_id = stream_id


class KeyRing:
    """Customers' data keys: made, wrapped, found and forgotten. Key lookups
    run on the caller's connection (its transaction); the rare
    key-encryption key is stored on a connection of its own, committed at
    once, so that no rolled-back transaction takes it along."""

    def __init__(self, open_connection: Callable[[], psycopg.Connection], kms: Callable[[], Any], kms_key_id: str,
                 cache_size: int = KEY_CACHE_SIZE, cache_seconds: float = KEY_CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._open_connection = open_connection
        self._kms = kms
        self.kms_key_id = kms_key_id
        self._cache_size = cache_size
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._keys: OrderedDict[uuid.UUID, tuple[Cipher, float]] = OrderedDict()  # with expiry
        self._keks: dict[int, tuple[bytes, float]] = {}  # with expiry
        self._current_kek: int | None = None  # the one new data keys are wrapped by
        self._lock = threading.Lock()
        self._kek_lock = threading.Lock()
        self.kms_calls = 0

    def new_key(self, stream_id: uuid.UUID) -> tuple[Cipher, StreamKey]:
        """A new customer's data key, and its wrapped form to store."""
        kek_id, kek = self._kek_for_new_keys()
        key = os.urandom(32)
        nonce = os.urandom(NONCE_BYTES)
        wrapped = nonce + cipher(kek).encrypt(nonce, key, str(stream_id).encode())
        return self._remember(stream_id, key), StreamKey(kek_id, wrapped)

    @staticmethod
    def store(conn: psycopg.Connection, stream_id: uuid.UUID, wrapped: StreamKey) -> None:
        """Store a stream's wrapped key, unless it has one (its first events store it otherwise)."""
        conn.execute("INSERT INTO stream_keys (stream_id, kek_id, wrapped_key) VALUES (%s, %s, %s)"
                     " ON CONFLICT (stream_id) DO NOTHING", (stream_id, wrapped.kek_id, wrapped.wrapped))

    def key_for(self, stream_id: uuid.UUID, conn: psycopg.Connection) -> Cipher | None:
        """The customer's data key, looked up on `conn` unless in memory;
        None when it has none (erased, or never had one); KeyDoesNotOpen
        when the stored one does not open."""
        cached = self._cached(stream_id, self._clock())
        if cached is not None:  # the common case, once per event the relay publishes
            return cached
        found = self.keys_for([stream_id], conn)
        if stream_id not in found:
            raise KeyDoesNotOpen(stream_id)
        return found[stream_id]

    def keys_for(self, stream_ids: Sequence[uuid.UUID], conn: psycopg.Connection) -> dict[uuid.UUID, Cipher | None]:
        """What can be told of these customers' keys, those not in memory
        looked up on `conn` in one statement: the key, or None when there is
        none. A stored key that does not open is left out: a batch looks up
        its customers' keys together, and one damaged row must not stop the
        others; key_for raises for it when its own event is read."""
        found: dict[uuid.UUID, Cipher | None] = {}
        now = self._clock()
        for stream_id in stream_ids:
            cached = self._cached(stream_id, now)
            if cached is not None:
                found[stream_id] = cached
        missing = [stream_id for stream_id in stream_ids if stream_id not in found]
        if not missing:
            return found
        from cryptography.exceptions import InvalidTag  # imported on first use, as the cipher is

        rows = conn.execute("SELECT stream_id, kek_id, wrapped_key FROM stream_keys WHERE stream_id = ANY(%s)",
                            (missing,)).fetchall()
        found.update(dict.fromkeys(missing))
        for stream_id, kek_id, wrapped_key in rows:
            wrapped = bytes(wrapped_key)
            try:
                key = cipher(self._kek(kek_id)).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:],
                                                        str(stream_id).encode())
            except InvalidTag:
                del found[stream_id]
                continue
            found[stream_id] = self._remember(stream_id, key)
        return found

    def _cached(self, stream_id: uuid.UUID, now: float) -> Cipher | None:
        with self._lock:
            cached = self._keys.get(stream_id)
            if cached is None or cached[1] <= now:
                return None
            self._keys.move_to_end(stream_id)
            return cached[0]

    def forget(self, stream_id: uuid.UUID) -> None:
        with self._lock:
            self._keys.pop(stream_id, None)

    def _remember(self, stream_id: uuid.UUID, key: bytes) -> Cipher:
        made = cipher(key)
        with self._lock:
            self._keys[stream_id] = (made, self._clock() + self._cache_seconds)
            self._keys.move_to_end(stream_id)
            while len(self._keys) > self._cache_size:
                self._keys.popitem(last=False)
        return made

    def _kek_for_new_keys(self) -> tuple[int, bytes]:
        if self._current_kek is None:
            with self._kek_lock:
                if self._current_kek is None:
                    self.kms_calls += 1
                    made = self._ask_kms(lambda kms: kms.generate_data_key(
                        KeyId=self.kms_key_id, KeySpec="AES_256", EncryptionContext=ENCRYPTION_CONTEXT))
                    with self._open_connection() as conn:
                        kek_id = one(conn.execute(
                            "INSERT INTO key_encryption_keys (kms_key_id, wrapped, encryption_context)"
                            " VALUES (%s, %s, %s) RETURNING id",
                            (made["KeyId"], made["CiphertextBlob"], Jsonb(ENCRYPTION_CONTEXT))))
                    self._keks[kek_id] = (made["Plaintext"], self._clock() + self._cache_seconds)
                    self._current_kek = kek_id
        # Once its time in memory is up, the same key is unwrapped again.
        return self._current_kek, self._kek(self._current_kek)

    def _kek(self, kek_id: int) -> bytes:
        cached = self._keks.get(kek_id)
        if cached is None or cached[1] <= self._clock():
            with self._kek_lock:
                cached = self._keks.get(kek_id)
                if cached is None or cached[1] <= self._clock():
                    with self._open_connection() as conn:
                        row = conn.execute("SELECT wrapped, encryption_context FROM key_encryption_keys"
                                           " WHERE id = %s", (kek_id,)).fetchone()
                    if row is None:
                        raise KeyError(f"key-encryption key {kek_id} is not in key_encryption_keys")
                    wrapped, context = row
                    if context != ENCRYPTION_CONTEXT:
                        raise KeyNeedsRewrap(f"key-encryption key {kek_id} was wrapped without this service's"
                                             " encryption context, which the key policy requires: run"
                                             " `python -m ops rewrap-keys`")
                    self.kms_calls += 1
                    kek = self._ask_kms(lambda kms: kms.decrypt(
                        CiphertextBlob=bytes(wrapped), KeyId=self.kms_key_id,
                        EncryptionContext=ENCRYPTION_CONTEXT))["Plaintext"]
                    cached = self._keks[kek_id] = (kek, self._clock() + self._cache_seconds)
        return cached[0]

    def _ask_kms(self, call: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call(self._kms())
        except (BotoCoreError, ClientError) as error:
            raise KeyServiceUnavailable(f"KMS key {self.kms_key_id}: {error}") from error


def rewrap_keys_without_context(conn: psycopg.Connection, kms: Any) -> list[int]:
    """`python -m ops rewrap-keys`: give every key-encryption key wrapped
    without the encryption context (made before the key policy required one)
    the context, by KMS ReEncrypt (the key never leaves KMS in clear); the
    ids of those rewrapped. Idempotent: a key that has one is left alone.
    Runs with an operator's credentials, which the key policy lets re-encrypt."""
    done = []
    rows = conn.execute("SELECT id, kms_key_id, wrapped FROM key_encryption_keys"
                        " WHERE encryption_context IS NULL ORDER BY id").fetchall()
    for kek_id, kms_key_id, wrapped in rows:
        answer = kms.re_encrypt(CiphertextBlob=bytes(wrapped), DestinationKeyId=kms_key_id,
                                DestinationEncryptionContext=ENCRYPTION_CONTEXT)
        with conn.transaction():
            conn.execute("UPDATE key_encryption_keys SET wrapped = %s, encryption_context = %s"
                         " WHERE id = %s AND encryption_context IS NULL",
                         (answer["CiphertextBlob"], Jsonb(ENCRYPTION_CONTEXT), kek_id))
        done.append(kek_id)
    return done


def delete_key(conn: psycopg.Connection, stream_id: uuid.UUID) -> bool:
    return conn.execute("DELETE FROM stream_keys WHERE stream_id = %s", (stream_id,)).rowcount > 0
