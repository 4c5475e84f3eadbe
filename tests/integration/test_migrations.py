"""Migrations: each applied once, in order; running them again is a no-op."""

import psycopg

from chalicelib.eventstore.migrations import available, migrate


def test_migrating_a_migrated_database_applies_nothing_and_fails_nothing(db):
    with psycopg.connect(db) as conn:
        before = conn.execute("SELECT number, name, applied_at FROM schema_migrations ORDER BY number").fetchall()
    assert [row[0] for row in before] == [m.number for m in available()]  # the harness applied them all
    assert migrate(db) == []
    assert migrate(db) == []
    with psycopg.connect(db) as conn:
        after = conn.execute("SELECT number, name, applied_at FROM schema_migrations ORDER BY number").fetchall()
    assert after == before
