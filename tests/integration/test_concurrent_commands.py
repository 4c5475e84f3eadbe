"""Racing commands on real PostgreSQL connections: nothing is lost."""

import threading

import psycopg

from chalicelib.domain.commands import ChangeEmail
from chalicelib.eventstore.events import CommandContext
from chalicelib.eventstore.store import RetriesExhausted
from tests.support.builders import Commands, new_customer
from tests.support.stores import PooledStore
from tests.support.waiting import run_in_threads

WRITERS = 8


def race(commands: Commands, customer_id, on_outcome) -> None:
    """WRITERS email changes to one customer, released at once."""
    barrier = threading.Barrier(WRITERS)

    def writer(n):
        barrier.wait()
        email = f"writer{n}@example.com"
        try:
            commands.change_email(ChangeEmail(customer_id=customer_id, email=email), CommandContext(f"writer-{n}"))
        except Exception as error:  # noqa: BLE001 - handed to the test
            on_outcome(error)
        else:
            on_outcome(email)

    run_in_threads(writer, [(n,) for n in range(WRITERS)])


def test_racing_email_changes_all_land_as_consecutive_versions(db, pool):
    # Enough retries that each of 8 writers gets through a full pile-up.
    commands = Commands(pool, max_retries=WRITERS * 2)
    customer = new_customer(commands)
    outcomes = []
    race(commands, customer.id, outcomes.append)
    errors = [o for o in outcomes if isinstance(o, Exception)]

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


def test_without_retries_racing_writers_lose_with_a_conflict_and_store_nothing(db, pool):
    commands = Commands(pool, max_retries=0)
    customer = new_customer(commands)
    outcomes = []
    race(commands, customer.id, outcomes.append)
    stored = [e.data["email"] for e in PooledStore(pool).load(customer.id)][1:]

    winners = [o for o in outcomes if not isinstance(o, Exception)]
    assert all(isinstance(o, RetriesExhausted) for o in outcomes if isinstance(o, Exception))
    # Every writer that was told "done" is in the stream, and only those.
    assert sorted(winners) == sorted(stored)
    assert len(outcomes) == WRITERS and len(winners) >= 1
