"""Test harness: a real PostgreSQL and a real Kafka-protocol broker for the
session, a clean database and a fresh topic per test.

With DATABASE_URL set, the tests create (and drop) a database of their own on
that server, so they never touch the data in the database it names. Without
it, one embedded server is started for the whole session. Likewise
KAFKA_BOOTSTRAP_SERVERS, else an embedded broker; each test that needs one
gets a topic of its own.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from chalice.test import Client

from app import app
from chalicelib.application import CustomerApplication
from chalicelib.infra import db as infra_db
from chalicelib.infra.aws import AwsClients
from chalicelib.infra.settings import Settings
from devstack.issuer import DevIssuer
from devstack.kafka import broker_for_run, create_topic
from devstack.postgres import database_for_run, free_port
from tests.support.api import Api, serving
from tests.support.builders import Commands
from tests.support.fakes import RecordingSender

_TABLES_KEPT = {"schema_migrations"}


@pytest.fixture(scope="session")
def database_url():
    with database_for_run("customer_test", durable=False) as url:
        yield url


@pytest.fixture
def db(database_url, monkeypatch):
    """A database with every table emptied, and the app pointed at it."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
            if row[0] not in _TABLES_KEPT
        ]
        if tables:
            conn.execute(
                psycopg.sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                    psycopg.sql.SQL(", ").join(psycopg.sql.Identifier(t) for t in tables)
                )
            )
    monkeypatch.setenv("DATABASE_URL", database_url)
    return database_url


@pytest.fixture(scope="session")
def kafka_bootstrap():
    with broker_for_run() as bootstrap:
        yield bootstrap


@pytest.fixture
def topic(kafka_bootstrap, monkeypatch):
    """A topic of this test's own, and the app pointed at it."""
    name = f"customer-events-test-{uuid.uuid4().hex[:10]}"
    create_topic(kafka_bootstrap, name, partitions=3)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    return _set(monkeypatch, "KAFKA_TOPIC", name)


@pytest.fixture
def publisher(kafka_bootstrap, topic):
    """A Kafka producer of the relay's, unsigned, on this test's topic."""
    from chalicelib.infra.kafka_publisher import KafkaPublisher

    publisher = KafkaPublisher(kafka_bootstrap, topic, source="/customer-service")
    yield publisher
    publisher.close()


@pytest.fixture(scope="session")
def issuer(tmp_path_factory):
    """A development token issuer, its JWKS served on loopback: what `make
    run` sets up, and what Cognito or another issuer is on AWS."""
    dev = DevIssuer(tmp_path_factory.mktemp("issuer"), free_port())
    dev.serve()
    yield dev
    dev.stop()


@pytest.fixture
def sent():
    """What the relay sends, kept instead of going to Kafka (for the
    application of a test that asks for it)."""
    return RecordingSender()


@pytest.fixture
def application(db, issuer, request, monkeypatch):
    """The application facade on this test's database (and topic, when the
    test has one), trusting the test issuer, served to the app's functions
    for the test's duration. With `sent`, the relay sends there."""
    for first in ("topic", "encryption", "dlq", "signed_messages"):
        if first in request.fixturenames:
            request.getfixturevalue(first)  # its settings first
    for name, value in issuer.environment().items():
        monkeypatch.setenv(name, value)
    sender = request.getfixturevalue("sent") if "sent" in request.fixturenames else None
    with serving(CustomerApplication(Settings.from_env(), sender=sender)) as served:
        yield served


@pytest.fixture
def client(application, issuer):
    """The API, called with a token that may read and write."""
    with Client(app) as client:
        yield Api(client, token=issuer.token(subject="test-user"))


@pytest.fixture
def eraser(application, issuer):
    """The API, called by a data protection officer: may erase and read."""
    with Client(app) as client:
        yield Api(client, token=issuer.token(subject="dpo", scopes="customers:erase customers:read"))


@pytest.fixture
def aws(monkeypatch):
    """The AWS APIs, emulated in this process by moto; boto3 clients for them."""
    from moto import mock_aws

    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "PROJECTION_DLQ_URL",
                 "DATABASE_SECRET_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with mock_aws():
        yield AwsClients()


@pytest.fixture
def encryption(aws, monkeypatch):
    """Personal data encrypted under a KMS key (moto), emails hashed with a
    key from a secret, erasures recorded in a bucket: settings for the
    application built after it."""
    from devstack.aws import new_hmac_key_secret

    key_id = aws("kms").create_key(Description="personal data")["KeyMetadata"]["KeyId"]
    secret = aws("secretsmanager").create_secret(Name=f"email-hash-{uuid.uuid4().hex[:8]}",
                                                 SecretString=new_hmac_key_secret())["ARN"]
    bucket = f"erasure-log-{uuid.uuid4().hex[:8]}"
    aws("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    monkeypatch.setenv("KMS_KEY_ID", key_id)
    monkeypatch.setenv("EMAIL_HASH_SECRET_ARN", secret)
    monkeypatch.setenv("ERASURE_LOG_BUCKET", bucket)
    return key_id


@pytest.fixture
def dlq(aws, monkeypatch):
    """The projection's dead-letter queue (moto), for the application built after it."""
    return _set(monkeypatch, "PROJECTION_DLQ_URL",
                aws("sqs").create_queue(QueueName=f"projection-dlq-{uuid.uuid4().hex[:8]}")["QueueUrl"])


@pytest.fixture
def signed_messages(aws, monkeypatch):
    """The relay signs what it publishes, the projection refuses what it did
    not sign: the key, in a secret (moto), for the application built after it."""
    from devstack.aws import new_hmac_key_secret

    name = f"message-signing-{uuid.uuid4().hex[:8]}"
    aws("secretsmanager").create_secret(Name=name, SecretString=new_hmac_key_secret())
    return _set(monkeypatch, "MESSAGE_SIGNING_SECRET_ARN", name)  # a name serves as well as an ARN


def _set(monkeypatch, setting: str, value: str) -> str:
    """The setting, for the application built after it; its value."""
    monkeypatch.setenv(setting, value)
    return value


@pytest.fixture
def pool(db):
    with infra_db.new_pool(db, max_size=8) as pool:
        yield pool


@pytest.fixture
def commands(pool):
    """The command handlers on the real units of work, without HTTP."""
    return Commands(pool)
