"""`make run` against what users bring and what breaks under them: a
PostgreSQL that trusts its loopback logins, and a broker killed outright
while customers are being written."""

import os
import signal
import threading
import time
import urllib.error
import uuid

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devstack.postgres import free_port
from tests.support.deliveries import read_model, read_model_from_store
from tests.support.stack import (
    part_pid,
    post_customer,
    read_source,
    running_stack,
    start_stack,
)
from tests.support.waiting import wait_for


@pytest.fixture
def trusted_database(database_url, monkeypatch):
    """A database of the test's own, and its URL with no password: the usual
    laptop PostgreSQL that trusts its loopback logins. On a server that asks
    for one (as RDS does), libpq finds it in PGPASSWORD, as it would in
    ~/.pgpass; the URL still holds none."""
    name = f"stack_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    given = conninfo_to_dict(database_url)
    if given.get("password"):
        monkeypatch.setenv("PGPASSWORD", str(given.pop("password")))
    url = make_conninfo(**{**given, "dbname": name})
    assert "password" not in url
    yield url
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_a_database_url_without_a_password_serves_every_request(tmp_path, trusted_database):
    with running_stack(tmp_path, DATABASE_URL=trusted_database) as running:
        state, api_port = running.state, running.api_port
        customer_id = post_customer(state, api_port, "ada@example.com")
        assert wait_for(lambda: read_source(state, api_port, customer_id) == "read-model", timeout=30)


def test_a_database_url_the_server_refuses_stops_the_stack_with_what_to_set(tmp_path, database_url):
    state = tmp_path / "stack"
    refused = make_conninfo(database_url, user="nobody_here")
    stack = start_stack(state, free_port(), free_port(), free_port(), DATABASE_URL=refused)
    output, _ = stack.communicate(timeout=60)
    assert stack.returncode != 0
    assert "cannot log in" in output and "DATABASE_URL" in output
    assert "[stack] API:" not in output


def test_a_broker_killed_under_a_writer_loses_nothing_from_the_read_model(tmp_path, trusted_database):
    with running_stack(tmp_path, DATABASE_URL=trusted_database) as running:
        state, api_port, output = running.state, running.api_port, running.output
        written, failures, stop = [], [], threading.Event()

        def writer() -> None:
            while not stop.is_set():
                try:
                    email = f"w{len(written)}-{uuid.uuid4().hex[:6]}@example.com"
                    written.append(post_customer(state, api_port, email))
                except (OSError, urllib.error.HTTPError) as error:
                    failures.append(error)

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            assert wait_for(lambda: len(written) >= 20, timeout=30)
            os.kill(part_pid(state, "Kafka-broker"), signal.SIGKILL)
            assert wait_for(lambda: "[stack] Kafka broker restarted" in output, timeout=30), output.lines
            before = len(written)
            assert wait_for(lambda: len(written) >= before + 20, timeout=30)
        finally:
            stop.set()
            thread.join(timeout=30)
        assert failures == []  # commands never wait for Kafka

        def versions(rows) -> set:
            return {(row.id, row.version, row.deleted) for row in rows}

        def caught_up() -> bool:
            # By version: the store holds names and emails sealed, the read model opened.
            return versions(read_model(trusted_database)) == versions(read_model_from_store(trusted_database))

        began = time.monotonic()
        assert wait_for(caught_up, timeout=30), (len(read_model(trusted_database)), len(written))
        assert len(read_model(trusted_database)) == len(written)
        print(f"[fault] broker killed under a writer: the read model equals the store"
              f" {time.monotonic() - began:.1f} s after the last write ({len(written)} customers)")


def test_the_event_source_settles_after_each_of_several_broker_kills(tmp_path, trusted_database):
    """Each time the broker comes back empty, the emulated event source reads
    the new topic from its beginning once, then waits for new records: it
    does not start over again and again."""
    with running_stack(tmp_path, DATABASE_URL=trusted_database) as running:
        state, api_port, output = running.state, running.api_port, running.output
        customers = [post_customer(state, api_port, f"settle{n}@example.com") for n in range(20)]
        assert wait_for(lambda: len(read_model(trusted_database)) == len(customers), timeout=30)
        for kill in range(1, 4):
            os.kill(part_pid(state, "Kafka-broker"), signal.SIGKILL)
            assert wait_for(lambda kill=kill: sum("[stack] Kafka broker restarted" in line
                                                  for line in list(output.lines)) == kill, timeout=60)
            customers.append(post_customer(state, api_port, f"after-kill-{kill}@example.com"))
            assert wait_for(lambda: read_source(state, api_port, customers[-1]) == "read-model", timeout=30)

        def starts_over() -> int:
            return sum("event_source_topic_recreated" in line for line in list(output.lines))

        time.sleep(3)
        settled = starts_over()
        time.sleep(5)
        assert starts_over() == settled <= 3, [line for line in output.lines if "recreated" in line]
