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

import dataclasses
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from chalicelib.personal.cipher import NONCE_BYTES, cipher

KEY_CACHE_SIZE = 10_000
KEY_CACHE_SECONDS = 300.0
# Every KMS call for a key-encryption key names it; the key policy allows
# no call without it, so KMS_KEY_ID serves this service's keys and nothing
# else. (Key-encryption keys made before it was required have none in
# their row: `python -m ops rewrap-keys` gives them one.)
ENCRYPTION_CONTEXT = {"service": "customer-service", "purpose": "personal-data-keys"}


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
                 cache_size: int = KEY_CACHE_SIZE, cache_seconds: float = KEY_CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._open_connection = open_connection
        self._kms = kms
        self.kms_key_id = kms_key_id
        self._cache_size = cache_size
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._keys: OrderedDict[uuid.UUID, tuple[Any, float]] = OrderedDict()  # ciphers, with expiry
        self._keks: dict[int, tuple[bytes, float]] = {}  # with expiry
        self._current_kek: int | None = None  # the one new data keys are wrapped by
        self._lock = threading.Lock()
        self._kek_lock = threading.Lock()
        self.kms_calls = 0

    def new_key(self, stream_id: uuid.UUID):
        """A new customer's data key (as a cipher), and its wrapped form to store."""
        kek_id, kek = self._kek_for_new_keys()
        key = os.urandom(32)
        nonce = os.urandom(NONCE_BYTES)
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
            if cached is not None and cached[1] > self._clock():
                self._keys.move_to_end(stream_id)
                return cached[0]
        with connect() as conn:
            row = conn.execute("SELECT kek_id, wrapped_key FROM stream_keys WHERE stream_id = %s",
                               (stream_id,)).fetchone()
        if row is None:
            return None
        kek_id, wrapped = row[0], bytes(row[1])
        key = cipher(self._kek(kek_id)).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:],
                                                str(stream_id).encode())
        return self._remember(stream_id, key)

    def forget(self, stream_id: uuid.UUID) -> None:
        with self._lock:
            self._keys.pop(stream_id, None)

    def _remember(self, stream_id: uuid.UUID, key: bytes):
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
                    made = self._kms().generate_data_key(KeyId=self.kms_key_id, KeySpec="AES_256",
                                                         EncryptionContext=ENCRYPTION_CONTEXT)
                    with self._open_connection() as conn:
                        (kek_id,) = conn.execute(
                            "INSERT INTO key_encryption_keys (kms_key_id, wrapped, encryption_context)"
                            " VALUES (%s, %s, %s) RETURNING id",
                            (made["KeyId"], made["CiphertextBlob"], Jsonb(ENCRYPTION_CONTEXT))).fetchone()
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
                        wrapped, context = conn.execute(
                            "SELECT wrapped, encryption_context FROM key_encryption_keys WHERE id = %s",
                            (kek_id,)).fetchone()
                    self.kms_calls += 1
                    kek = self._kms().decrypt(CiphertextBlob=bytes(wrapped), KeyId=self.kms_key_id,
                                              **({"EncryptionContext": context} if context else {}))["Plaintext"]
                    cached = self._keks[kek_id] = (kek, self._clock() + self._cache_seconds)
        return cached[0]


def rewrap_keys_without_context(conn: psycopg.Connection, kms: Any) -> list[int]:
    """Give every key-encryption key made before the encryption context was
    required one, by KMS ReEncrypt (the key never leaves KMS in clear); the
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
