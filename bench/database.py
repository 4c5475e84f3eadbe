"""A PostgreSQL for a benchmark run: a fresh database on DATABASE_URL's server
when it is set, else an embedded server with default (durable) settings."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from chalicelib.eventstore.migrations import migrate


@contextlib.contextmanager
def bench_database() -> Iterator[str]:
    configured = os.environ.get("DATABASE_URL")
    if configured:
        name = f"customer_bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(configured, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = make_conninfo(configured, dbname=name)
        try:
            migrate(url)
            yield url
        finally:
            with psycopg.connect(configured, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        return

    from devstack.postgres import EmbeddedPostgres, free_port

    root = Path(tempfile.mkdtemp(prefix="customer-pg-"))
    server = EmbeddedPostgres(root / "data", free_port())
    try:
        url = server.start(durable=True)
        migrate(url)
        yield url
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
