"""The keys personal data is sealed under, as operators look after them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chalicelib.infra.logs import log
from chalicelib.personal.keyring import rewrap_keys_without_context

if TYPE_CHECKING:
    from chalicelib.bootstrap import Bootstrap


def rewrap_keys(parts: Bootstrap) -> list[int]:
    """Give the key-encryption keys made before KMS calls named an encryption
    context one (KMS ReEncrypt); the ids of those rewrapped."""
    parts.settings.require_kms()
    with parts.database().direct().connect(autocommit=True) as conn:
        done = rewrap_keys_without_context(conn, parts.aws("kms"))
    log("key_encryption_keys_rewrapped", ids=done)
    return done
