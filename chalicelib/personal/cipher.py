"""One personal value sealed with AES-256-GCM under its stream's data key,
with the stream id and the field's name as associated data, so that a
sealed value cannot be moved to another customer or field. A sealed value
reads `pd1:<base64 of nonce and ciphertext>`."""

from __future__ import annotations

import base64
import binascii
import functools
import os
import uuid
from typing import Any

PREFIX = "pd1:"
NONCE_BYTES = 12


def is_sealed(value: Any) -> bool:
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


def seal(key, stream_id: uuid.UUID, field: str, value: str) -> str:
    """`key`: a cipher from `cipher()`."""
    nonce = os.urandom(NONCE_BYTES)
    sealed = key.encrypt(nonce, value.encode(), _aad(stream_id, field))
    return PREFIX + base64.b64encode(nonce + sealed).decode()


def open_sealed(key, stream_id: uuid.UUID, field: str, value: str) -> str:
    raw = binascii.a2b_base64(value[len(PREFIX):])
    return key.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(stream_id, field)).decode()
