"""Composition root: the one place that wires settings, pool, store and
handlers together, on first use rather than at import."""

from __future__ import annotations

from chalicelib.eventstore.postgres import PostgresEventStore
from chalicelib.handlers import CustomerService
from chalicelib.infra import db
from chalicelib.infra.settings import Settings


def customer_service() -> CustomerService:
    settings = Settings.from_env()
    pool = db.get_pool(settings.database_url, settings.db_pool_max_size)
    return CustomerService(PostgresEventStore(pool), max_retries=settings.command_max_retries)
