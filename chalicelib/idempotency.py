"""Idempotent commands: a retried command with the same Idempotency-Key gets
the original answer, and nothing is appended twice.

The key's row is inserted first, in the transaction that then runs the
command and stores its answer (chalicelib.usecases.unit_of_work). A
concurrent retry's insert waits on the primary key until that transaction
ends: it then finds the answer (commit) or takes over the key (rollback). So
exactly one of them executes. Only successful answers are kept: a command
that failed rolls back, key and all, and may be retried with the same key.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from chalicelib.infra.logs import log

Answer = dict[str, Any]


class KeyReused(Exception):
    """The key was used before for a different request."""


def request_hash(request: list[Any]) -> str:
    """A fingerprint of what was asked: the command's name and its inputs."""
    return hashlib.sha256(json.dumps(request, default=str).encode()).hexdigest()


def claim(conn: psycopg.Connection, key: str, fingerprint: str, ttl_seconds: float) -> Answer | None:
    """In the caller's transaction: the answer stored under `key` (as
    stored), or None when this transaction now holds the key. KeyReused when
    the key was used for another request."""
    conn.execute("DELETE FROM idempotency_keys WHERE key = %s AND expires_at < clock_timestamp()", (key,))
    claimed = conn.execute(
        "INSERT INTO idempotency_keys (key, request_hash, expires_at)"
        " VALUES (%s, %s, clock_timestamp() + make_interval(secs => %s))"
        " ON CONFLICT (key) DO NOTHING RETURNING key", (key, fingerprint, ttl_seconds)).fetchone()
    if claimed is not None:
        return None
    row = conn.execute("SELECT request_hash, result FROM idempotency_keys WHERE key = %s", (key,)).fetchone()
    if row is None:
        raise KeyReused(f"Idempotency-Key {key!r} was taken and released at this moment: try again")
    stored_hash, answer = row
    if stored_hash != fingerprint:
        raise KeyReused(f"Idempotency-Key {key!r} was already used for a different request")
    stored: Answer = answer
    return stored


def keep(conn: psycopg.Connection, key: str, answer: Answer, customer_id: uuid.UUID | str | None) -> None:
    """Store the answer under the key this transaction holds."""
    conn.execute("UPDATE idempotency_keys SET result = %s, customer_id = %s WHERE key = %s",
                 (Jsonb(answer), customer_id, key))


def prune_expired(conn: psycopg.Connection, limit: int = 10_000) -> int:
    deleted = conn.execute(
        "DELETE FROM idempotency_keys WHERE key IN (SELECT key FROM idempotency_keys"
        " WHERE expires_at < clock_timestamp() LIMIT %s)", (limit,)).rowcount
    if deleted:
        log("idempotency_keys_pruned", count=deleted)
    return deleted


def forget_results_of(conn: psycopg.Connection, customer_id: uuid.UUID) -> None:
    """Stored answers about this customer (they hold its personal data)."""
    conn.execute("DELETE FROM idempotency_keys WHERE customer_id = %s", (customer_id,))
