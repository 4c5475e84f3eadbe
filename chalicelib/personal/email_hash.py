"""Emails compared by HMAC-SHA256 under a key kept in Secrets Manager
(EMAIL_HASH_SECRET_ARN), never by the address: the one-live-customer-per-
email rule and lookups by email. Changing the key orphans every reservation."""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Callable

PREFIX = "hmac-sha256:"


class EmailHash:
    def __init__(self, key: Callable[[], bytes]) -> None:
        self._key_source = key
        self._key: bytes | None = None
        self._lock = threading.Lock()

    def __call__(self, email: str) -> str:
        if self._key is None:
            with self._lock:
                if self._key is None:
                    self._key = self._key_source()
        return PREFIX + hmac.new(self._key, email.encode(), hashlib.sha256).hexdigest()


def is_hashed(value: str) -> bool:
    return value.startswith(PREFIX)


def email_hash_key(secret_value: dict) -> bytes:
    key = secret_value.get("hmacKey")
    if not isinstance(key, str) or len(key) < 32:
        raise ValueError("the email hash secret needs hmacKey, a random string of 32 characters or more")
    return key.encode()
