"""The scheduled relay function, invoked the way the schedule invokes it."""

import dataclasses
import json
import uuid

import pytest

from chalicelib.application import CustomerApplication
from tests.support.api import serving
from tests.support.fakes import RecordingSender
from tests.support.kafka import cloudevent, read_topic

pytestmark = pytest.mark.usefixtures("topic")


def scheduled_event(client, detail=None):
    return client.client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail=detail or {},
        resources=["arn:aws:events:eu-west-1:123456789012:rule/customer-service-dev-relay_outbox"])


def test_schedule_publishes_what_the_api_wrote(client, kafka_bootstrap, topic):
    customer_id = client.create(headers={"X-Correlation-Id": "relay-e2e"}).json_body["id"]
    response = client.lambda_.invoke("relay_outbox", scheduled_event(client))
    assert response.payload == {"shard": 0, "published": 1, "failures": 0, "locked_out": False}

    (record,) = read_topic(kafka_bootstrap, topic, expected=1)
    event = cloudevent(record)
    assert record.key.decode() == customer_id
    assert (event["type"], event["subject"], event["correlationid"]) == ("CustomerCreated", customer_id, "relay-e2e")

    again = client.lambda_.invoke("relay_outbox", scheduled_event(client))
    assert again.payload["published"] == 0


def test_relay_without_kafka_configured_fails_loudly(client, application):
    unconfigured = CustomerApplication(dataclasses.replace(application.settings, kafka_bootstrap_servers=None))
    with serving(unconfigured), pytest.raises(Exception, match="KAFKA_BOOTSTRAP_SERVERS is not set"):
        client.lambda_.invoke("relay_outbox", scheduled_event(client))


def test_each_shards_schedule_publishes_that_shards_customers(client, application, kafka_bootstrap, topic):
    two = CustomerApplication(dataclasses.replace(application.settings, relay_shards=2))
    with serving(two):
        customers = [client.create("Shard", f"shard{n}@example.com").json_body["id"] for n in range(8)]
        by_shard = {shard: {c for c in customers if uuid.UUID(c).bytes[15] % 32 % 2 == shard} for shard in (0, 1)}
        first = client.lambda_.invoke("relay_outbox", scheduled_event(client, {"shard": 1}))
        assert first.payload["shard"] == 1 and first.payload["published"] == len(by_shard[1])
        assert {r.key.decode() for r in read_topic(kafka_bootstrap, topic, expected=len(by_shard[1]))} == by_shard[1]
        second = client.lambda_.invoke("relay_outbox", scheduled_event(client))  # Chalice's own schedule: shard 0
        assert second.payload["shard"] == 0 and second.payload["published"] == len(by_shard[0])


def test_the_scheduled_relay_sends_the_next_batch_before_the_first_is_acknowledged(client, application, capsys,
                                                                                    monkeypatch):
    """As the schedule invokes it, through the metrics around the sender:
    pipelined, and every acknowledged event counted."""
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    sender = RecordingSender()
    pipelined = CustomerApplication(dataclasses.replace(application.settings, relay_batch_size=2), sender=sender)
    with serving(pipelined):
        for n in range(5):
            client.create("Pipelined", f"pipelined{n}@example.com")
        capsys.readouterr()
        response = client.lambda_.invoke("relay_outbox", scheduled_event(client))
    assert response.payload["published"] == 5
    assert sender.calls == ["send 1", "send 2", "wait 1", "send 3", "wait 2", "wait 3"]
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert sum(sum(m.get("EventsPublished", [])) for m in metrics) == 5
