"""Idempotent commands: a retried command with the same Idempotency-Key gets
the original result, and nothing is appended twice.

The key's row is inserted first, in the transaction that then runs the
command and stores its result. A concurrent retry's insert waits on the
primary key until that transaction ends: it then finds the result (commit)
or takes over the key (rollback). So exactly one of them executes. Only
successful results are kept: a command that failed rolls back, key and all,
and may be retried with the same key.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from chalicelib.infra.db import Connections
from chalicelib.infra.logs import log

Result = dict[str, Any]


class KeyReused(Exception):
    """The key was used before for a different request."""


def request_hash(request: list) -> str:
    """A fingerprint of what was asked: the command's name and its inputs."""
    return hashlib.sha256(json.dumps(request, default=str).encode()).hexdigest()


def _as_stored(conn: psycopg.Connection, result: Result) -> Result:
    return result


def run_once(pool: Connections, key: str, fingerprint: str, ttl_seconds: float,
             execute: Callable[[psycopg.Connection], Result], *,
             seal: Callable[[psycopg.Connection, Result], Result] = _as_stored,
             open_stored: Callable[[psycopg.Connection, Result], Result] = _as_stored) -> tuple[Result, bool]:
    """(result, replayed): the stored result when the key was seen with the
    same request, else the result of `execute`, run once on the key's
    transaction. `seal` gives what is stored of a result (its personal data
    sealed), `open_stored` reads it back."""
    with pool.connection() as conn, conn.transaction():
        conn.execute("DELETE FROM idempotency_keys WHERE key = %s AND expires_at < clock_timestamp()", (key,))
        claimed = conn.execute(
            "INSERT INTO idempotency_keys (key, request_hash, expires_at)"
            " VALUES (%s, %s, clock_timestamp() + make_interval(secs => %s))"
            " ON CONFLICT (key) DO NOTHING RETURNING key", (key, fingerprint, ttl_seconds)).fetchone()
        if claimed is None:
            stored_hash, result = conn.execute(
                "SELECT request_hash, result FROM idempotency_keys WHERE key = %s", (key,)).fetchone()
            if stored_hash != fingerprint:
                raise KeyReused(f"Idempotency-Key {key!r} was already used for a different request")
            return open_stored(conn, result), True
        result = execute(conn)
        conn.execute("UPDATE idempotency_keys SET result = %s, customer_id = %s WHERE key = %s",
                     (Jsonb(seal(conn, result)), result.get("id"), key))
        return result, False


def prune_expired(pool: Connections, limit: int = 10_000) -> int:
    with pool.connection() as conn:
        deleted = conn.execute(
            "DELETE FROM idempotency_keys WHERE key IN (SELECT key FROM idempotency_keys"
            " WHERE expires_at < clock_timestamp() LIMIT %s)", (limit,)).rowcount
    if deleted:
        log("idempotency_keys_pruned", count=deleted)
    return deleted


def forget_results_of(conn: psycopg.Connection, customer_id: uuid.UUID) -> None:
    """Stored answers about this customer (they hold its personal data)."""
    conn.execute("DELETE FROM idempotency_keys WHERE customer_id = %s", (customer_id,))
