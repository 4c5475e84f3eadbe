"""Customers made through the command handlers, and what the database holds."""

from __future__ import annotations

import uuid

import psycopg

from chalicelib.domain.commands import ChangeEmail, CreateCustomer, DeleteCustomer
from chalicelib.domain.customer import Customer
from chalicelib.eventstore.events import CommandContext, RecordedEvent, recorded_event_columns
from chalicelib.eventstore.outbox import backlog
from chalicelib.eventstore.postgres import recorded_event_row
from chalicelib.infra.db import Connections
from chalicelib.personal.sealing import PersonalData
from chalicelib.usecases.commands import CustomerCommands
from chalicelib.usecases.unit_of_work import PostgresUnitsOfWork

CONTEXT = CommandContext(correlation_id="test", causation_id="test")


class Commands:
    """The Customer's command handlers without HTTP or the facade, each call
    in a unit of work of its own on `connections`, as the facade runs them."""

    def __init__(self, connections: Connections, *, max_retries: int = 5, snapshot_every: int | None = None,
                 personal: PersonalData | None = None) -> None:
        self.units = PostgresUnitsOfWork(connections, personal, snapshot_every=snapshot_every,
                                         idempotency_ttl_seconds=3600)
        self.max_retries = max_retries

    def _run(self, handle):
        with self.units.begin() as unit:
            return handle(CustomerCommands(unit.customers, self.max_retries))

    def create(self, command: CreateCustomer, context: CommandContext = CONTEXT) -> Customer:
        return self._run(lambda commands: commands.create(command, context))

    def change_email(self, command: ChangeEmail, context: CommandContext = CONTEXT) -> Customer:
        return self._run(lambda commands: commands.change_email(command, context))

    def delete(self, command: DeleteCustomer, context: CommandContext = CONTEXT) -> Customer:
        return self._run(lambda commands: commands.delete(command, context))

    def get(self, customer_id: uuid.UUID) -> Customer:
        return self._run(lambda commands: commands.get(customer_id))


def new_customer(commands: Commands, n: int = 0, context: CommandContext = CONTEXT,
                 customer_id: uuid.UUID | None = None) -> Customer:
    """Customer n: name "Customer n", email cn@example.com."""
    return commands.create(CreateCustomer(name=f"Customer {n}", email=f"c{n}@example.com",
                                          customer_id=customer_id or uuid.uuid4()), context)


def id_in_bucket(bucket: int) -> uuid.UUID:
    """A random id whose outbox rows go to outbox bucket `bucket`: tests that
    need both shards written choose, since a dozen drawn ids all land in one
    shard once in a few thousand runs."""
    raw = bytearray(uuid.uuid4().bytes)
    raw[15] = bucket
    return uuid.UUID(bytes=bytes(raw))


def rows(database_url: str, row_factory, query: str) -> list:
    """What `query` selects, each row made by `row_factory`."""
    with psycopg.connect(database_url) as conn:
        return conn.cursor(row_factory=row_factory).execute(query).fetchall()


def stored_events(database_url: str) -> list[RecordedEvent]:
    return rows(database_url, recorded_event_row,
                f"SELECT {recorded_event_columns()} FROM events ORDER BY global_position")


def count(database_url: str, table: str = "events") -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute(psycopg.sql.SQL("SELECT count(*) FROM {}").format(psycopg.sql.Identifier(table))
                            ).fetchone()[0]


def unpublished(database_url: str) -> int:
    """Outbox rows not published yet, as `make outbox` counts them."""
    with psycopg.connect(database_url) as conn:
        return backlog(conn).unpublished


def copy_key(db, source: uuid.UUID, target: uuid.UUID) -> None:
    """What a bad restore or a hand-made fix might leave: one customer's wrapped key on another's row."""
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("UPDATE stream_keys SET kek_id = f.kek_id, wrapped_key = f.wrapped_key FROM stream_keys f"
                     " WHERE f.stream_id = %s AND stream_keys.stream_id = %s", (source, target))


def client_connections(database_url: str) -> int:
    """Clients' connections to this database other than the one asking."""
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                            " AND pid <> pg_backend_pid() AND backend_type = 'client backend'").fetchone()[0]
