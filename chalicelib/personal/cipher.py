"""One personal value sealed with AES-256-GCM under its stream's data key.

A sealed value is stored as a JSON object, `{"sealed": "<base64 of nonce
and ciphertext>"}`, where the plain value would be a string: whether a value
is sealed follows from how it is stored, never from its text, so no name or
email a caller types can be taken for sealed. The associated data names
what the value belongs to (the kind of record, the stream, the event's
version, the field): a sealed value copied to another customer, event or
field does not open.
"""

from __future__ import annotations

import base64
import binascii
import os
import uuid
from typing import Any, Protocol

NONCE_BYTES = 12


class Cipher(Protocol):
    """AES-256-GCM under one key (cryptography's AESGCM)."""

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...


def is_sealed(value: Any) -> bool:
    # Asked of every personal field the relay and the projection read: no set built for it.
    return value.__class__ is dict and len(value) == 1 and "sealed" in value


def aad(kind: str, stream_id: uuid.UUID, version: int | None, field: str) -> bytes:
    """What a value is bound to: `kind` of record (event, snapshot,
    read-model, answer), its stream, its version (None: any) and field."""
    return f"{kind}/{stream_id}/{'' if version is None else version}/{field}".encode()


_AESGCM: Any = None


def cipher(key: bytes) -> Cipher:
    """AES-256-GCM with this key; made once per key (its key schedule is not free)."""
    global _AESGCM
    if _AESGCM is None:
        # Imported on first use: cryptography costs cold start.
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        _AESGCM = AESGCM
    made: Cipher = _AESGCM(key)
    return made


def seal(key: Cipher, associated: bytes, value: str) -> dict[str, str]:
    nonce = os.urandom(NONCE_BYTES)
    return {"sealed": base64.b64encode(nonce + key.encrypt(nonce, value.encode(), associated)).decode()}


def open_sealed(key: Cipher, associated: bytes, sealed: dict[str, str]) -> str:
    raw = binascii.a2b_base64(sealed["sealed"])
    return key.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], associated).decode()
