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


def test_a_lookup_by_email_without_encryption_is_served_by_an_index(db):
    from chalicelib.readmodel.queries import _BY_EMAIL, find_by_email

    with psycopg.connect(db) as conn:
        conn.execute("INSERT INTO customers_view (id, name, email, version, created_at, updated_at) VALUES"
                     " (gen_random_uuid(), '\"A\"', '\"a@example.com\"', 1, now(), now()),"
                     " (gen_random_uuid(), '{\"sealed\": \"x\"}', '{\"sealed\": \"eA==\"}', 1, now(), now())")
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute(b"EXPLAIN " + _BY_EMAIL.as_bytes(conn), ("a@example.com",)))
        assert "customers_view_expr_idx" in plan
        assert [row.name for row in find_by_email(conn, "a@example.com")] == ["A"]
        conn.rollback()
