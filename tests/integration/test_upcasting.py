"""Events stored by an older release, in the old shape, read through today's
code on every path: aggregate, relay, projection, history, time machine,
rebuild. Nothing stored is rewritten."""

import json
import uuid

import psycopg
import pytest

from chalicelib.domain.commands import ChangeEmail
from chalicelib.eventstore.events import CommandContext
from chalicelib.infra.db import Database
from chalicelib.readmodel.rebuild import rebuild
from devstack.kafka_source_events import KafkaRecord
from tests.support.deliveries import delivered_batch, read_model
from tests.support.kafka import cloudevent, read_topic

OLD_ROWS = [  # CustomerEmailChanged v1 had no previous_email
    (1, "CustomerCreated", 1, {"name": "Old Timer", "email": "first@example.com"}),
    (2, "CustomerEmailChanged", 1, {"email": "second@example.com"}),
]


@pytest.fixture
def old_customer(db):
    """Rows as the older release wrote them: events and their outbox rows."""
    cid = uuid.uuid4()
    with psycopg.connect(db) as conn:
        for version, event_type, schema_version, data in OLD_ROWS:
            (position,) = conn.execute(
                "INSERT INTO events (stream_id, stream_type, version, event_type, schema_version, data, metadata)"
                " VALUES (%s, 'Customer', %s, %s, %s, %s, %s) RETURNING global_position",
                (cid, version, event_type, schema_version, json.dumps(data),
                 json.dumps({"event_id": str(uuid.uuid4()), "occurred_at": f"2025-01-0{version}T10:00:00+00:00",
                             "correlation_id": "old-release", "causation_id": None}))).fetchone()
            conn.execute("INSERT INTO outbox (global_position, stream_id) VALUES (%s, %s)", (position, cid))
    return cid


def stored_rows(db, cid):
    with psycopg.connect(db) as conn:
        return conn.execute("SELECT version, schema_version, data FROM events WHERE stream_id = %s ORDER BY version",
                            (cid,)).fetchall()


def test_aggregate_loads_old_events_and_takes_new_commands(db, old_customer, commands):
    customer = commands.get(old_customer)
    assert (customer.email, customer.version) == ("second@example.com", 2)
    commands.change_email(ChangeEmail(old_customer, "third@example.com"), CommandContext("new"))
    rows = stored_rows(db, old_customer)
    assert rows[1] == (2, 1, {"email": "second@example.com"})  # untouched
    assert rows[2] == (3, 2, {"email": "third@example.com", "previous_email": "second@example.com"})


def test_the_relay_publishes_old_events_in_todays_shape(db, old_customer, kafka_bootstrap, topic, application):
    assert application.outbox_relay().run_once().published == 2
    events = sorted((cloudevent(r) for r in read_topic(kafka_bootstrap, topic, expected=2)),
                    key=lambda e: e["streamversion"])
    assert events[1]["data"] == {"email": "second@example.com", "previous_email": None}
    assert events[1]["schemaversion"] == 2


def test_the_projection_reads_old_messages_and_old_rows(db, client, old_customer):
    # A message the older relay published: old data shape, no schemaversion.
    old_message = json.dumps({
        "specversion": "1.0", "id": "e-2", "source": "/customer-service", "type": "CustomerEmailChanged",
        "subject": str(old_customer), "time": "2025-01-02T10:00:00+00:00", "datacontenttype": "application/json",
        "data": {"email": "second@example.com"}, "streamversion": 2,
    }).encode()
    record = KafkaRecord("customer-events", 0, 1, 0, str(old_customer).encode(), old_message, {})
    # Only v2 arrives: v1 is filled from the store, in its old shape too.
    result = client.lambda_.invoke("project_customers", delivered_batch([], extra=[record])).payload
    assert (result["poison"], result["gaps_filled"], result["rows_written"]) == (0, 1, 1)
    (row,) = read_model(db)
    assert (row.name, row.email, row.version) == ("Old Timer", "second@example.com", 2)


def test_history_and_time_machine_show_old_events_in_todays_shape(client, old_customer):
    history = client.get(f"/customer/{old_customer}/events").json_body["events"]
    assert history[1]["data"] == {"email": "second@example.com", "previous_email": None}
    assert history[1]["schema_version"] == 2
    then = client.get(f"/customer/{old_customer}?version=1").json_body
    assert then["email"] == "first@example.com"
    as_of = client.get(f"/customer/{old_customer}?as_of=2030-01-01T00:00:00Z").json_body
    assert as_of["email"] == "second@example.com"


def test_rebuild_reads_old_events(db, old_customer):
    rebuild(Database(db).connect)
    (row,) = read_model(db)
    assert (row.email, row.version) == ("second@example.com", 2)
    assert stored_rows(db, old_customer)[1][1] == 1  # still the old shape in the store


def test_a_newer_shape_than_the_code_knows_is_refused_not_guessed(db, old_customer, commands):
    with psycopg.connect(db) as conn:
        conn.execute("UPDATE events SET schema_version = 3 WHERE stream_id = %s AND version = 2", (old_customer,))
    with pytest.raises(Exception, match="newer than this code"):
        commands.get(old_customer)
