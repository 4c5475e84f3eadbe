"""PostgreSQL's client tools (pg_dump, pg_restore) of the server's own major
version: a dump's restore must not meet settings the server does not know
(a newer pg_dump writes `transaction_timeout`, which PostgreSQL 16 and older
refuse). The embedded server's tools for it, the system's for any other."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg

from devstack.postgres import embedded_bin_path

SYSTEM_TOOLS = Path("/usr/lib/postgresql")


def server_major(conninfo: str) -> int:
    with psycopg.connect(conninfo) as conn:
        return conn.info.server_version // 10000


def tool(name: str, conninfo: str) -> Path:
    """The `name` tool for the server `conninfo` names."""
    major = server_major(conninfo)
    candidates = [embedded_bin_path() / name, SYSTEM_TOOLS / str(major) / "bin" / name]
    for candidate in candidates:
        if candidate.exists() and _major_of(candidate) == major:
            return candidate
    raise RuntimeError(f"no {name} of PostgreSQL {major} here: install the postgresql-client-{major} package"
                       f" (looked at {', '.join(map(str, candidates))})")


def _major_of(program: Path) -> int | None:
    printed = subprocess.run([str(program), "--version"], capture_output=True, text=True).stdout
    number = printed.strip().rsplit(" ", 1)[-1]
    try:
        return int(number.split(".")[0])
    except ValueError:
        return None


def run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def backup(conninfo: str, path: Path) -> None:
    """Every table's rows but the migrations', as a nightly backup has them."""
    run([str(tool("pg_dump", conninfo)), "--format=custom", "--data-only", "--exclude-table=schema_migrations",
         f"--file={path}", conninfo])


def restore(conninfo: str, path: Path) -> None:
    """The database as the backup has it: every table emptied, its rows put back."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        tables = [t for (t,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                                             " AND tablename <> 'schema_migrations'")]
        conn.execute("TRUNCATE " + ", ".join(tables) + " RESTART IDENTITY CASCADE")
    run([str(tool("pg_restore", conninfo)), "--data-only", "--disable-triggers", f"--dbname={conninfo}", str(path)])


def dump(conninfo: str) -> str:
    """The whole database as pg_dump writes it."""
    return subprocess.run([str(tool("pg_dump", conninfo)), "--no-owner", conninfo], check=True, capture_output=True,
                          text=True).stdout
