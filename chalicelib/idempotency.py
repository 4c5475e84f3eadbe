"""Idempotent commands: a retried request with the same Idempotency-Key gets
the original response, and nothing is appended twice.

The key's row is inserted first, in the transaction that then runs the
command and stores its response. A concurrent retry's insert waits on the
primary key until that transaction ends: it then finds the response (commit)
or takes over the key (rollback). So exactly one of them executes. Only
successful responses are kept: a command that failed rolls back, key and all,
and may be retried with the same key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg_pool import ConnectionPool

from chalicelib.infra.logs import log


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: object
    headers: dict[str, str]


class KeyReused(Exception):
    """The key was used before for a different request."""


def request_hash(*parts: str | bytes | None) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else (part or b"")
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def run_once(pool: ConnectionPool, key: str, fingerprint: str, ttl_seconds: float,
             execute: Callable[[psycopg.Connection], StoredResponse]) -> tuple[StoredResponse, bool]:
    """(response, replayed): the stored response when the key was seen with
    the same request, else the response of `execute`, run once."""
    with pool.connection() as conn, conn.transaction():
        conn.execute("DELETE FROM idempotency_keys WHERE key = %s AND expires_at < clock_timestamp()", (key,))
        claimed = conn.execute(
            "INSERT INTO idempotency_keys (key, request_hash, expires_at)"
            " VALUES (%s, %s, clock_timestamp() + make_interval(secs => %s))"
            " ON CONFLICT (key) DO NOTHING RETURNING key", (key, fingerprint, ttl_seconds)).fetchone()
        if claimed is None:
            stored_hash, status, body, headers = conn.execute(
                "SELECT request_hash, status, body, headers FROM idempotency_keys WHERE key = %s",
                (key,)).fetchone()
            if stored_hash != fingerprint:
                raise KeyReused(f"Idempotency-Key {key!r} was already used for a different request")
            return StoredResponse(status, body, headers), True
        response = execute(conn)
        conn.execute("UPDATE idempotency_keys SET status = %s, body = %s, headers = %s WHERE key = %s",
                     (response.status, json.dumps(response.body), json.dumps(response.headers), key))
        return response, False


def prune_expired(pool: ConnectionPool, limit: int = 10_000) -> int:
    with pool.connection() as conn:
        deleted = conn.execute(
            "DELETE FROM idempotency_keys WHERE key IN (SELECT key FROM idempotency_keys"
            " WHERE expires_at < clock_timestamp() LIMIT %s)", (limit,)).rowcount
    if deleted:
        log("idempotency_keys_pruned", count=deleted)
    return deleted
