"""What a projection batch asks of the database: the current rows and the
customers' keys in one round trip, however many customers the batch holds,
counted on the wire (libpq's trace of the batch's connection). Real
PostgreSQL, personal data sealed under keys unwrapped through KMS (moto)."""

import contextlib
import tempfile
import uuid

import psycopg

from chalicelib.application import CustomerApplication
from chalicelib.domain.customer import registry
from chalicelib.infra.settings import Settings
from chalicelib.usecases.read_side import project_batch
from chalicelib.usecases.unit_of_work import PostgresUnitsOfWork
from tests.support.deliveries import delivered_batch, read_model, stored_events


class TracedConnections:
    """One connection whose every message to the server libpq writes to a file."""

    def __init__(self, database_url: str) -> None:
        self.trace = tempfile.TemporaryFile("w+")
        self.conn = psycopg.connect(database_url, autocommit=True)
        self.conn.pgconn.trace(self.trace.fileno())

    @contextlib.contextmanager
    def connection(self):
        yield self.conn

    def round_trips(self) -> int:
        """How often the server answered after the client had sent: each a wait."""
        self.trace.seek(0)
        senders = [line.split("\t")[1] for line in self.trace if line.count("\t") >= 3]
        return sum(1 for before, after in zip(senders, senders[1:], strict=False) if (before, after) == ("F", "B"))

    def close(self) -> None:
        self.conn.close()
        self.trace.close()


def test_a_batch_of_new_customers_reads_their_rows_and_keys_in_one_round_trip(client, db, encryption, application):
    for n in range(30):
        client.create_id(f"c{n}@example.com")
    with application.parts.units().reading() as unit:  # as the relay publishes them: opened
        events = [registry.upcast_recorded(unit.open_event(e)) for e in stored_events(db)]
    # A new container: no key in memory, so each of the 30 must be found.
    fresh = CustomerApplication(Settings.from_env())
    personal = fresh.parts.required_personal_data()
    traced = TracedConnections(db)
    try:
        units = PostgresUnitsOfWork(traced, personal, snapshot_every=None, idempotency_ttl_seconds=60)
        result = project_batch(delivered_batch(events), units=units, dead_letters=None, signing=None)
        assert result.rows_written == 30
        assert result.rows_written == 30 and all(row.email_hash for row in read_model(db))
        # The lock, the rows and the keys; the pipeline's end; the upsert; the
        # commit. (The key-encryption key is read once, on a connection of its own.)
        assert traced.round_trips() <= 4, traced.round_trips()
    finally:
        traced.close()
        fresh.close()
    assert {row.id for row in read_model(db)} == {uuid.UUID(str(e.stream_id)) for e in events}
