"""The PostgreSQL connection pool, opened on first use (never at import, which
is Lambda cold start) and kept by warm invocations of the same container."""

from __future__ import annotations

import threading

from psycopg_pool import ConnectionPool

_lock = threading.Lock()
_pool: ConnectionPool | None = None
_pool_url: str | None = None


def get_pool(database_url: str, max_size: int = 4) -> ConnectionPool:
    global _pool, _pool_url
    with _lock:
        if _pool is None or _pool_url != database_url:
            if _pool is not None:
                _pool.close()
            _pool = ConnectionPool(
                database_url,
                min_size=1,
                max_size=max(1, max_size),
                # Each statement is its own transaction unless a block asks
                # for one: an append is a single statement, so one round trip.
                kwargs={"autocommit": True},
                # A connection that died while the container slept (database
                # restart, failover) is replaced instead of failing a request.
                check=ConnectionPool.check_connection,
                open=False,
                name="customer-service",
            )
            _pool.open(wait=True, timeout=10)
            _pool_url = database_url
        return _pool


def close_pool() -> None:
    global _pool, _pool_url
    with _lock:
        if _pool is not None:
            _pool.close()
        _pool, _pool_url = None, None
