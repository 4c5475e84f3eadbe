"""Test harness: a real PostgreSQL and a real Kafka-protocol broker for the
session, a clean database and a fresh topic per test.

With DATABASE_URL set, the tests create (and drop) a database of their own on
that server, so they never touch the data in the database it names. Without
it, one embedded server is started for the whole session. Likewise
KAFKA_BOOTSTRAP_SERVERS, else an embedded broker; each test that needs one
gets a topic of its own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from chalicelib.eventstore.migrations import migrate
from chalicelib.infra import db as infra_db

_TABLES_KEPT = {"schema_migrations"}


@pytest.fixture(scope="session")
def database_url():
    configured = os.environ.get("DATABASE_URL")
    if configured:
        name = f"customer_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(configured, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
        url = make_conninfo(configured, dbname=name)
        migrate(url)
        yield url
        infra_db.close_pool()
        with psycopg.connect(configured, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("DROP DATABASE {} WITH (FORCE)").format(psycopg.sql.Identifier(name)))
        return

    from devstack.postgres import EmbeddedPostgres, free_port

    root = Path(tempfile.mkdtemp(prefix="customer-pg-"))
    server = EmbeddedPostgres(root / "data", free_port())
    url = server.start(durable=False)
    migrate(url)
    try:
        yield url
    finally:
        infra_db.close_pool()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def db(database_url, monkeypatch):
    """A database with every table emptied, and the app pointed at it."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
            if row[0] not in _TABLES_KEPT
        ]
        if tables:
            conn.execute(
                psycopg.sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                    psycopg.sql.SQL(", ").join(psycopg.sql.Identifier(t) for t in tables)
                )
            )
    monkeypatch.setenv("DATABASE_URL", database_url)
    return database_url


@pytest.fixture(scope="session")
def kafka_bootstrap():
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    from devstack.kafka import EmbeddedKafka
    from devstack.postgres import free_port

    broker = EmbeddedKafka(free_port())
    try:
        yield broker.start()
    finally:
        broker.stop()


@pytest.fixture
def topic(kafka_bootstrap, monkeypatch):
    """A topic of this test's own, and the app pointed at it."""
    from devstack.kafka import create_topic

    name = f"customer-events-test-{uuid.uuid4().hex[:10]}"
    create_topic(kafka_bootstrap, name, partitions=3)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("KAFKA_TOPIC", name)
    return name
