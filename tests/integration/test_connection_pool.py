"""How a container keeps its connections: one on Lambda (DB_POOL_MAX_SIZE=1,
the default), a pool in the threaded local server; a connection that died
while the container slept is replaced, not surfaced as a failed request."""

import threading
import time
import uuid

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from chalicelib.application import CustomerApplication
from chalicelib.eventstore.events import CommandContext
from chalicelib.infra import db as infra_db
from chalicelib.infra.settings import Settings
from tests.support.builders import client_connections
from tests.support.waiting import run_in_threads

CONTEXT = CommandContext(correlation_id="test", causation_id="test")


@pytest.mark.parametrize("size", [1, 2])
def test_a_connection_killed_while_idle_is_replaced(db, monkeypatch, size):
    connections = infra_db.Database(db).connections(size)
    try:
        with connections.connection() as conn:
            pid = conn.info.backend_pid
        with psycopg.connect(db, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        monkeypatch.setattr(infra_db, "IDLE_CHECK_SECONDS", 0.0)
        with connections.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert conn.info.backend_pid != pid
    finally:
        connections.close()


def test_a_container_holds_one_connection_whatever_it_does(db):
    application = CustomerApplication(Settings.from_env())
    try:
        assert client_connections(db) == 0
        created = application.create_customer("Ada", "ada@example.com", CONTEXT)
        application.change_email(uuid.UUID(created.customer_id), "ada@analytical-engine.org", CONTEXT,
                                 idempotency_key="k-1")
        application.customer(uuid.UUID(created.customer_id), strong=True)
        application.history(uuid.UUID(created.customer_id))
        application.health()
        application.health_details()
        assert client_connections(db) == 1
        assert application.parts.connections() is application.parts.connections()
    finally:
        application.close()
    assert client_connections(db) == 0


def test_one_connection_serves_one_caller_at_a_time_and_refuses_a_nested_ask(db):
    connections = infra_db.Database(db).connections(1)
    try:
        inside, overlap = [], []

        def use() -> None:
            with connections.connection() as conn:
                inside.append(1)
                overlap.append(len(inside))
                conn.execute("SELECT pg_sleep(0.02)")
                inside.pop()

        run_in_threads(use, [() for _ in range(6)])
        assert overlap == [1] * 6
        with connections.connection(), pytest.raises(RuntimeError, match="pass it down"):
            with connections.connection():
                pass
    finally:
        connections.close()


def test_a_connection_given_back_inside_a_transaction_is_rolled_back(db):
    connections = infra_db.Database(db).connections(1)
    try:
        with pytest.raises(RuntimeError), connections.connection() as conn:
            conn.execute("BEGIN")
            conn.execute("CREATE TABLE left_behind (x int)")
            raise RuntimeError("a request that failed half-way")
        with connections.connection() as conn:
            assert conn.execute("SELECT to_regclass('left_behind')").fetchone() == (None,)
    finally:
        connections.close()


def test_a_caller_waits_for_the_connection_at_most_so_long(db):
    connections = infra_db.OneConnection(infra_db.Database(db), wait_seconds=0.2)
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with connections.connection():
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        held.wait(5)
        began = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match="in use"), connections.connection():
            pass
        assert time.monotonic() - began < 2
    finally:
        release.set()
        holder.join()
        connections.close()


def test_through_rds_proxy_connections_keep_no_prepared_statements_and_the_relay_goes_direct(db):
    port = conninfo_to_dict(db)["port"]
    through_proxy = infra_db.Database(make_conninfo(db, port="1"), proxy_endpoint=f"127.0.0.1:{port}")
    assert conninfo_to_dict(through_proxy.conninfo())["port"] == port
    with through_proxy.connect(autocommit=True) as conn:
        assert conn.prepare_threshold is None
        for _ in range(10):  # what psycopg would prepare after five
            conn.execute("SELECT 1 WHERE %s = 1", (1,))
        assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)
    direct = through_proxy.direct()
    assert direct.proxy_endpoint is None and conninfo_to_dict(direct.conninfo())["port"] == "1"
    with infra_db.Database(db).connect(autocommit=True) as conn:
        assert conn.prepare_threshold == 5
