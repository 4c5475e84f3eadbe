"""The HTTP API through chalice.test.Client, on a real PostgreSQL."""

import dataclasses
import uuid

import pytest

from chalicelib.application import CustomerApplication
from chalicelib.eventstore.store import InMemoryEventStore
from tests.support.api import JSON, serving
from tests.support.builders import stored_events
from tests.support.fakes import FakeUnitsOfWork, RacingStore


def test_create_answers_201_with_location_and_etag(client, db):
    response = client.create()
    body = response.json_body
    assert uuid.UUID(body["id"])
    assert body == {"id": body["id"], "name": "Ada Lovelace", "email": "ada@example.com", "version": 1}
    assert response.headers["Location"] == f"/customer/{body['id']}"
    assert response.headers["ETag"] == '"1"'
    stored = [(str(e.stream_id), e.version, e.event_type) for e in stored_events(db)]
    assert stored == [(body["id"], 1, "CustomerCreated")]


def test_get_answers_current_state(client):
    customer_id = client.create().json_body["id"]
    response = client.http.get(f"/customer/{customer_id}")
    assert response.status_code == 200
    assert response.json_body["email"] == "ada@example.com"
    assert response.headers["ETag"] == '"1"'


def test_get_unknown_is_404_in_chalice_shape(client):
    response = client.http.get(f"/customer/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.json_body["Code"] == "NotFoundError"


def test_change_email_answers_new_version_and_same_email_appends_nothing(client, db):
    customer_id = client.create().json_body["id"]
    changed = client.post(f"/customer/{customer_id}/email", {"email": "ada@engine.org"})
    assert changed.status_code == 200
    assert changed.json_body["email"] == "ada@engine.org" and changed.json_body["version"] == 2
    assert changed.headers["ETag"] == '"2"'
    again = client.post(f"/customer/{customer_id}/email", {"email": "ada@engine.org"})
    assert again.status_code == 200 and again.json_body["version"] == 2
    assert [e.event_type for e in stored_events(db)] == ["CustomerCreated", "CustomerEmailChanged"]


def test_delete_then_404_everywhere(client, db):
    customer_id = client.create().json_body["id"]
    deleted = client.http.delete(f"/customer/{customer_id}")
    assert deleted.status_code == 204 and deleted.headers["ETag"] == '"2"'
    assert client.http.get(f"/customer/{customer_id}").status_code == 404
    assert client.post(f"/customer/{customer_id}/email", {"email": "x@example.com"}).status_code == 404
    assert client.http.delete(f"/customer/{customer_id}").status_code == 404
    assert [e.event_type for e in stored_events(db)] == ["CustomerCreated", "CustomerDeleted"]


def test_if_match_on_the_current_version_succeeds(client):
    customer_id = client.create().json_body["id"]
    response = client.post(f"/customer/{customer_id}/email", {"email": "b@example.com"}, {"If-Match": '"1"'})
    assert response.status_code == 200
    assert client.http.delete(f"/customer/{customer_id}", headers={"If-Match": '"2"'}).status_code == 204


def test_if_match_on_an_old_version_is_412_and_changes_nothing(client, db):
    customer_id = client.create().json_body["id"]
    client.post(f"/customer/{customer_id}/email", {"email": "b@example.com"})
    stale = client.post(f"/customer/{customer_id}/email", {"email": "c@example.com"}, {"If-Match": '"1"'})
    assert stale.status_code == 412
    assert stale.json_body["Code"] == "PreconditionFailedError"
    assert "version 2" in stale.json_body["Message"]
    assert client.http.delete(f"/customer/{customer_id}", headers={"If-Match": '"1"'}).status_code == 412
    assert len(stored_events(db)) == 2


def test_correlation_id_is_stored_and_echoed(client, db):
    response = client.create(headers={"X-Correlation-Id": "order-flow-42"})
    assert response.headers["X-Correlation-Id"] == "order-flow-42"
    metadata = stored_events(db)[0].metadata
    assert metadata["correlation_id"] == "order-flow-42"
    assert metadata["causation_id"] and metadata["event_id"] and metadata["occurred_at"]


def test_correlation_id_is_generated_when_absent_also_on_errors(client, db):
    created = client.create()
    generated = created.headers["X-Correlation-Id"]
    assert uuid.UUID(generated)
    assert stored_events(db)[0].metadata["correlation_id"] == generated
    missing = client.http.get(f"/customer/{uuid.uuid4()}")
    assert uuid.UUID(missing.headers["X-Correlation-Id"])


CREATE_BAD = [
    ("{", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ({"name": "Ada"}, "missing field(s): email"),
    ({"email": "a@example.com"}, "missing field(s): name"),
    ({"name": "Ada", "email": "a@example.com", "vip": True}, "unknown field(s): vip"),
    ({"name": 7, "email": "a@example.com"}, "name must be a string"),
    ({"name": "Ada", "email": ["a@example.com"]}, "email must be a string"),
    ({"name": "", "email": "a@example.com"}, "name: must not be empty"),
    ({"name": "x" * 201, "email": "a@example.com"}, "at most 200 characters"),
    ({"name": "Ada", "email": "not-an-email"}, "not a valid email"),
    ({"name": "Ada", "email": "a@" + "b" * 250 + ".com"}, "at most 254 characters"),
]


@pytest.mark.parametrize("body, message", CREATE_BAD)
def test_bad_create_is_400_with_a_reason_and_stores_nothing(client, db, body, message):
    response = client.post("/customer", body)
    assert response.status_code == 400, response.body
    assert response.json_body["Code"] == "BadRequestError"
    assert message in response.json_body["Message"]
    assert stored_events(db) == []


def test_empty_body_is_400(client, db):
    response = client.http.post("/customer", headers=JSON)
    assert response.status_code == 400
    assert stored_events(db) == []


def test_bad_email_change_is_400_and_stores_nothing(client, db):
    customer_id = client.create().json_body["id"]
    for body in ({"email": "nope"}, {"mail": "a@example.com"}, {"email": 3}, "{oops"):
        response = client.post(f"/customer/{customer_id}/email", body)
        assert response.status_code == 400, body
    assert len(stored_events(db)) == 1


@pytest.mark.parametrize("bad_id", ["42", "not-a-uuid", "123e4567e89b12d3a456426614174000"])
def test_id_that_is_not_a_uuid_is_400(client, db, bad_id):
    for response in (
        client.http.get(f"/customer/{bad_id}"),
        client.post(f"/customer/{bad_id}/email", {"email": "a@example.com"}),
        client.http.delete(f"/customer/{bad_id}"),
    ):
        assert response.status_code == 400
        assert "not a customer id" in response.json_body["Message"]


def test_bad_if_match_is_400(client, db):
    customer_id = client.create().json_body["id"]
    response = client.http.delete(f"/customer/{customer_id}", headers={"If-Match": "yesterday"})
    assert response.status_code == 400 and "If-Match" in response.json_body["Message"]
    assert len(stored_events(db)) == 1


def test_bad_correlation_id_is_400_and_stores_nothing(client, db):
    response = client.post("/customer", {"name": "Ada", "email": "a@example.com"},
                    {"X-Correlation-Id": "has spaces in it"})
    assert response.status_code == 400
    assert "X-Correlation-Id" in response.json_body["Message"]
    assert stored_events(db) == []


def test_wrong_content_type_is_415(client, db):
    response = client.http.post("/customer", body="name=Ada", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert stored_events(db) == []


def test_a_command_that_keeps_losing_the_race_is_409_and_stores_nothing(client, application):
    store = RacingStore(races=0)
    with serving(CustomerApplication(dataclasses.replace(application.settings, command_max_retries=2),
                                     command_units=FakeUnitsOfWork(store))):
        customer_id = client.create().json_body["id"]
        store.races = 10  # another writer gets in first, every time
        response = client.change_email(customer_id, "mine@example.com")
    assert response.status_code == 409
    assert response.json_body["Code"] == "ConflictError"
    assert "try again" in response.json_body["Message"]
    stored = InMemoryEventStore.load(store, uuid.UUID(customer_id))
    assert "mine@example.com" not in [e.data.get("email") for e in stored]


def test_a_creation_whose_id_is_taken_answers_409_saying_so(client, monkeypatch):
    import chalicelib.application

    taken = uuid.uuid4()
    monkeypatch.setattr(chalicelib.application.uuid, "uuid4", lambda: taken)
    client.create("Ada", "ada@example.com")
    again = client.create("Eve", "eve@example.com", expect=409)
    assert again.json_body["Message"] == f"customer {taken} already exists"
