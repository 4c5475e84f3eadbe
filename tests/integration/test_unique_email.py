"""No two live customers share an email: reserved with the events, released
on email change and delete, and safe when commands race."""

import threading
import uuid

import psycopg

from chalicelib.domain.commands import CreateCustomer
from chalicelib.eventstore.errors import ReservationTaken
from chalicelib.eventstore.events import CommandContext
from tests.support.builders import count
from tests.support.waiting import run_in_threads


def create(client, email):
    return client.create("A", email, expect=None)


def test_a_taken_email_is_409_and_stores_nothing(client, db):
    assert create(client, "ada@example.com").status_code == 201
    taken = create(client, "ada@EXAMPLE.com")  # the same address: domains have no case
    assert taken.status_code == 409
    assert taken.json_body["Code"] == "ConflictError" and "ada@example.com" in taken.json_body["Message"]
    other = create(client, "bob@example.com").json_body
    assert client.change_email(other["id"], "ada@example.com").status_code == 409
    assert count(db) == 2


def test_an_email_is_released_by_a_change_and_by_a_delete(client, db):
    ada = create(client, "ada@example.com").json_body
    assert client.change_email(ada["id"], "countess@example.com").status_code == 200
    assert create(client, "ada@example.com").status_code == 201  # free again
    client.http.delete(f"/customer/{ada['id']}")
    assert create(client, "countess@example.com").status_code == 201


def test_two_concurrent_creations_with_one_email_exactly_one_wins(db, commands):
    outcomes = []
    for round_ in range(5):
        barrier = threading.Barrier(2)

        def attempt(barrier, email):
            barrier.wait()
            try:
                commands.create(CreateCustomer("A", email, uuid.uuid4()), CommandContext("race"))
                outcomes.append("created")
            except ReservationTaken:
                outcomes.append("taken")

        run_in_threads(attempt, [(barrier, f"race{round_}@example.com")] * 2)
    assert sorted(outcomes) == ["created"] * 5 + ["taken"] * 5
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 5
        assert conn.execute("SELECT count(*) FROM reservations").fetchone()[0] == 5
