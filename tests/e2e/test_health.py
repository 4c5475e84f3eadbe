"""GET /health: database, outbox backlog and projection lag; 200 when
healthy, 503 with the reasons when not; never any customer data."""

import dataclasses
import json

import psycopg

from chalicelib.application import CustomerApplication
from tests.support.api import serving
from tests.support.msk import msk_event, stored_events


def project_everything(client, db):
    client.lambda_.invoke("project_customers", msk_event(stored_events(db)))


def publish_everything(db):
    with psycopg.connect(db) as conn:
        conn.execute("UPDATE outbox SET published_at = clock_timestamp()")


def test_healthy_when_caught_up(client, db):
    customer_id = client.create_id()
    publish_everything(db)
    project_everything(client, db)
    response = client.get("/health")
    assert response.status_code == 200, response.body
    body = response.json_body
    assert body["status"] == "ok" and body["database"] == "reachable"
    assert body["outbox"] == {"unpublished": 0, "oldest_age_seconds": None, "parked": 0}
    assert body["projection"] == {"events_behind": 0, "lag_seconds": None}
    assert customer_id not in response.body.decode() and "ada@example.com" not in response.body.decode()


def test_a_fresh_backlog_and_a_read_model_just_behind_are_still_healthy(client, db):
    client.create_id()
    body = client.get("/health").json_body
    assert body["status"] == "ok"
    assert body["outbox"]["unpublished"] == 1 and body["projection"]["events_behind"] == 1


def test_an_old_outbox_backlog_is_503_with_the_reason(client, db):
    client.create_id()
    project_everything(client, db)
    with psycopg.connect(db) as conn:
        conn.execute("UPDATE outbox SET created_at = created_at - interval '10 minutes'")
    response = client.get("/health")
    assert response.status_code == 503
    body = response.json_body
    assert body["status"] == "unhealthy" and body["outbox"]["oldest_age_seconds"] >= 600
    assert [r for r in body["reasons"] if "outbox" in r]


def test_a_read_model_far_behind_the_store_is_503(client, db):
    client.create_id()
    publish_everything(db)
    with psycopg.connect(db) as conn:  # the event is long committed, and not projected
        conn.execute("UPDATE events SET recorded_at = recorded_at - interval '10 minutes'")
    body = client.get("/health").json_body
    assert body["status"] == "unhealthy"
    assert body["projection"]["events_behind"] == 1 and body["projection"]["lag_seconds"] >= 600
    assert [r for r in body["reasons"] if "read model" in r]


def test_an_unreachable_database_is_503_without_its_address(client, application):
    settings = dataclasses.replace(application.settings,
                                   database_url="postgresql://service:s3cret@127.0.0.1:1/customers")
    with serving(CustomerApplication(settings)):
        response = client.get("/health")
    assert response.status_code == 503
    body = json.loads(response.body)
    assert body["database"] == "unreachable" and body["reasons"]
    assert "s3cret" not in response.body.decode() and "127.0.0.1" not in response.body.decode()


def test_health_is_never_cached(client):
    assert client.get("/health").headers["Cache-Control"] == "no-store"
