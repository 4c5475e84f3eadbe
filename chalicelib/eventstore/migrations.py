"""Ordered SQL migrations: files NNN_name.sql, each applied once, in order."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg

_FILE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
# Any constant works; it only has to be the same for every migrator, so that
# two stacks starting at once do not apply the same file twice.
_LOCK_KEY = 7_413_020_001


@dataclass(frozen=True)
class Migration:
    number: int
    name: str
    sql: str


def available(package: str = "chalicelib.schema") -> list[Migration]:
    found = []
    for entry in resources.files(package).iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text()))
    found.sort(key=lambda m: m.number)
    numbers = [m.number for m in found]
    if len(set(numbers)) != len(numbers):
        raise RuntimeError(f"two migrations share a number: {numbers}")
    return found


def migrate(conninfo: str, package: str = "chalicelib.schema") -> list[str]:
    """Apply what is not applied yet; return the names applied."""
    applied_now = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " number integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT number FROM schema_migrations")}
            for migration in available(package):
                if migration.number in done:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql)
                    conn.execute(
                        "INSERT INTO schema_migrations (number, name) VALUES (%s, %s)",
                        (migration.number, migration.name),
                    )
                applied_now.append(migration.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
