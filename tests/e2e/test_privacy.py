"""What a security review found, each shown by the way it was reproduced:
values a caller types that look sealed, personal data at rest outside the
events, a skipped event taken for lag, a rebuild stopped by one customer."""

import base64
import json
import os
import uuid
from pathlib import Path

import psycopg
import pytest

from chalicelib.auth import OPERATE
from ops.__main__ import main as ops
from tests.support.builders import stored_events
from tests.support.deliveries import delivered_batch, read_model

pytestmark = pytest.mark.usefixtures("encryption")

LOOKALIKE = "pd1:Qwerty Plain"


def operator(issuer) -> dict:
    return {"Authorization": f"Bearer {issuer.token(scopes=OPERATE)}"}


def publish_and_project(application, sent):
    sent.clear()
    result = application.outbox_relay().run_once()
    application.project_kafka_batch(delivered_batch(list(sent.events)))
    return result


def test_a_name_that_looks_sealed_is_sealed_like_any_other_and_reads_back_everywhere(
        application, client, eraser, db, issuer, capsys, sent):
    customer_id = client.create_id("lookalike@example.com", LOOKALIKE)
    with psycopg.connect(db) as conn:
        (stored,) = conn.execute("SELECT data FROM events WHERE stream_id = %s", (customer_id,)).fetchone()
    assert stored["name"] != LOOKALIKE and set(stored["name"]) == {"sealed"}  # stored sealed, not in clear
    assert client.http.get(f"/customer/{customer_id}?consistency=strong").json_body["name"] == LOOKALIKE
    assert client.http.get(f"/customer/{customer_id}/events").json_body["events"][0]["data"]["name"] == LOOKALIKE
    assert client.http.get(f"/customer/{customer_id}?version=1").json_body["name"] == LOOKALIKE
    assert client.change_email(customer_id, "pd1:x@example.com").status_code == 400  # not an email, still a 400
    assert client.change_email(customer_id, "other@example.com").status_code == 200

    result = publish_and_project(application, sent)
    assert (result.published, result.parked) == (2, 0)
    assert [e.data.get("name") for e in sent.events][:1] == [LOOKALIKE]
    assert client.http.get(f"/customer/{customer_id}").json_body["name"] == LOOKALIKE
    assert client.http.get("/health").status_code == 200
    assert ops(["rebuild"]) == 0
    assert client.http.get(f"/customer/{customer_id}").json_body["name"] == LOOKALIKE
    assert eraser.http.delete(f"/customer/{customer_id}/personal-data").status_code == 204
    assert client.http.get(f"/customer/{customer_id}/events").json_body["events"][0]["data"]["name"] is None


def first_format_seal(key, stream_id, field: str, value: str) -> str:
    """A value as the service's first format sealed it: text, bound to stream and field."""
    nonce = os.urandom(12)
    sealed = key.encrypt(nonce, value.encode(), f"{stream_id}:{field}".encode())
    return "pd1:" + base64.b64encode(nonce + sealed).decode()


def test_values_in_the_first_format_and_lookalikes_stored_in_clear_are_sealed_by_encrypt_events(
        application, client, db, capsys):
    sealed_then = uuid.UUID(client.create_id("first@example.com", "First Release"))
    in_clear_then = uuid.UUID(client.create_id("plain@example.com", "Plain Person"))
    personal = application.parts.personal_data()
    with psycopg.connect(db, autocommit=True) as conn:
        key = personal.keys.key_for(sealed_then, conn)
        # The first format, and a lookalike a caller typed, stored in clear back then.
        conn.execute("UPDATE events SET data = %s WHERE stream_id = %s", (json.dumps({
            "name": first_format_seal(key, sealed_then, "name", "First Release"),
            "email": first_format_seal(key, sealed_then, "email", "first@example.com")}), sealed_then))
        conn.execute("UPDATE events SET data = %s WHERE stream_id = %s",
                     (json.dumps({"name": LOOKALIKE, "email": "plain@example.com"}), in_clear_then))
        conn.execute("DELETE FROM snapshots")

    assert ops(["encrypt-events"]) == 0
    assert "of 2 customers" in capsys.readouterr().out
    for event in stored_events(db):
        assert all(set(event.data[f]) == {"sealed"} for f in ("name", "email")), event.data
    for cid, name in ((sealed_then, "First Release"), (in_clear_then, LOOKALIKE)):
        assert client.http.get(f"/customer/{cid}?consistency=strong").json_body["name"] == name
    assert ops(["encrypt-events"]) == 0
    assert "of 0 customers" in capsys.readouterr().out


def test_a_sealed_value_moved_to_another_event_of_its_customer_does_not_open(application, client, db):
    from cryptography.exceptions import InvalidTag

    customer_id = uuid.UUID(client.create_id("first@example.com", "Ada"))
    client.change_email(str(customer_id), "second@example.com")
    with psycopg.connect(db, autocommit=True) as conn:
        (first,) = conn.execute("SELECT data FROM events WHERE stream_id = %s AND version = 1",
                                (customer_id,)).fetchone()
        conn.execute("UPDATE events SET data = jsonb_set(data, '{email}', %s) WHERE stream_id = %s AND version = 2",
                     (json.dumps(first["email"]), customer_id))
    with pytest.raises(InvalidTag), application.parts.units().reading() as unit:
        unit.events.load(customer_id)


def test_a_skipped_event_is_not_lag_and_a_rebuild_reports_an_unreadable_customer_and_goes_on(
        application, client, db, issuer, capsys, sent):
    kept, broken = client.create_id("kept@example.com", "Kept"), client.create_id("broken@example.com", "Broken")
    with psycopg.connect(db, autocommit=True) as conn:
        # An event this code cannot read (a newer shape), the newest of its customer.
        conn.execute("INSERT INTO events (stream_id, stream_type, version, event_type, schema_version, data, metadata)"
                     " SELECT stream_id, stream_type, 2, 'CustomerEmailChanged', 99, '{}', metadata FROM events"
                     " WHERE stream_id = %s", (broken,))
        conn.execute("INSERT INTO outbox (global_position, stream_id) SELECT global_position, stream_id FROM events"
                     " WHERE stream_id = %s AND version = 2", (broken,))
    result = publish_and_project(application, sent)
    assert result.parked == 1
    (parked,) = application.parked_outbox_rows()
    assert ops(["outbox", "--skip", str(parked.outbox_id)]) == 0
    with psycopg.connect(db, autocommit=True) as conn:  # long since
        conn.execute("UPDATE events SET recorded_at = recorded_at - interval '1 hour'")
    details = client.get("/health/details", headers=operator(issuer)).json_body
    assert details["status"] == "ok" and details["projection"]["events_behind"] == 0, details

    capsys.readouterr()
    assert ops(["rebuild"]) == 0
    out = capsys.readouterr()
    assert f"could not read {broken}" in out.err and "CustomerEmailChanged v99" in out.err
    assert {str(row.id) for row in read_model(db)} == {kept, broken}  # the broken one keeps its row


def test_no_name_or_email_in_clear_in_any_file_of_the_database_nor_in_a_dead_letter(
        aws, dlq, application, client, db, sent):
    from devstack.kafka_source_events import KafkaRecord

    queue = dlq
    marker = f"zq{uuid.uuid4().hex[:12]}"
    name, email = f"Name {marker}", f"{marker}@example.com"
    created = client.create_id(email, name)
    keyed = client.create(f"Keyed {marker}", f"keyed.{marker}@example.com", headers={"Idempotency-Key": "k-1"})
    assert client.create(f"Keyed {marker}", f"keyed.{marker}@example.com",
                         headers={"Idempotency-Key": "k-1"}).headers["Idempotent-Replayed"] == "true"
    changed = client.change_email(created, f"new.{marker}@example.com", headers={"Idempotency-Key": "k-2"})
    assert changed.status_code == 200
    publish_and_project(application, sent)
    assert client.http.get(f"/customer/{created}").json_body["email"] == f"new.{marker}@example.com"
    found = client.post("/customers/search", {"email": f"keyed.{marker}@example.com"}).json_body["customers"]
    assert [c["id"] for c in found] == [keyed.json_body["id"]] and found[0]["name"] == f"Keyed {marker}"
    poison = KafkaRecord("customer-events", 0, 7, 0, created.encode(), f"not JSON: {name} {email}".encode(), {})
    application.project_kafka_batch(delivered_batch([], extra=[poison]))

    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        (data_directory,) = conn.execute("SHOW data_directory").fetchone()
    files = [path for path in Path(data_directory).rglob("*") if path.is_file()]
    assert len(files) > 100 and any("pg_wal" in str(path) for path in files)
    holding = [str(path) for path in files if marker.encode() in path.read_bytes()]
    assert holding == []
    bodies = [m["Body"] for m in aws("sqs").receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]]
    assert len(bodies) == 1 and marker not in bodies[0]
