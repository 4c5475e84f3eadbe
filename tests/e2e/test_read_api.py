"""Queries: the read model answers; the event store answers when the read
model is behind what the caller asks for."""

import uuid

import pytest

from tests.support.deliveries import delivered_batch, stored_events


def create(client, email="ada@example.com"):
    return client.create("Ada", email).json_body


def change_email(client, customer_id, email):
    return client.change_email(customer_id, email)


def project_everything(client, db):
    client.lambda_.invoke("project_customers", delivered_batch(stored_events(db)))


def test_get_reads_the_read_model(client, db):
    customer = create(client)
    project_everything(client, db)
    response = client.http.get(f"/customer/{customer['id']}")
    assert response.headers["X-Read-Source"] == "read-model"
    body = response.json_body
    assert (body["email"], body["version"]) == ("ada@example.com", 1)
    assert body["created_at"] == body["updated_at"]
    assert response.headers["ETag"] == '"1"'


def test_a_behind_read_model_answers_unless_asked_for_more(client, db):
    customer = create(client)
    project_everything(client, db)
    changed = change_email(client, customer["id"], "new@example.com").json_body  # not projected yet
    def read(query: str = "") -> tuple[str, int, dict]:
        answer = client.http.get(f"/customer/{customer['id']}{query}")
        return answer.headers["X-Read-Source"], answer.json_body["version"], answer.json_body

    assert read()[:2] == ("read-model", 1)  # stale
    source, version, mine = read(f"?min_version={changed['version']}")
    assert (source, version, mine["email"]) == ("event-store", 2, "new@example.com")
    assert mine["updated_at"] > mine["created_at"]
    assert read("?consistency=strong")[:2] == ("event-store", 2)
    assert read("?min_version=1")[:2] == ("read-model", 1)


def test_both_sources_give_the_same_answer(client, db):
    customer = create(client)
    change_email(client, customer["id"], "b@example.com")
    project_everything(client, db)
    from_model = client.http.get(f"/customer/{customer['id']}").json_body
    from_store = client.http.get(f"/customer/{customer['id']}?consistency=strong").json_body
    assert from_model == from_store


def test_a_customer_not_yet_projected_is_read_from_the_store(client, db):
    customer = create(client)
    response = client.http.get(f"/customer/{customer['id']}")
    assert response.status_code == 200 and response.headers["X-Read-Source"] == "event-store"


def test_a_deleted_customer_is_404_from_either_source(client, db):
    customer = create(client)
    client.http.delete(f"/customer/{customer['id']}")
    assert client.http.get(f"/customer/{customer['id']}").status_code == 404
    project_everything(client, db)
    assert client.http.get(f"/customer/{customer['id']}").status_code == 404
    assert client.http.get(f"/customer/{customer['id']}?min_version=5").status_code == 404
    assert client.http.get("/customers?email=ada@example.com").json_body == {"customers": []}


def test_find_by_email(client, db):
    ada, bob = create(client), create(client, "bob@example.com")
    change_email(client, bob["id"], "robert@example.com")
    project_everything(client, db)
    found = client.http.get("/customers?email=ada@EXAMPLE.com")  # domains compare without case
    assert found.status_code == 200
    assert [c["id"] for c in found.json_body["customers"]] == [ada["id"]]
    assert client.http.get("/customers?email=bob@example.com").json_body == {"customers": []}
    assert [c["id"] for c in client.http.get("/customers?email=robert@example.com").json_body["customers"]] == [
        bob["id"]]


@pytest.mark.parametrize("query, message", [
    ("", "give the email"),
    ("?email=not-an-email", "not a valid email"),
])
def test_find_needs_a_valid_email(client, db, query, message):
    response = client.http.get(f"/customers{query}")
    assert response.status_code == 400 and message in response.json_body["Message"]


@pytest.mark.parametrize("query", ["?min_version=0", "?min_version=abc", "?min_version=-1", "?consistency=maybe"])
def test_bad_read_options_are_400(client, db, query):
    customer = create(client)
    response = client.http.get(f"/customer/{customer['id']}{query}")
    assert response.status_code == 400


def test_unknown_customer_is_404(client, db):
    assert client.http.get(f"/customer/{uuid.uuid4()}").status_code == 404
