"""Warm Lambda containers keep their pool; a connection that died meanwhile
must be replaced, not surface as a failed request."""

import psycopg

from chalicelib.infra import db as infra_db


def test_a_connection_killed_while_idle_is_replaced(db, monkeypatch):
    pool = infra_db.new_pool(db, max_size=1)
    try:
        with pool.connection() as conn:
            pid = conn.info.backend_pid
        with psycopg.connect(db, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        monkeypatch.setattr(infra_db, "IDLE_CHECK_SECONDS", 0.0)
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert conn.info.backend_pid != pid
    finally:
        pool.close()


def test_pool_is_opened_lazily_and_reused(db):
    infra_db.close_pool()
    assert infra_db._pool is None
    first = infra_db.get_pool(db)
    assert infra_db.get_pool(db) is first
