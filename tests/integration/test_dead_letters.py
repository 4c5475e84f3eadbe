"""Dead letters of the projection in SQS (moto): unreadable records sent by
the function, batches failed past the retry limit sent by the (emulated)
Kafka trigger, listed by `make dlq`, replayed by `make dlq-replay`."""

import json
import uuid

import psycopg
import pytest
from chalice.test import Client
from kafka import KafkaProducer

from app import app
from chalicelib.application import CustomerApplication
from chalicelib.eventstore.relay import OutboxRelay
from chalicelib.infra.kafka_publisher import KafkaPublisher
from chalicelib.infra.settings import Settings
from devstack.kafka_source import KafkaEventSource
from devstack.kafka_source_events import KafkaRecord
from ops.__main__ import main as ops
from tests.support.api import serving
from tests.support.builders import new_customer
from tests.support.deliveries import delivered_batch, read_model, read_model_from_store, stored_events
from tests.support.kafka import read_topic
from tests.support.waiting import in_background, wait_for

NOT_A_CLOUDEVENT = b"this is not a CloudEvent"


@pytest.fixture
def served(db, aws, dlq, request):
    if "topic" in request.fixturenames:
        request.getfixturevalue("topic")  # its settings first
    with serving(CustomerApplication(Settings.from_env(), aws=aws)) as application:
        yield application


def letters(aws, url):
    messages = aws("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
    return [json.loads(m["Body"]) for m in messages.get("Messages", [])]


def test_an_unreadable_record_goes_to_the_queue_and_the_rest_of_its_batch_is_projected(
        served, commands, db, aws, dlq, capsys):
    new_customer(commands, 1)
    poison = KafkaRecord("customer-events", 2, 41, 0, b"some-key", NOT_A_CLOUDEVENT, {})
    with Client(app) as client:
        result = client.lambda_.invoke("project_customers", delivered_batch(stored_events(db), extra=[poison])).payload
    assert (result["poison"], result["rows_written"]) == (1, 1)
    assert read_model(db) == read_model_from_store(db)
    [letter] = letters(aws, dlq)
    assert letter["deadLetter"] == "unreadable-record"
    assert (letter["topic"], letter["partition"], letter["offset"]) == ("customer-events", 2, 41)
    assert letter["key"] == "c29tZS1rZXk=" and letter["valueBytes"] == len(NOT_A_CLOUDEVENT)
    assert "value" not in letter and NOT_A_CLOUDEVENT.decode() not in json.dumps(letter)  # it may hold personal data
    assert "not a CloudEvents" in letter["error"] or "JSON" in letter["error"]

    assert ops(["dlq"]) == 0
    listed = capsys.readouterr().out
    assert "unreadable-record  customer-events/2@41  key some-key" in listed and "1 dead letters" in listed
    assert len(letters(aws, dlq)) == 1, "listing leaves the letters in the queue"


def test_when_the_queue_cannot_be_reached_the_batch_fails_and_nothing_is_lost(served, commands, db, aws, dlq):
    new_customer(commands, 1)
    aws("sqs").delete_queue(QueueUrl=dlq)
    poison = KafkaRecord("customer-events", 2, 41, 0, None, NOT_A_CLOUDEVENT, {})
    with Client(app) as client, pytest.raises(Exception, match="cannot send to"):
        client.lambda_.invoke("project_customers", delivered_batch(stored_events(db), extra=[poison]))
    # The mapping delivers the batch again; nothing was projected meanwhile.
    assert read_model(db) == []


def test_replay_re_projects_the_customers_named_and_deletes_the_letters(served, commands, db, aws, dlq, capsys):
    customers = [new_customer(commands, n).id for n in range(3)]
    served.project_kafka_batch(delivered_batch(stored_events(db)))
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("DELETE FROM customers_view WHERE id = ANY(%s)", (customers[:2],))
    # One letter names a customer, one a record that is no customer of ours.
    served.project_kafka_batch(delivered_batch([], extra=[
        KafkaRecord("customer-events", 0, 5, 0, str(customers[0]).encode(), NOT_A_CLOUDEVENT, {}),
        KafkaRecord("customer-events", 0, 6, 0, None, NOT_A_CLOUDEVENT, {})]))
    assert len(letters(aws, dlq)) == 2

    assert ops(["dlq", "--replay"]) == 0
    assert "replayed 2 of 2 dead letters: 1 customers re-projected" in capsys.readouterr().out
    assert {row.id for row in read_model(db)} == {customers[0], customers[2]}
    assert letters(aws, dlq) == []


def test_a_batch_failing_past_the_retry_limit_goes_to_the_queue_and_replay_reads_its_keys_back_from_kafka(
        served, commands, db, aws, dlq, kafka_bootstrap, topic):
    customers = [new_customer(commands, n).id for n in range(4)]
    publisher = KafkaPublisher(kafka_bootstrap, topic, "/customer-service")
    OutboxRelay(lambda: psycopg.connect(db, autocommit=True), publisher).run_once()
    publisher.close()
    assert len(read_topic(kafka_bootstrap, topic, expected=4)) == 4

    invocations = []

    def always_failing(event, context):
        invocations.append(event)
        raise RuntimeError("the database is down")

    sent = []
    source = KafkaEventSource(always_failing, kafka_bootstrap, topic, f"dlq-{uuid.uuid4().hex[:8]}",
                              retry_backoff=(0.01, 0.01), max_retry_attempts=2,
                              on_failure=lambda record: (sent.append(record), aws("sqs").send_message(
                                  QueueUrl=dlq, MessageBody=json.dumps(record))))
    stop, thread = in_background(source.run)
    try:
        assert wait_for(lambda: sum(r["KafkaBatchInfo"]["batchSize"] for r in sent) >= 4, timeout=30)
    finally:
        stop.set()
        thread.join(timeout=30)
    # Each batch: the first try and two retries, then sent away and skipped.
    assert len(invocations) == 3 * len(sent)
    record = letters(aws, dlq)[0]
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert all(name.startswith(topic + "-") for name in record["KafkaBatchInfo"]["recordsInfo"])
    assert read_model(db) == []

    replayed = served.replay_dead_letters()
    assert (replayed.deleted, replayed.customers, replayed.kept) == (len(sent), 4, [])
    assert {row.id for row in read_model(db)} == set(customers)
    assert letters(aws, dlq) == []


def test_without_a_destination_a_failing_batch_is_retried_until_it_succeeds(kafka_bootstrap, topic):
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    producer.send(topic, key=b"k", value=b"v")
    producer.flush()
    producer.close()
    calls = []

    def fails_five_times(event, context):
        calls.append(event)
        if len(calls) <= 5:
            raise RuntimeError("not yet")

    source = KafkaEventSource(fails_five_times, kafka_bootstrap, topic, f"nodlq-{uuid.uuid4().hex[:8]}",
                              retry_backoff=(0.01, 0.01), max_retry_attempts=2, on_failure=None)
    stop, thread = in_background(source.run)
    try:
        assert wait_for(lambda: len(calls) >= 6, timeout=30)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert len(calls) == 6


def stubbed_sqs(answers):
    """A real boto3 SQS client whose send_message_batch answers are given (botocore's Stubber)."""
    import boto3
    from botocore.stub import ANY, Stubber

    client = boto3.client("sqs", region_name="eu-west-1")
    stubber = Stubber(client)
    for answer in answers:
        stubber.add_response("send_message_batch", answer, {"QueueUrl": ANY, "Entries": ANY})
    stubber.activate()
    return client, stubber


def test_letters_sqs_refuses_are_sent_again_and_never_dropped():
    from chalicelib.infra.dead_letters import DeadLetterQueue, DeadLetterQueueUnavailable

    refused_then_taken = [
        {"Successful": [{"Id": "0", "MessageId": "m0", "MD5OfMessageBody": "x"}],
         "Failed": [{"Id": "1", "SenderFault": False, "Code": "InternalError"}]},
        {"Successful": [{"Id": "1", "MessageId": "m1", "MD5OfMessageBody": "x"}], "Failed": []},
    ]
    client, stubber = stubbed_sqs(refused_then_taken)
    DeadLetterQueue("https://sqs.eu-west-1.amazonaws.com/1/q", lambda service: client).send([{"n": 0}, {"n": 1}])
    stubber.assert_no_pending_responses()  # the refused one was sent again

    always_refused = [{"Successful": [], "Failed": [{"Id": "0", "SenderFault": True, "Code": "Invalid"}]}] * 3
    client, stubber = stubbed_sqs(always_refused)
    with pytest.raises(DeadLetterQueueUnavailable, match="refused"):  # the batch fails: delivered again
        DeadLetterQueue("https://sqs.eu-west-1.amazonaws.com/1/q", lambda service: client).send([{"n": 0}])


def test_eleven_unreadable_records_in_one_batch_become_eleven_letters(served, commands, db, aws, dlq):
    new_customer(commands, 1)
    poison = [KafkaRecord("customer-events", 1, offset, 0, f"k{offset}".encode(), NOT_A_CLOUDEVENT, {})
              for offset in range(100, 111)]
    result = served.project_kafka_batch(delivered_batch(stored_events(db), extra=poison))
    assert (result.poison, result.rows_written) == (11, 1)
    received = []
    while batch := aws("sqs").receive_message(QueueUrl=dlq, MaxNumberOfMessages=10,
                                              VisibilityTimeout=60).get("Messages", []):
        received += [json.loads(message["Body"]) for message in batch]  # hidden once received
    offsets = sorted(letter["offset"] for letter in received)
    assert offsets == list(range(100, 111))  # each exactly once


def test_a_replay_whose_projection_fails_keeps_the_letter(served, commands, db, aws, dlq, monkeypatch, capsys):
    from chalicelib.usecases import read_side

    customer = new_customer(commands, 1).id
    served.project_kafka_batch(delivered_batch([], extra=[
        KafkaRecord("customer-events", 0, 5, 0, str(customer).encode(), NOT_A_CLOUDEVENT, {})]))

    def fails(customers, **parts):
        raise psycopg.OperationalError("the database went away")

    monkeypatch.setattr(read_side, "reproject", fails)
    with pytest.raises(psycopg.OperationalError):
        served.replay_dead_letters()
    assert len(letters(aws, dlq)) == 1  # still there, and visible for the next replay
    monkeypatch.undo()
    assert served.replay_dead_letters().deleted == 1
    assert [row.id for row in read_model(db)] == [customer]


@pytest.mark.usefixtures("encryption")
def test_after_a_replay_the_customer_is_found_by_email(db, aws, dlq, issuer, monkeypatch):
    for name, value in issuer.environment().items():
        monkeypatch.setenv(name, value)
    with serving(CustomerApplication(Settings.from_env())) as application, Client(app) as http:
        from tests.support.api import Api

        client = Api(http, token=issuer.token(subject="test-user"))
        customer = client.create_id("replayed@example.com", "Replayed Person")
        application.project_kafka_batch(delivered_batch([], extra=[
            KafkaRecord("customer-events", 0, 7, 0, customer.encode(), NOT_A_CLOUDEVENT, {})]))
        assert application.replay_dead_letters().deleted == 1
        found = client.post("/customers/search", {"email": "replayed@example.com"}).json_body["customers"]
        assert [c["id"] for c in found] == [customer]
