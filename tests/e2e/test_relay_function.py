"""The scheduled relay function, invoked the way the schedule invokes it."""

import dataclasses

import pytest

from chalicelib.application import CustomerApplication
from tests.support.api import serving
from tests.support.kafka import cloudevent, read_topic

pytestmark = pytest.mark.usefixtures("topic")


def scheduled_event(client):
    return client.client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail={},
        resources=["arn:aws:events:eu-west-1:123456789012:rule/customer-service-dev-relay_outbox"])


def test_schedule_publishes_what_the_api_wrote(client, kafka_bootstrap, topic):
    customer_id = client.create(headers={"X-Correlation-Id": "relay-e2e"}).json_body["id"]
    response = client.lambda_.invoke("relay_outbox", scheduled_event(client))
    assert response.payload == {"published": 1, "failures": 0, "locked_out": False}

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
