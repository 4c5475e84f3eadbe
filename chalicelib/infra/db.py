"""PostgreSQL connections: the pool (the application facade opens it on first
use and keeps it for warm invocations) and a pool-shaped view of one
connection, for running store code inside a caller's transaction."""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Iterator

import psycopg
from psycopg_pool import ConnectionPool

# A connection not handed out for longer than this is pinged before use; one
# in steady use is not, which saves a round trip on every request.
IDLE_CHECK_SECONDS = 5.0
_handed_out_at: weakref.WeakKeyDictionary[psycopg.Connection, float] = weakref.WeakKeyDictionary()


def _check_if_idle(conn: psycopg.Connection) -> None:
    # A connection that died while the container slept (database restart,
    # failover, NAT timeout) is replaced instead of failing a request. Times
    # are noted here rather than in a `reset` callback, which would make the
    # pool return every connection through a worker thread.
    now = time.monotonic()
    last = _handed_out_at.get(conn)
    _handed_out_at[conn] = now
    if last is None or now - last > IDLE_CHECK_SECONDS:
        ConnectionPool.check_connection(conn)


def new_pool(database_url: str, max_size: int = 4) -> ConnectionPool:
    pool = ConnectionPool(
        database_url,
        min_size=1,
        max_size=max(1, max_size),
        # Each statement is its own transaction unless a block asks for one:
        # an append is a single statement, so a single round trip.
        kwargs={"autocommit": True},
        check=_check_if_idle,
        open=False,
        name="customer-service",
    )
    pool.open(wait=True, timeout=10)
    return pool


class TransactionConnection:
    """Hands out one connection, inside the caller's transaction, to code that
    asks a pool for connections (the event store)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        yield self._conn
