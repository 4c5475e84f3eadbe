"""The keys personal data is sealed under, as operators look after them."""

from __future__ import annotations

from typing import Any

from chalicelib.infra.db import Database
from chalicelib.infra.logs import log
from chalicelib.personal.keyring import rewrap_keys_without_context


def rewrap_keys(*, database: Database, kms: Any) -> list[int]:
    """Give the key-encryption keys wrapped without the encryption context
    the context (KMS ReEncrypt); the ids of those rewrapped."""
    with database.connect(autocommit=True) as conn:
        done = rewrap_keys_without_context(conn, kms)
    log("key_encryption_keys_rewrapped", ids=done)
    return done
