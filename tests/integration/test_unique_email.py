"""No two live customers share an email: reserved with the events, released
on email change and delete, and safe when commands race."""

import json
import threading
import uuid

import psycopg
import pytest
from chalice.test import Client

from app import app
from chalicelib.domain.commands import CreateCustomer
from chalicelib.eventstore.events import CommandContext, ReservationTaken
from chalicelib.eventstore.postgres import PostgresEventStore
from chalicelib.handlers import CustomerService
from chalicelib.infra import db as infra_db

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def client(db):
    with Client(app) as client:
        yield client


def create(client, email):
    return client.http.post("/customer", headers=JSON, body=json.dumps({"name": "A", "email": email}))


def change(client, cid, email):
    return client.http.post(f"/customer/{cid}/email", headers=JSON, body=json.dumps({"email": email}))


def count_events(db):
    with psycopg.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]


def test_a_taken_email_is_409_and_stores_nothing(client, db):
    assert create(client, "ada@example.com").status_code == 201
    taken = create(client, "ada@EXAMPLE.com")  # the same address: domains have no case
    assert taken.status_code == 409
    assert taken.json_body["Code"] == "ConflictError" and "ada@example.com" in taken.json_body["Message"]
    other = create(client, "bob@example.com").json_body
    assert change(client, other["id"], "ada@example.com").status_code == 409
    assert count_events(db) == 2


def test_an_email_is_released_by_a_change_and_by_a_delete(client, db):
    ada = create(client, "ada@example.com").json_body
    assert change(client, ada["id"], "countess@example.com").status_code == 200
    assert create(client, "ada@example.com").status_code == 201  # free again
    client.http.delete(f"/customer/{ada['id']}")
    assert create(client, "countess@example.com").status_code == 201


def test_two_concurrent_creations_with_one_email_exactly_one_wins(db):
    pool = infra_db.new_pool(db, max_size=8)
    service = CustomerService(PostgresEventStore(pool))
    outcomes = []
    for round_ in range(5):
        barrier = threading.Barrier(2)

        def attempt(barrier, email):
            barrier.wait()
            try:
                service.create(CreateCustomer("A", email, uuid.uuid4()), CommandContext("race"))
                outcomes.append("created")
            except ReservationTaken:
                outcomes.append("taken")

        threads = [threading.Thread(target=attempt, args=(barrier, f"race{round_}@example.com")) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    pool.close()
    assert sorted(outcomes) == ["created"] * 5 + ["taken"] * 5
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 5
        assert conn.execute("SELECT count(*) FROM reservations").fetchone()[0] == 5
