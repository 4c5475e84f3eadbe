"""Idempotency-Key on POST and DELETE: the original response again, nothing
appended twice, also when the retries arrive together."""

import dataclasses
import threading
import uuid

import psycopg

from chalicelib.application import CustomerApplication
from chalicelib.eventstore.events import CommandContext
from chalicelib.usecases.unit_of_work import PostgresUnitsOfWork
from tests.support.builders import count
from tests.support.waiting import run_in_threads


def create(client, key, email="ada@example.com", name="Ada"):
    return client.create(name, email, {"Idempotency-Key": key}, expect=None)


def test_a_retried_creation_gets_the_original_response_and_appends_nothing(client, db):
    first = create(client, "key-1")
    again = create(client, "key-1")
    assert first.status_code == again.status_code == 201
    assert again.json_body == first.json_body  # the same customer, not a second one
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["ETag"] == first.headers["ETag"]
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert count(db) == 1 and count(db, "outbox") == 1


def test_a_retried_delete_is_204_again_not_404(client, db):
    customer_id = create(client, "key-c").json_body["id"]
    first = client.http.delete(f"/customer/{customer_id}", headers={"Idempotency-Key": "key-d"})
    again = client.http.delete(f"/customer/{customer_id}", headers={"Idempotency-Key": "key-d"})
    assert first.status_code == again.status_code == 204
    assert again.headers["ETag"] == '"2"'
    assert client.http.delete(f"/customer/{customer_id}").status_code == 404  # without the key
    assert count(db) == 2


def test_a_retried_email_change_is_not_applied_twice(client, db):
    customer_id = create(client, "key-e").json_body["id"]
    for _ in range(2):
        response = client.change_email(customer_id, "new@example.com", {"Idempotency-Key": "key-f"})
        assert response.status_code == 200 and response.json_body["version"] == 2
    assert count(db) == 2


def test_the_same_key_for_a_different_request_is_422(client, db):
    create(client, "key-2")
    other = create(client, "key-2", email="bob@example.com", name="Bob")
    assert other.status_code == 422
    assert other.json_body["Code"] == "UnprocessableEntityError" and "key-2" in other.json_body["Message"]
    assert count(db) == 1


def test_a_failed_command_is_not_remembered(client, db):
    create(client, "key-3", email="taken@example.com")
    refused = create(client, "key-4", email="taken@example.com")
    assert refused.status_code == 409
    assert count(db, "idempotency_keys") == 1  # key-4 rolled back with its command
    retried = create(client, "key-4", email="taken@example.com")
    assert retried.status_code == 409 and "Idempotent-Replayed" not in retried.headers  # ran again


def test_an_expired_key_can_be_used_again(client, db):
    first = create(client, "key-6")
    with psycopg.connect(db) as conn:
        conn.execute("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")
        conn.execute("DELETE FROM reservations")  # let the same email be taken again
    again = create(client, "key-6")
    assert again.status_code == 201 and again.json_body["id"] != first.json_body["id"]


def test_keys_expire_after_the_configured_time(application, db):
    two_hours = CustomerApplication(dataclasses.replace(application.settings, idempotency_ttl_hours=2))
    try:
        two_hours.create_customer("Ada", "ada@example.com", CommandContext("ttl"), idempotency_key="key-7")
    finally:
        two_hours.close()
    with psycopg.connect(db) as conn:
        (hours,) = conn.execute("SELECT extract(epoch FROM expires_at - created_at) / 3600"
                                " FROM idempotency_keys").fetchone()
    assert round(float(hours), 3) == 2


def test_a_bad_key_is_400(client, db):
    assert create(client, "x" * 256).status_code == 400
    assert count(db) == 0


def test_concurrent_retries_under_one_key_execute_exactly_once(pool, db):
    units = PostgresUnitsOfWork(pool, None, snapshot_every=None, idempotency_ttl_seconds=3600)
    executions, results = [], []
    barrier = threading.Barrier(6)

    def retry():
        barrier.wait()
        with units.begin(transaction=True) as unit:
            stored = unit.answered("same-key", "same-request")
            if stored is not None:
                results.append((stored, True))
                return
            executions.append(1)
            answer = {"id": str(uuid.uuid4()), "version": 1}
            unit.keep_answer("same-key", answer)
        results.append((answer, False))

    run_in_threads(retry, [()] * 6)
    assert len(executions) == 1
    assert len({r[0]["id"] for r in results}) == 1
    assert sorted(r[1] for r in results) == [False] + [True] * 5


def test_concurrent_keyed_creations_store_one_customer(application, db):
    results = []
    barrier = threading.Barrier(6)

    def retry():
        barrier.wait()
        results.append(application.create_customer("Ada", "ada@example.com", CommandContext("retry"),
                                                    idempotency_key="same-key"))

    run_in_threads(retry, [()] * 6)
    assert len({r.customer_id for r in results}) == 1
    assert sorted(r.replayed for r in results) == [False] + [True] * 5
    assert count(db) == 1


def test_the_same_key_with_the_same_body_and_another_if_match_is_422(client, db):
    customer_id = create(client, "key-c1").json_body["id"]
    first = client.change_email(customer_id, "new@example.com", {"Idempotency-Key": "key-m", "If-Match": '"1"'})
    assert first.status_code == 200
    other = client.change_email(customer_id, "new@example.com", {"Idempotency-Key": "key-m", "If-Match": '"2"'})
    assert other.status_code == 422 and "key-m" in other.json_body["Message"]
    unconditional = client.change_email(customer_id, "new@example.com", {"Idempotency-Key": "key-m"})
    assert unconditional.status_code == 422
    assert count(db) == 2


def test_a_key_used_to_delete_one_customer_does_not_delete_another(client, db):
    first = create(client, "create-a", "a@example.com").json_body["id"]
    second = create(client, "create-b", "b@example.com").json_body["id"]
    assert client.http.delete(f"/customer/{first}", headers={"Idempotency-Key": "delete-1"}).status_code == 204
    again = client.http.delete(f"/customer/{second}", headers={"Idempotency-Key": "delete-1"})
    assert again.status_code == 422 and "Idempotent-Replayed" not in again.headers
    assert client.http.get(f"/customer/{second}?consistency=strong").status_code == 200  # not deleted
    assert count(db) == 3
