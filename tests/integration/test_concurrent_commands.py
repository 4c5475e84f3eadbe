"""Racing commands on real PostgreSQL connections: nothing is lost."""

import threading
import uuid

import psycopg
from psycopg_pool import ConnectionPool

from chalicelib.domain.commands import ChangeEmail, CreateCustomer
from chalicelib.eventstore.events import CommandContext
from chalicelib.eventstore.postgres import PostgresEventStore
from chalicelib.eventstore.store import RetriesExhausted
from chalicelib.handlers import CustomerService

WRITERS = 8


def test_racing_email_changes_all_land_as_consecutive_versions(db):
    with ConnectionPool(db, min_size=WRITERS, max_size=WRITERS, kwargs={"autocommit": True}) as pool:
        # Enough retries that each of 8 writers gets through a full pile-up.
        service = CustomerService(PostgresEventStore(pool), max_retries=WRITERS * 2)
        customer = service.create(
            CreateCustomer(name="Ada", email="ada@example.com", customer_id=uuid.uuid4()),
            CommandContext("setup"),
        )
        barrier = threading.Barrier(WRITERS)
        errors = []

        def writer(n):
            barrier.wait()
            try:
                service.change_email(
                    ChangeEmail(customer_id=customer.id, email=f"writer{n}@example.com"),
                    CommandContext(f"writer-{n}"),
                )
            except Exception as error:  # noqa: BLE001 - collected and asserted below
                errors.append(error)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    assert errors == []
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT version, data->>'email', metadata->>'correlation_id' FROM events"
            " WHERE stream_id = %s ORDER BY version", (customer.id,)).fetchall()
        outbox = conn.execute("SELECT count(*) FROM outbox WHERE stream_id = %s", (customer.id,)).fetchone()
    assert [r[0] for r in rows] == list(range(1, WRITERS + 2))
    assert sorted(r[1] for r in rows[1:]) == sorted(f"writer{n}@example.com" for n in range(WRITERS))
    assert sorted(r[2] for r in rows[1:]) == sorted(f"writer-{n}" for n in range(WRITERS))
    assert outbox == (WRITERS + 1,)


def test_without_retries_racing_writers_lose_with_a_conflict_and_store_nothing(db):
    with ConnectionPool(db, min_size=WRITERS, max_size=WRITERS, kwargs={"autocommit": True}) as pool:
        service = CustomerService(PostgresEventStore(pool), max_retries=0)
        customer = service.create(
            CreateCustomer(name="Ada", email="ada@example.com", customer_id=uuid.uuid4()),
            CommandContext("setup"),
        )
        barrier = threading.Barrier(WRITERS)
        outcomes = []

        def writer(n):
            barrier.wait()
            try:
                service.change_email(
                    ChangeEmail(customer_id=customer.id, email=f"writer{n}@example.com"),
                    CommandContext(f"writer-{n}"))
                outcomes.append(f"writer{n}@example.com")
            except RetriesExhausted:
                outcomes.append("conflict")

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stored = [e.data["email"] for e in PostgresEventStore(pool).load(customer.id)][1:]

    winners = [o for o in outcomes if o != "conflict"]
    # Every writer that was told "done" is in the stream, and only those.
    assert sorted(winners) == sorted(stored)
    assert len(outcomes) == WRITERS and len(winners) >= 1
