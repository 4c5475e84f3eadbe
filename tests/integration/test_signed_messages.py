"""The read model takes no change the event store does not hold: the relay
signs what it publishes, the projection refuses what it did not sign. Real
broker, Secrets Manager and SQS from moto."""

import dataclasses
import hashlib
import hmac
import json
import uuid

import pytest
from kafka import KafkaProducer

from chalicelib.eventstore import cloudevents
from chalicelib.infra.credentials import Secret
from chalicelib.infra.message_signing import MessageSigning
from devstack.aws import new_hmac_key_secret
from devstack.kafka_source_events import KafkaRecord, event_from
from tests.support.builders import stored_events
from tests.support.clock import Clock
from tests.support.deliveries import read_model
from tests.support.kafka import read_topic

pytestmark = pytest.mark.usefixtures("signed_messages")


def delivered(records) -> dict:
    """The event source mapping's event for records read from the topic."""
    return event_from([KafkaRecord(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, dict(r.headers or []))
                       for r in records], source="aws:kafka")


def forge(kafka_bootstrap, topic, event, headers=()):
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    try:
        producer.send(topic, key=str(event.stream_id).encode(), value=cloudevents.encode(event, "/customer-service"),
                      headers=[("content-type", cloudevents.CONTENT_TYPE.encode()),
                               ("event-type", event.event_type.encode()), *headers])
        producer.flush()
    finally:
        producer.close()


def test_a_forged_change_on_the_topic_is_a_dead_letter_and_the_real_one_is_applied(
        application, client, db, kafka_bootstrap, topic, dlq, aws):
    customer_id = uuid.UUID(client.create_id("real@example.com", "Real Person"))
    assert application.outbox_relay().run_once().published == 1
    (created,) = stored_events(db)
    forged = dataclasses.replace(created, version=2, event_type="CustomerEmailChanged", schema_version=1,
                                 data={"email": "forged@example.com", "previous_email": "real@example.com"})
    forge(kafka_bootstrap, topic, forged)
    # Signed, but not with the relay's key.
    value = cloudevents.encode(forged, "/customer-service")
    forge(kafka_bootstrap, topic, forged,
          [("signature", b"hmac-sha256=" + hmac.new(b"k" * 44, value, hashlib.sha256).hexdigest().encode())])
    assert client.change_email(str(customer_id), "changed@example.com").status_code == 200
    assert application.outbox_relay().run_once().published == 1

    records = read_topic(kafka_bootstrap, topic, 4)
    assert len(records) == 4
    relayed = [r for r in records if json.loads(r.value)["data"]["email"] != "forged@example.com"]
    assert len(relayed) == 2 and all(dict(r.headers)["signature"].startswith(b"hmac-sha256=") for r in relayed)
    result = application.project_kafka_batch(delivered(sorted(records, key=lambda r: r.offset)))

    assert (result.records, result.poison) == (4, 2)
    (row,) = read_model(db)
    assert (row.email, row.version) == ("changed@example.com", 2)
    letters = application.dead_letters()
    assert len(letters) == 2
    assert sorted(letter.error.split(":")[0] for letter in letters) == ["its signature does not match its value",
                                                                       "not signed"]


def test_a_signed_message_replayed_onto_the_topic_changes_nothing(application, client, db, kafka_bootstrap, topic,
                                                                  dlq):
    customer_id = client.create_id("first@example.com", "First")
    assert client.change_email(customer_id, "second@example.com").status_code == 200
    assert application.outbox_relay().run_once().published == 2
    records = read_topic(kafka_bootstrap, topic, 2)
    application.project_kafka_batch(delivered(records))
    # Anyone who can read the topic can write a relayed message again: the
    # projection has seen its version, so it is a duplicate.
    first = min(records, key=lambda r: json.loads(r.value)["streamversion"])
    result = application.project_kafka_batch(delivered([first]))
    assert (result.poison, result.duplicates, result.rows_written) == (0, 1, 0)
    assert read_model(db)[0].email == "second@example.com"


def test_the_relay_keeps_the_events_while_the_signing_key_cannot_be_read_and_publishes_them_after(
        application, client, kafka_bootstrap, topic, aws, signed_messages):
    aws("secretsmanager").delete_secret(SecretId=signed_messages, ForceDeleteWithoutRecovery=True)
    client.create_id("kept@example.com", "Kept")
    result = application.outbox_relay().run_once()
    assert (result.published, result.failures) == (0, 1)
    assert read_topic(kafka_bootstrap, topic, 1, timeout=1) == []

    aws("secretsmanager").create_secret(Name=signed_messages, SecretString=new_hmac_key_secret())
    assert application.outbox_relay().run_once().published == 1
    assert dict(read_topic(kafka_bootstrap, topic, 1)[0].headers)["signature"].startswith(b"hmac-sha256=")


def test_a_rotated_key_is_accepted_once_the_secret_is_read_again_at_most_once_a_minute(aws):
    secrets = aws("secretsmanager")
    arn = secrets.create_secret(Name="signing", SecretString=json.dumps({"hmacKey": "a" * 44}))["ARN"]
    relay = MessageSigning(Secret(arn, aws))
    clock = Clock()
    projection = MessageSigning(Secret(arn, aws), clock)
    assert projection.refusal(b"v1", relay.sign(b"v1")) is None

    secrets.put_secret_value(SecretId=arn, SecretString=json.dumps({"hmacKey": "b" * 44, "previousHmacKey": "a" * 44}))
    rotated = MessageSigning(Secret(arn, aws))
    # Just read: not read again within the minute, so the new key is not known yet.
    assert projection.refusal(b"v2", rotated.sign(b"v2")) is not None
    clock.now = 61
    assert projection.refusal(b"v2", rotated.sign(b"v2")) is None
    # The relay that still has the old key is accepted too, as long as it is the previous one.
    assert projection.refusal(b"v3", relay.sign(b"v3")) is None
    assert projection.refusal(b"v3", relay.sign(b"v4")) is not None


@pytest.mark.parametrize("header", [None, b"", b"sha1=00", b"hmac-sha256=", b"hmac-sha256=zz", "é".encode()])
def test_a_missing_or_malformed_signature_is_refused(aws, header):
    arn = aws("secretsmanager").create_secret(Name=f"s-{uuid.uuid4().hex[:6]}",
                                              SecretString=new_hmac_key_secret())["ARN"]
    assert MessageSigning(Secret(arn, aws)).refusal(b"value", header) is not None


@pytest.mark.parametrize("secret", [{"hmacKey": "k" * 44}, {"hmacKey": "k" * 44, "previousHmacKey": ""}],
                         ids=["no previous key", "an empty previous key"])
def test_a_message_signed_with_an_empty_key_is_refused(aws, secret):
    """Between rotations there is no previous key: nothing verifies under an empty one."""
    arn = aws("secretsmanager").create_secret(Name=f"s-{uuid.uuid4().hex[:6]}", SecretString=json.dumps(secret))["ARN"]
    value = b'{"specversion":"1.0","type":"CustomerCreated"}'
    forged = b"hmac-sha256=" + hmac.digest(b"", value, hashlib.sha256).hex().encode()
    assert MessageSigning(Secret(arn, aws)).refusal(value, forged) is not None


class CountingSecrets:
    """Secrets Manager (moto), counting the secret reads."""

    def __init__(self, aws) -> None:
        self.aws = aws
        self.reads = 0

    def __call__(self, service: str):
        client = self.aws(service)
        if service != "secretsmanager":
            return client
        counting = self

        class Client:
            def get_secret_value(self, **kwargs):
                counting.reads += 1
                return client.get_secret_value(**kwargs)

        return Client()


def test_a_flood_of_forged_records_reads_the_signing_secret_again_at_most_once_a_minute(aws, signed_messages, db):
    secrets = CountingSecrets(aws)
    clock = Clock()
    signing = MessageSigning(Secret(signed_messages, secrets), clock)
    forged = [(f'{{"n":{n}}}'.encode(), b"hmac-sha256=" + b"00" * 32) for n in range(50)]
    assert all(signing.refusal(value, signature) is not None for value, signature in forged)
    assert secrets.reads == 1  # read once when first asked, not once per forged record
    clock.now = 61
    assert all(signing.refusal(value, signature) is not None for value, signature in forged)
    assert secrets.reads == 2  # again once the minute is up, once for all fifty
