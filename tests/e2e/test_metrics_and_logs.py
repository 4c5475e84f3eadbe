"""Metrics in CloudWatch's Embedded Metric Format and log lines with the
Lambda context, as each function invocation leaves them on its output."""

import json
import uuid

import pytest
from chalice.test import Client

from app import app
from devstack.kafka_source_events import KafkaRecord
from tests.support.deliveries import delivered_batch, stored_events


def emf(text: str) -> dict[str, list[float]]:
    """Every metric of the EMF lines in the output, with its values."""
    found: dict[str, list[float]] = {}
    for line in text.splitlines():
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        blob = json.loads(line)
        [directive] = blob["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "CustomerService" and directive["Dimensions"] == [["service"]]
        for metric in directive["Metrics"]:
            value = blob[metric["Name"]]
            found.setdefault(metric["Name"], []).extend(value if isinstance(value, list) else [value])
    return found


def logged(text: str, message: str) -> dict:
    return next(json.loads(line) for line in text.splitlines() if f'"message":"{message}"' in line.replace(" ", ""))


def test_a_command_leaves_its_outcome_as_a_metric_and_its_log_line_carries_the_invocation(client, capfd):
    capfd.readouterr()
    customer_id = client.create_id("ada@example.com")
    assert client.change_email(str(uuid.uuid4()), "x@example.com").status_code == 404
    assert client.change_email(customer_id, "taken@example.com").status_code == 200
    client.create(email="taken@example.com", expect=409)  # the email is another customer's
    out, err = capfd.readouterr()
    metrics = emf(out)
    assert sum(metrics["CommandsSucceeded"]) == 2 and sum(metrics["CommandsRejected"]) == 2
    line = logged(err, "customer_created")
    assert line["customer_id"] == customer_id and line["level"] == "INFO" and line["service"] == "customer-service"
    assert line["function_name"] == "api_handler" and line["function_request_id"]
    assert line["cold_start"] in (True, False)


def scheduled(lambda_client) -> dict:
    return lambda_client.events.generate_cw_event(source="aws.events", detail_type="Scheduled Event", detail={},
                                                  resources=["arn:aws:events:eu-west-1:123456789012:rule/relay"])


def test_the_relay_and_the_projection_report_backlog_latency_batch_size_lag_and_dead_letters(
        application, client, db, capfd, topic):
    client.create_id("ada@example.com")
    client.create_id("grace@example.com")
    with Client(app) as lambda_client:
        capfd.readouterr()
        lambda_client.lambda_.invoke("relay_outbox", scheduled(lambda_client))
        published = emf(capfd.readouterr().out)
        poison = KafkaRecord("customer-events", 0, 9, 0, None, b"not a CloudEvent", {})
        lambda_client.lambda_.invoke("project_customers", delivered_batch(stored_events(db), extra=[poison]))
        projected = emf(capfd.readouterr().out)
    assert sum(published["EventsPublished"]) == 2 and sum(published["PublishFailures"]) == 0
    assert all(0 <= ms < 60_000 for ms in published["PublishLatency"])
    assert published["OutboxBacklog"] == [0] and published["OutboxOldestAge"] == [0]
    assert projected["ProjectionBatchSize"] == [3] and projected["DeadLetters"] == [1]
    assert 0 <= projected["ProjectionLag"][0] < 60


def test_outside_an_invocation_nothing_is_recorded(application, capfd):
    from chalicelib.eventstore.events import CommandContext

    application.create_customer("Ada", "ada@example.com", CommandContext(correlation_id="c", causation_id="c"))
    assert emf(capfd.readouterr().out) == {}


@pytest.fixture(autouse=True)
def short_relay(monkeypatch):
    monkeypatch.setenv("RELAY_MAX_SECONDS", "1")


def test_a_requests_correlation_id_never_reaches_the_next_invocation_on_the_same_thread(client, capfd):
    """`chalice local` reuses its threads and Lambda its containers: the next
    invocation (a request or a batch of the projection) logs its own id, or none."""
    capfd.readouterr()
    assert client.create(headers={"X-Correlation-Id": "corr-of-the-first-request"}).status_code == 201
    client.lambda_.invoke("project_customers", delivered_batch([]))
    assert client.get(f"/customer/{uuid.uuid4()}").status_code == 404
    _, err = capfd.readouterr()
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    first = [line for line in lines if line.get("correlation_id") == "corr-of-the-first-request"]
    assert first and all(line["message"] in ("customer_created", "request_handled") for line in first)
    assert logged(err, "projection_batch").get("correlation_id") is None
    assert [line for line in lines if line["message"] == "request_handled"][-1]["correlation_id"] not in (
        None, "corr-of-the-first-request")
