"""Customers made through the command handlers, and what the database holds."""

from __future__ import annotations

import uuid

import psycopg

from chalicelib.domain.commands import CreateCustomer
from chalicelib.domain.customer import Customer
from chalicelib.eventstore.events import CommandContext, RecordedEvent, recorded_event_columns
from chalicelib.eventstore.outbox import backlog
from chalicelib.eventstore.postgres import recorded_event_row
from chalicelib.usecases.commands import CustomerCommands

CONTEXT = CommandContext(correlation_id="test", causation_id="test")


def new_customer(commands: CustomerCommands, n: int = 0, context: CommandContext = CONTEXT) -> Customer:
    """Customer n: name "Customer n", email cn@example.com."""
    return commands.create(CreateCustomer(name=f"Customer {n}", email=f"c{n}@example.com", customer_id=uuid.uuid4()),
                           context)


def stored_events(database_url: str) -> list[RecordedEvent]:
    with psycopg.connect(database_url) as conn:
        return conn.cursor(row_factory=recorded_event_row).execute(
            f"SELECT {recorded_event_columns()} FROM events ORDER BY global_position").fetchall()


def count(database_url: str, table: str = "events") -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute(psycopg.sql.SQL("SELECT count(*) FROM {}").format(psycopg.sql.Identifier(table))
                            ).fetchone()[0]


def unpublished(database_url: str) -> int:
    """Outbox rows not published yet, as `make outbox` counts them."""
    with psycopg.connect(database_url) as conn:
        return backlog(conn).unpublished
