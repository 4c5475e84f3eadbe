"""The database's schema, brought up to this code's (`python -m ops migrate`,
the first step of a deployment)."""

from __future__ import annotations

from chalicelib.eventstore.migrations import migrate as apply_migrations
from chalicelib.infra.db import Database
from chalicelib.infra.logs import log


def migrate(*, database: Database) -> list[str]:
    """Apply the migrations not applied yet, in order; their names."""
    applied = apply_migrations(database.conninfo())
    log("migrations_applied", applied=applied)
    return applied
