"""Messages the relay publishes are signed, so that the projection can tell
them from records anyone with produce rights on the topic wrote: an
HMAC-SHA256 of the message's value, in the Kafka header `signature`, under
a key kept in Secrets Manager (MESSAGE_SIGNING_SECRET_ARN, `hmacKey`).

The value names the customer, the version and the event, so a signed value
cannot be moved to another customer or version; a signed message written
again is a duplicate, which the projection ignores.

To rotate the key, put the new one in `hmacKey` and the old one in
`previousHmacKey`: the projection accepts either, and reads the secret again
(at most once a minute) when neither matches, so a relay that read the new
key before it did is not refused.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable

from chalicelib.infra.credentials import Secret

HEADER = "signature"
SCHEME = b"hmac-sha256="
REREAD_AFTER_SECONDS = 60.0
MIN_KEY_CHARACTERS = 32


def hmac_sha256(key: bytes, value: bytes) -> bytes:
    # Not hmac.digest: it releases the GIL on every call, however short the
    # message, and the producer's I/O thread then keeps it for up to a
    # switch interval (5 ms): 36 us a message instead of 2 in the relay.
    # An HMAC object releases it only for values of 2 KiB and more.
    return hmac.new(key, value, hashlib.sha256).digest()


class MessageSigning:
    def __init__(self, secret: Secret, clock: Callable[[], float] = time.monotonic) -> None:
        self._secret = secret
        self._clock = clock
        self._keys: tuple[int, list[bytes]] | None = None  # (the secret's reading, its keys)
        self._read_at = clock()
        self._lock = threading.Lock()

    def _current(self) -> list[bytes]:
        value = self._secret.value()
        if self._keys is None or self._keys[0] != self._secret.reads:
            keys = [value.get("hmacKey"), value.get("previousHmacKey")]
            if not isinstance(keys[0], str) or len(keys[0]) < MIN_KEY_CHARACTERS:
                raise ValueError(f"the message signing secret needs hmacKey, a random string of"
                                 f" {MIN_KEY_CHARACTERS} characters or more")
            self._keys = (self._secret.reads, [k.encode() for k in keys if isinstance(k, str) and k])
        return self._keys[1]

    def sign(self, value: bytes) -> bytes:
        """The `signature` header's value for a message of this value."""
        return SCHEME + hmac_sha256(self._current()[0], value).hex().encode()

    def refusal(self, value: bytes | None, signature: bytes | None) -> str | None:
        """Why a record must not be trusted, or None when the relay signed it."""
        if signature is None:
            return f"not signed: no '{HEADER}' header, so not published by the relay"
        if not signature.startswith(SCHEME):
            return f"its '{HEADER}' header is not {SCHEME.decode()}<hex>"
        if self._matches(value or b"", signature):
            return None
        with self._lock:
            reading = self._secret.reads
            if self._clock() - self._read_at >= REREAD_AFTER_SECONDS:
                self._read_at = self._clock()
                self._secret.refresh(reading)
        if self._secret.reads != reading and self._matches(value or b"", signature):
            return None
        return "its signature does not match its value: not published by the relay"

    def _matches(self, value: bytes, signature: bytes) -> bool:
        try:
            given = bytes.fromhex(signature[len(SCHEME):].decode("ascii"))
        except ValueError:
            return False
        return any(hmac.compare_digest(hmac_sha256(key, value), given) for key in self._current())
