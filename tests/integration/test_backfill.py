"""Backfills: the stored history republished to a consumer's topic, as the
live messages are, in per-customer order, missing nothing below its end
however transactions commit, resumable after a kill, throttled. Real
PostgreSQL and broker; personal data sealed and messages signed (moto)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import jsonschema
import psycopg
import pytest
from chalice.local import LambdaContext

import app as app_module
from chalicelib.api import asyncapi
from chalicelib.application import CustomerApplication
from chalicelib.eventstore.feed import Selection
from chalicelib.infra.settings import Settings
from chalicelib.usecases.backfills import TopicRefused
from devstack.kafka import create_topic
from devstack.schedule import lambda_settings, scheduled_event
from tests.integration.test_outbox_relay import append_uncommitted
from tests.support.api import serving
from tests.support.builders import copy_key, stored_events
from tests.support.kafka import cloudevent, read_topic

HEADERS = {**asyncapi.document()["components"]["schemas"]["headers"], "additionalProperties": False}
pytestmark = pytest.mark.usefixtures("topic", "encryption", "signed_messages")
PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def backfill_topic(kafka_bootstrap):
    name = f"backfill-{uuid.uuid4().hex[:10]}"
    create_topic(kafka_bootstrap, name, partitions=3)
    return name


def history(client, eraser, customers: int = 6) -> list[str]:
    """Customers created and changed, one deleted, one erased."""
    ids = [client.create_id(f"b{n}@example.com", f"Backfilled {n}") for n in range(customers)]
    for n, customer in enumerate(ids):
        assert client.change_email(customer, f"b{n}.later@example.com").status_code == 200
    assert client.delete(f"/customer/{ids[1]}").status_code == 204
    assert eraser.http.delete(f"/customer/{ids[2]}/personal-data").status_code == 204
    return ids


def by_customer(records) -> dict[str, list[int]]:
    versions = defaultdict(list)
    for record in records:
        versions[cloudevent(record)["subject"]].append(cloudevent(record)["streamversion"])
    return versions


def test_a_backfill_sends_every_stored_event_as_the_live_message_with_its_replay_header(
        application, client, eraser, db, kafka_bootstrap, topic, backfill_topic):
    ids = history(client, eraser)
    assert application.outbox_relay().run_once().published == len(stored_events(db))
    live = {(cloudevent(r)["subject"], cloudevent(r)["streamversion"]): r
            for r in read_topic(kafka_bootstrap, topic, expected=len(stored_events(db)))}

    backfill = application.start_backfill(backfill_topic, requested_by="test")
    result = application.run_backfill(backfill.id, 60)
    assert result.backfill.state == "done" and result.sent == result.backfill.total == len(stored_events(db))
    records = read_topic(kafka_bootstrap, backfill_topic, expected=result.sent)
    assert len(records) == result.sent
    assert by_customer(records) == {c: sorted(v) for c, v in by_customer(records).items()}  # version order
    assert set(by_customer(records)) == set(ids)
    for record in records:
        message = cloudevent(record)
        headers = dict(record.headers)
        assert headers["replay"] == f"backfill-{backfill.id}".encode()
        assert "ce_replay" not in headers and not any(name.startswith("ce_") for name in headers)
        jsonschema.validate({k: v.decode() for k, v in headers.items()}, HEADERS)  # as the contract says
        same = live[message["subject"], message["streamversion"]]
        assert record.key == same.key and record.partition == same.partition
        if message["subject"] != ids[2]:  # the erased one goes out erased
            assert record.value == same.value and headers["signature"] == dict(same.headers)["signature"]
    erased = [cloudevent(r) for r in records if cloudevent(r)["subject"] == ids[2]]
    assert erased[0]["data"] == {"name": None, "email": None}
    assert erased[-1]["type"] == "CustomerPersonalDataErased"
    assert "Backfilled 2" not in json.dumps([cloudevent(r) for r in records])


def test_one_customers_events_of_some_types_after_a_position(application, client, eraser, db, backfill_topic,
                                                            kafka_bootstrap):
    ids = history(client, eraser, customers=3)
    first = min(e.global_position for e in stored_events(db))
    chosen = Selection(stream_id=uuid.UUID(ids[0]), event_types=("CustomerEmailChanged",),
                       after_global_position=first)
    backfill = application.start_backfill(backfill_topic, chosen)
    assert application.run_backfill(backfill.id, 60).sent == 1
    (record,) = read_topic(kafka_bootstrap, backfill_topic, expected=1)
    assert (cloudevent(record)["subject"], cloudevent(record)["type"]) == (ids[0], "CustomerEmailChanged")


def test_the_live_topic_only_when_asked_for_as_such(application, client, topic):
    with pytest.raises(TopicRefused, match="live topic"):
        application.start_backfill(topic)
    assert application.backfills() == []
    assert application.start_backfill(topic, to_live_topic=True).topic == topic


def test_an_event_whose_transaction_commits_after_a_later_one_is_not_skipped(application, client, db,
                                                                              backfill_topic, kafka_bootstrap):
    late = psycopg.connect(db)  # a writer whose transaction is still open
    early = append_uncommitted(late, "Early")
    later = client.create_id("later@example.com")  # commits first, with a higher position
    backfill = application.start_backfill(backfill_topic)
    results = []
    thread = threading.Thread(target=lambda: results.append(application.run_backfill(backfill.id, 60)))
    thread.start()
    try:
        time.sleep(0.5)
        assert application.backfill(backfill.id).state == "waiting"  # for the open transaction to end
        late.commit()
    finally:
        late.close()
        thread.join(timeout=60)
    assert results[0].backfill.state == "done" and results[0].sent == 2
    subjects = [cloudevent(r)["subject"] for r in read_topic(kafka_bootstrap, backfill_topic, expected=2)]
    assert sorted(subjects) == sorted([str(early), later])


def test_a_rate_limit_spaces_the_batches(application, client, monkeypatch, backfill_topic):
    for n in range(12):
        client.create_id(f"rate{n}@example.com")
    backfill = application.start_backfill(backfill_topic, rate_limit=20)
    began = time.monotonic()
    assert application.run_backfill(backfill.id, 60).sent == 12
    assert time.monotonic() - began >= 12 / 20 * 0.9  # it cannot go faster than its limit


def invoke_backfill_function() -> dict:
    """As EventBridge and Lambda invoke it: a scheduled event, a context with the configured timeout."""
    timeout, memory = lambda_settings("backfill_events", stage="prod")
    return app_module.backfill_events(scheduled_event("backfill_events"),
                                      LambdaContext("backfill_events", memory, max_runtime_ms=timeout * 1000))


def test_the_scheduled_function_goes_on_with_every_unfinished_backfill(application, client, backfill_topic):
    client.create_id("scheduled@example.com")
    asked = application.start_backfill(backfill_topic)
    answer = invoke_backfill_function()
    assert answer == {"backfills": [{"id": asked.id, "state": "done", "sent": 1, "running_elsewhere": False}]}


def test_a_deployment_backfills_only_to_the_topics_its_function_may_write_to(application, client, monkeypatch,
                                                                             backfill_topic, kafka_bootstrap):
    client.create_id("prefix@example.com")
    asked_elsewhere = application.start_backfill(backfill_topic)  # by an operator without the prefix set
    monkeypatch.setenv("BACKFILL_TOPIC_PREFIX", "consumers-")  # as the template sets it
    with serving(CustomerApplication(Settings.from_env())) as deployed:
        with pytest.raises(TopicRefused, match=r"only to topics named consumers-\*"):
            deployed.start_backfill(backfill_topic)
        assert [b.id for b in deployed.backfills()] == [asked_elsewhere.id]
        # The function gives up on one it may not send, with the reason: no retry would help.
        [result] = deployed.run_unfinished_backfills(30)
    assert result.backfill.state == "failed" and "consumers-*" in result.backfill.error
    assert read_topic(kafka_bootstrap, backfill_topic, expected=0, timeout=1) == []


def test_an_event_whose_key_does_not_open_fails_the_backfill_with_its_reason(application, client, db, backfill_topic,
                                                                            kafka_bootstrap):
    """The batch's keys are looked up together; one that does not open
    (another customer's copied onto its row) stops the backfill where it is,
    named, rather than in a traceback on every invocation."""
    ids = [uuid.UUID(client.create_id(f"damaged{n}@example.com")) for n in range(3)]
    copy_key(db, ids[0], ids[1])
    application.parts.close()  # a new container: no key in memory
    asked = application.start_backfill(backfill_topic)
    answer = invoke_backfill_function()
    assert answer["backfills"][0]["state"] == "failed"
    failed = application.backfill(asked.id)
    assert failed is not None and failed.state == "failed"
    assert "KeyDoesNotOpen" in (failed.error or "") and str(ids[1]) in (failed.error or "")
    assert read_topic(kafka_bootstrap, backfill_topic, expected=0, timeout=1) == []  # its batch was not sent
