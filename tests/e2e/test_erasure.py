"""The right to erasure by crypto-shredding: personal data stored only
encrypted (KMS, emulated by moto in process), erased by deleting the
customer's key, and nowhere to be found afterwards."""

import json
import uuid

import psycopg
import pytest
from chalice.test import Client

import app as app_module
from app import app
from chalicelib.eventstore.events import CommandContext
from ops.__main__ import main as ops
from tests.support.api import Api
from tests.support.builders import copy_key, count, stored_events
from tests.support.deliveries import delivered_batch
from tests.support.pgtools import dump

NAME, FIRST, SECOND = "Ada Lovelace", "ada@example.com", "ada@analytical-engine.org"

pytestmark = pytest.mark.usefixtures("encryption")


def readable(application, db):
    """The stored events made readable, as the relay publishes them."""
    with application.parts.units().reading() as unit:
        return [unit.open_event(e) for e in stored_events(db)]


def test_after_erasure_neither_the_name_nor_any_email_is_in_the_database_or_any_answer(
        application, client, eraser, db):
    customer_id = client.create_id(FIRST, NAME)
    changed = client.change_email(customer_id, SECOND, headers={"Idempotency-Key": "change-1"})
    assert changed.status_code == 200
    application.project_kafka_batch(delivered_batch(readable(application, db)))
    assert client.http.get(f"/customer/{customer_id}").json_body["name"] == NAME
    assert NAME not in dump(db) and FIRST not in dump(db)  # sealed everywhere, also before erasure

    assert eraser.http.delete(f"/customer/{customer_id}/personal-data").status_code == 204

    everything = dump(db)
    for personal in (NAME, FIRST, SECOND, "analytical-engine"):
        assert personal not in everything
    assert client.http.get(f"/customer/{customer_id}").status_code == 404
    assert client.http.get(f"/customer/{customer_id}?consistency=strong").status_code == 404
    history = client.http.get(f"/customer/{customer_id}/events").json_body["events"]
    assert [e["type"] for e in history] == ["CustomerCreated", "CustomerEmailChanged", "CustomerPersonalDataErased"]
    assert history[0]["data"] == {"name": None, "email": None} and history[0]["erased"] is True
    assert history[1]["data"] == {"email": None, "previous_email": None} and history[1]["erased"] is True
    then = client.http.get(f"/customer/{customer_id}?version=1").json_body
    assert (then["name"], then["email"], then["erased"]) == (None, None, True)
    assert client.http.get(f"/customers?email={FIRST}").json_body == {"customers": []}
    answers = json.dumps([client.http.get(f"/customer/{customer_id}/events").json_body, then])
    assert NAME not in answers and FIRST not in answers and SECOND not in answers
    # The emails are free again.
    assert client.create(email=FIRST).status_code == 201
    assert client.create(email=SECOND).status_code == 201


@pytest.fixture
def frequent_snapshots(monkeypatch):
    monkeypatch.setenv("CUSTOMER_SNAPSHOT_EVERY", "2")


def test_events_and_snapshots_never_hold_the_name_or_an_email_in_clear(frequent_snapshots, application, client, db):
    assert application.settings.customer_snapshot_every == 2
    customer_id = client.create_id(FIRST, NAME)
    for n in range(3):
        assert client.change_email(customer_id, f"ada{n}@example.com").status_code == 200
    with psycopg.connect(db) as conn:
        stored = [row[0] for row in conn.execute("SELECT data::text FROM events")]
        snapshots = [row[0] for row in conn.execute("SELECT state::text FROM snapshots")]
        reservations = [row[0] for row in conn.execute("SELECT key FROM reservations")]
    assert snapshots, "a snapshot was taken"
    for text in stored + snapshots + reservations:
        assert "Ada" not in text and "@" not in text and "example.com" not in text
    assert all('{"sealed": ' in text for text in stored + snapshots)
    assert reservations[0].startswith("hmac-sha256:")
    # And they read back whole.
    assert client.http.get(f"/customer/{customer_id}?consistency=strong").json_body["email"] == "ada2@example.com"
    assert client.http.get(f"/customer/{customer_id}?version=1").json_body["name"] == NAME


def test_erasure_without_the_erase_scope_is_refused_and_changes_nothing(client, db, issuer):
    customer_id = client.create_id(FIRST, NAME)
    with Client(app) as raw:
        for scopes in ("customers:read customers:write", "customers:read"):
            api = Api(raw, token=issuer.token(subject="someone", scopes=scopes))
            answer = api.http.delete(f"/customer/{customer_id}/personal-data")
            assert answer.status_code == 403 and "customers:erase" in answer.headers["WWW-Authenticate"]
        assert Api(raw).http.delete(f"/customer/{customer_id}/personal-data").status_code == 401
    assert count(db) == 1 and count(db, "stream_keys") == 1
    assert client.http.get(f"/customer/{customer_id}?consistency=strong").json_body["name"] == NAME


def test_erasure_is_idempotent_works_for_deleted_customers_and_404s_for_unknown_ones(client, eraser, db):
    customer_id = client.create_id(FIRST, NAME)
    assert client.http.delete(f"/customer/{customer_id}").status_code == 204
    assert eraser.http.delete(f"/customer/{customer_id}/personal-data").status_code == 204
    assert eraser.http.delete(f"/customer/{customer_id}/personal-data").status_code == 204
    assert count(db) == 3  # created, deleted, erased once
    assert eraser.http.delete(f"/customer/{uuid.uuid4()}/personal-data").status_code == 404
    assert eraser.http.delete("/customer/not-an-id/personal-data").status_code == 400
    # An erased customer takes no more commands.
    assert client.change_email(customer_id, SECOND).status_code == 404


def test_events_still_in_the_outbox_are_published_without_personal_data(application, client, eraser, db, sent):
    customer_id = client.create_id(FIRST, NAME)
    client.change_email(customer_id, SECOND)
    assert eraser.http.delete(f"/customer/{customer_id}/personal-data").status_code == 204
    published = sent.events
    assert application.outbox_relay().run_once().published == 3
    assert [e.event_type for e in published] == ["CustomerCreated", "CustomerEmailChanged",
                                                 "CustomerPersonalDataErased"]
    assert published[0].data == {"name": None, "email": None}
    assert published[0].metadata["personal_data_erased"] is True
    assert NAME not in json.dumps([e.data for e in published])


def test_messages_carry_the_personal_data_in_clear_for_consumers(application, client, db, sent):
    client.create_id(FIRST, NAME)
    published = sent.events
    application.outbox_relay().run_once()
    assert published[0].data == {"name": NAME, "email": FIRST}


def test_a_taken_email_is_refused_by_its_hash_and_named_in_clear(client):
    client.create_id(FIRST, NAME)
    refused = client.create(email=FIRST, expect=409)
    assert refused.json_body["Message"] == f"{FIRST} is already the email of another customer"


def test_a_warm_container_asks_kms_once_not_per_command(application, client):
    for n in range(20):
        customer_id = client.create_id(f"c{n}@example.com")
        client.change_email(customer_id, f"d{n}@example.com")
    assert application.parts.personal_data().keys.kms_calls == 1


def test_events_stored_in_clear_are_encrypted_in_place_by_the_operator_command(
        db, commands, monkeypatch, capsys):
    # Stored before encryption: through the handlers with no encryption at all.
    from chalicelib.domain.commands import ChangeEmail, CreateCustomer

    ids = [uuid.uuid4() for _ in range(3)]
    for n, cid in enumerate(ids):
        commands.create(CreateCustomer(name=f"Legacy {n}", email=f"legacy{n}@example.com", customer_id=cid),
                        CommandContext("old", "old"))
        commands.change_email(ChangeEmail(cid, f"later{n}@example.com"), CommandContext("old", "old"))
    assert "Legacy 0" in json.dumps([e.data for e in stored_events(db)])
    # The read model, as the projection wrote it before: no hash to find it by.
    from chalicelib.readmodel.projection import ProjectedEvent, project

    with psycopg.connect(db, autocommit=True) as conn:
        project(conn, [ProjectedEvent.from_recorded(e) for e in stored_events(db)], lambda cid, v: [])

    assert ops(["encrypt-events"]) == 0
    assert "encrypted the personal data of 3 customers" in capsys.readouterr().out
    text = json.dumps([e.data for e in stored_events(db)])
    assert "Legacy" not in text and "example.com" not in text
    with psycopg.connect(db) as conn:
        keys = [row[0] for row in conn.execute("SELECT key FROM reservations ORDER BY key")]
    assert all(key.startswith("hmac-sha256:") for key in keys) and len(keys) == 3
    with psycopg.connect(db) as conn:
        hashes = [row[0] for row in conn.execute("SELECT email_hash FROM customers_view")]
    assert len(hashes) == 3 and all(h and h.startswith("hmac-sha256:") for h in hashes)
    with psycopg.connect(db) as conn:
        rows = json.dumps([row for row in conn.execute("SELECT name, email FROM customers_view")])
    assert "Legacy" not in rows and "example.com" not in rows and '"sealed"' in rows
    # Run again: nothing left to do.
    assert ops(["encrypt-events"]) == 0
    assert "of 0 customers" in capsys.readouterr().out


def test_when_a_key_cannot_be_fetched_the_batch_waits_and_is_published_later_not_parked(application, client, db,
                                                                                         aws, sent):
    import boto3
    from botocore.config import Config

    client.create_id(FIRST, NAME)
    unreachable = boto3.client("kms", endpoint_url="http://127.0.0.1:1", config=Config(retries={"max_attempts": 1}))
    # A cold container whose KMS cannot be reached.
    cold = type(application)(application.settings, sender=sent,
                             aws=lambda service: unreachable if service == "kms" else aws(service))
    published = sent.events
    result = cold.outbox_relay().run_once()
    assert (result.published, result.parked, result.failures) == (0, 0, 1)
    cold.close()
    # KMS back: published, in clear for consumers.
    assert application.outbox_relay().run_once().published == 1
    assert published[0].data == {"name": NAME, "email": FIRST}


def test_commands_decide_on_the_plaintext_state_however_many_emails_came_before(client):
    customer_id = client.create_id(FIRST, NAME)
    for n in range(5):
        client.change_email(customer_id, f"ada{n}@example.com")
    # Changing to the current email changes nothing: the command read it in clear.
    same = client.change_email(customer_id, "ada4@example.com")
    assert (same.status_code, same.json_body["version"], same.json_body["name"]) == (200, 6, NAME)
    # Earlier emails were released by their hashes: they can be taken again.
    assert client.create(email="ada0@example.com").status_code == 201
    history = client.http.get(f"/customer/{customer_id}/events").json_body["events"]
    assert [e["data"].get("previous_email") for e in history[1:]] == [FIRST, "ada0@example.com", "ada1@example.com",
                                                                      "ada2@example.com", "ada3@example.com"]


def test_lookup_by_email_compares_the_keyed_hash_not_the_address(application, client, db):
    customer_id = client.create_id(FIRST, NAME)
    application.project_kafka_batch(delivered_batch(readable(application, db)))
    with psycopg.connect(db, autocommit=True) as conn:
        (stored,) = conn.execute("SELECT email_hash FROM customers_view").fetchone()
        # Only the displayed column changes: the lookup does not read it.
        conn.execute("UPDATE customers_view SET email = to_jsonb('shown@example.com'::text)")
    assert stored.startswith("hmac-sha256:") and FIRST not in stored
    assert [c["id"] for c in client.http.get(f"/customers?email={FIRST}").json_body["customers"]] == [customer_id]
    assert client.http.get("/customers?email=shown@example.com").json_body == {"customers": []}


def test_a_rebuild_reads_the_encrypted_events_and_leaves_erased_customers_erased(client, eraser, db, capsys):
    kept = client.create_id(FIRST, NAME)
    erased = client.create_id(SECOND, "Charles Babbage")
    assert eraser.http.delete(f"/customer/{erased}/personal-data").status_code == 204
    assert ops(["rebuild"]) == 0
    assert client.http.get(f"/customer/{kept}").json_body["name"] == NAME
    assert client.http.get(f"/customer/{kept}").headers["X-Read-Source"] == "read-model"
    assert [c["id"] for c in client.http.get(f"/customers?email={FIRST}").json_body["customers"]] == [kept]
    assert client.http.get(f"/customer/{erased}").status_code == 404
    assert "Charles" not in dump(db) and SECOND not in dump(db)


def test_erasing_a_customer_stored_in_clear_before_encryption_leaves_nothing_readable(
        application, commands, eraser, db):
    from chalicelib.domain.commands import ChangeEmail, CreateCustomer

    customer_id = uuid.uuid4()  # stored before encryption existed: its events hold the data in clear
    commands.create(CreateCustomer(name="Plain Olden", email="olden@example.com", customer_id=customer_id),
                    CommandContext("old", "old"))
    commands.change_email(ChangeEmail(customer_id, "olden@example.org"), CommandContext("old", "old"))
    assert "Plain Olden" in json.dumps([e.data for e in stored_events(db)])

    assert eraser.http.delete(f"/customer/{customer_id}/personal-data").status_code == 204
    text = json.dumps([e.data for e in stored_events(db)])
    assert "Olden" not in text and "olden@" not in text
    assert "Plain Olden" not in dump(db)
    history = eraser.http.get(f"/customer/{customer_id}/events").json_body["events"]
    assert [e["data"].get("name") for e in history][:1] == [None] and history[1]["data"]["email"] is None


def test_a_sealed_value_copied_into_another_customers_event_does_not_open_as_theirs(application, client, db):
    from chalicelib.personal.cipher import aad, open_sealed, seal

    first = client.create_id("first@example.com", "First Person")
    second = client.create_id("second@example.com", "Second Person")
    with psycopg.connect(db) as conn:
        (sealed_name,) = conn.execute("SELECT data->'name' FROM events WHERE stream_id = %s AND version = 1",
                                      (first,)).fetchone()
        conn.execute("UPDATE events SET data = jsonb_set(data, '{name}', %s) WHERE stream_id = %s AND version = 1",
                     (json.dumps(sealed_name), second))
    application.parts.close()
    answer = client.http.get(f"/customer/{second}?consistency=strong")
    assert b"First Person" not in answer.body
    # Bound to its customer even under one key: what the associated data is for.
    with psycopg.connect(db) as conn:
        key = application.parts.personal_data().keys.key_for(uuid.UUID(first), conn)
    value = seal(key, aad("event", uuid.UUID(first), 1, "name"), "First Person")
    assert open_sealed(key, aad("event", uuid.UUID(first), 1, "name"), value) == "First Person"
    from cryptography.exceptions import InvalidTag

    with pytest.raises(InvalidTag):
        open_sealed(key, aad("event", uuid.UUID(second), 1, "name"), value)


def test_a_wrapped_data_key_copied_onto_another_customer_does_not_open_for_it(application, client, db):
    """The wrap is bound to its stream: a key row moved to another customer
    opens for no one, rather than opening that customer's data with another's key."""
    from chalicelib.personal.keyring import KeyDoesNotOpen

    first = uuid.UUID(client.create_id("first@example.com", "First Person"))
    second = uuid.UUID(client.create_id("second@example.com", "Second Person"))
    copy_key(db, first, second)
    application.parts.close()  # a new container: no key in memory
    with psycopg.connect(db) as conn, pytest.raises(KeyDoesNotOpen, match=str(second)):
        application.parts.required_personal_data().keys.key_for(second, conn)


def test_a_key_that_does_not_open_parks_its_customers_row_and_the_rest_of_the_batch_goes_out(
        application, client, db, sent):
    """The relay looks up a batch's keys together: one that does not open
    must not stop the batch (nor be read as an erased customer's)."""
    from chalice.local import LambdaContext

    from devstack.schedule import scheduled_event

    ids = [uuid.UUID(client.create_id(f"batch{n}@example.com", f"Batch {n}")) for n in range(3)]
    copy_key(db, ids[0], ids[1])
    application.parts.close()  # a new container: no key in memory
    # As the schedule invokes it, for about a second.
    app_module.relay_outbox(scheduled_event("relay_outbox"), LambdaContext("relay_outbox", 1024, max_runtime_ms=6000))
    assert sorted(e.stream_id for e in sent.events) == sorted([ids[0], ids[2]])
    assert {e.data["name"] for e in sent.events} == {"Batch 0", "Batch 2"}
    with psycopg.connect(db) as conn:
        (error,) = conn.execute("SELECT parked_error FROM outbox WHERE parked_at IS NOT NULL").fetchone()
    assert error.startswith("KeyDoesNotOpen") and str(ids[1]) in error


def test_a_key_that_does_not_open_leaves_its_customers_row_alone_and_the_batch_is_projected(
        application, client, db, capfd):
    """No retry of the batch can open it: the customer is unprojectable, said
    with the reason; everyone else's rows are written."""
    from chalice.local import LambdaContext

    ids = [uuid.UUID(client.create_id(f"proj{n}@example.com", f"Projected {n}")) for n in range(3)]
    batch = delivered_batch(readable(application, db))
    copy_key(db, ids[0], ids[1])
    application.parts.close()
    capfd.readouterr()
    answer = app_module.project_customers(batch, LambdaContext("project_customers", 1024))
    assert (answer["rows_written"], answer["unprojectable"]) == (2, 1)
    with psycopg.connect(db) as conn:
        projected = [row[0] for row in conn.execute("SELECT id FROM customers_view ORDER BY id")]
    assert projected == sorted([ids[0], ids[2]])
    logged = [json.loads(line) for line in capfd.readouterr().err.splitlines() if "unprojectable_customer" in line]
    assert [(line["customer_id"], line["reason"].split(":")[0]) for line in logged] == [(str(ids[1]), "KeyDoesNotOpen")]


def test_a_sealed_value_moved_to_another_field_of_its_event_does_not_open(application, client, db):
    from cryptography.exceptions import InvalidTag

    customer = uuid.UUID(client.create_id("fields@example.com", "Field Person"))
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("UPDATE events SET data = jsonb_set(data, '{email}', data->'name')"
                     " WHERE stream_id = %s AND version = 1", (customer,))
    application.parts.close()
    with pytest.raises(InvalidTag), application.parts.units().reading() as unit:
        unit.events.load(customer)
