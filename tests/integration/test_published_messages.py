"""Every message the relay publishes validates against /asyncapi.json: each
event type, erased customers' events included, old stored versions as they
are published (upcast), and the first release's messages against the
versions they were. Real broker, the relay's own publisher."""

import json
import uuid

import psycopg
import pytest
from chalice.test import Client
from jsonschema import Draft7Validator, FormatChecker

from app import app
from chalicelib.api import asyncapi
from chalicelib.domain.customer import registry
from tests.support.api import Api
from tests.support.kafka import read_topic

pytestmark = pytest.mark.usefixtures("encryption", "signed_messages")


def check(message: dict, headers: dict) -> tuple[str, int]:
    """The message's (type, version), once it validated against its schema in the document."""
    document = asyncapi.document()
    key = (message["type"], message.get("schemaversion", 1))
    spec = document["components"]["messages"][asyncapi.message_name(*key)]
    errors = [e.message for e in Draft7Validator(spec["payload"], format_checker=FormatChecker()).iter_errors(message)]
    header_schema = document["components"]["schemas"]["headers"]
    errors += [e.message for e in Draft7Validator(header_schema).iter_errors(headers)]
    assert errors == [], (key, message)
    return key


def test_every_message_published_validates_against_the_document(application, client, issuer, db, topic,
                                                               kafka_bootstrap):
    with Client(app) as http:
        eraser = Api(http, token=issuer.token(subject="dpo", scopes="customers:erase customers:read"))
        kept = client.create_id("kept@example.com", "Kept Person")
        assert client.change_email(kept, "kept@example.org").status_code == 200
        deleted = client.create_id("deleted@example.com", "Deleted Person")
        assert client.delete(f"/customer/{deleted}").status_code == 204
        erased = client.create_id("erased@example.com", "Erased Person")
        assert client.change_email(erased, "erased@example.org").status_code == 200
        assert eraser.http.delete(f"/customer/{erased}/personal-data").status_code == 204
    # An email change recorded by the first release (schema version 1, in clear).
    with psycopg.connect(db) as conn:
        version = conn.execute("SELECT max(version) FROM events WHERE stream_id = %s", (kept,)).fetchone()[0]
    from chalicelib.eventstore.events import Metadata, NewEvent
    from chalicelib.eventstore.postgres import PostgresEventStore

    with psycopg.connect(db, autocommit=True) as conn:
        PostgresEventStore(conn).append(uuid.UUID(kept), "Customer", version, [NewEvent(
            "CustomerEmailChanged", 1, {"email": "kept@example.net"}, Metadata.new("old-release", None).to_dict())])

    result = application.outbox_relay().run_once()
    assert result.published == 8 and not result.parked
    records = read_topic(kafka_bootstrap, topic, expected=8)
    seen = [check(json.loads(r.value), {k: v.decode() for k, v in r.headers}) for r in records]
    assert set(seen) == {(cls.event_type, cls.schema_version) for cls in registry.event_classes()}
    erased_messages = [json.loads(r.value) for r in records if r.key.decode() == erased]
    assert [m["data"] for m in erased_messages[:2]] == [{"name": None, "email": None},
                                                        {"email": None, "previous_email": None}]
    upcast = [json.loads(r.value) for r in records if json.loads(r.value)["correlationid"] == "old-release"]
    assert [(m["type"], m["schemaversion"], m["data"]["previous_email"]) for m in upcast] == [
        ("CustomerEmailChanged", 2, None)]


def test_the_first_releases_messages_validate_against_the_versions_they_were():
    """What consumers reading the topic from its start meet: no schemaversion
    (version 1), no actor, and an email change without the email it replaced."""
    first_release = {
        "specversion": "1.0", "id": str(uuid.uuid4()), "source": "/customer-service", "type": "CustomerEmailChanged",
        "subject": str(uuid.uuid4()), "time": "2026-01-05T10:00:00.000000+00:00",
        "datacontenttype": "application/json", "data": {"email": "ada@example.org"}, "streamtype": "Customer",
        "streamversion": 2, "position": 17, "correlationid": "c-1", "causationid": None}
    assert check(first_release, {"content-type": "application/cloudevents+json; charset=UTF-8",
                                 "event-type": "CustomerEmailChanged"}) == ("CustomerEmailChanged", 1)
    wrong = {**first_release, "data": {"email": 42}}
    with pytest.raises(AssertionError):
        check(wrong, {"content-type": "application/cloudevents+json; charset=UTF-8", "event-type": "x"})
