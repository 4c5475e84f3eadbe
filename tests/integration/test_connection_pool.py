"""Warm Lambda containers keep their pool; a connection that died meanwhile
must be replaced, not surface as a failed request."""

import psycopg

from chalicelib.application import CustomerApplication
from chalicelib.infra import db as infra_db
from chalicelib.infra.settings import Settings


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


def test_the_application_opens_its_pool_on_first_use_and_keeps_it(db):
    application = CustomerApplication(Settings.from_env())
    try:
        assert application._pool is None  # building it opened nothing
        first = application.pool()
        assert application.pool() is first
    finally:
        application.close()
