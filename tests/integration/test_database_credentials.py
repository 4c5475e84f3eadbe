"""Database credentials from Secrets Manager (moto): read once, and read again
when PostgreSQL refuses them after a rotation, without a restart. On a
PostgreSQL of its own, which asks this role for its password."""

import json
import uuid

import psycopg
import pytest

from chalicelib.application import CustomerApplication
from chalicelib.eventstore.events import CommandContext
from chalicelib.eventstore.migrations import migrate
from chalicelib.infra import db as infra_db
from chalicelib.infra.credentials import CredentialsUnavailable
from chalicelib.infra.settings import Settings
from devstack.postgres import EmbeddedPostgres, free_port, provision_login
from tests.support.fakes import RecordingSender

ROLE = "customer_service"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "pgdata", free_port())
    server.start(durable=False)
    server.require_password(ROLE)
    url = provision_login(server.url, ROLE, "first-password", "customers")
    migrate(psycopg.conninfo.make_conninfo(url, password="first-password"))
    yield server
    server.stop()


def secret_value(server, password):
    return json.dumps({"engine": "postgres", "username": ROLE, "password": password, "host": "127.0.0.1",
                       "port": server.port, "dbname": "customers"})


@pytest.fixture
def secret_arn(server, aws, monkeypatch):
    with psycopg.connect(server.url, dbname="customers", autocommit=True) as conn:
        conn.execute(f"ALTER ROLE {ROLE} PASSWORD 'first-password'")
    arn = aws("secretsmanager").create_secret(Name=f"db-{uuid.uuid4().hex[:8]}",
                                              SecretString=secret_value(server, "first-password"))["ARN"]
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_SECRET_ARN", arn)
    return arn


def rotate(server, aws, arn, password):
    """What a single-user rotation function does: the role sets its own new
    password, then the secret's current version gets it."""
    old = json.loads(aws("secretsmanager").get_secret_value(SecretId=arn)["SecretString"])
    with psycopg.connect(host="127.0.0.1", port=server.port, dbname="customers", user=ROLE,
                         password=old["password"], autocommit=True) as conn:
        conn.execute(f"ALTER ROLE {ROLE} PASSWORD '{password}'")
    aws("secretsmanager").put_secret_value(SecretId=arn, SecretString=secret_value(server, password))


def disconnect_service(server):
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (ROLE,))


def context():
    return CommandContext(correlation_id=str(uuid.uuid4()), causation_id="test")


def test_the_database_refuses_a_wrong_password(server):
    with pytest.raises(psycopg.OperationalError, match="authentication failed"):
        psycopg.connect(host="127.0.0.1", port=server.port, dbname="customers", user=ROLE, password="wrong")


def test_credentials_come_from_the_secret_and_a_rotation_is_picked_up_without_a_restart(server, aws, secret_arn,
                                                                                        monkeypatch):
    sender = RecordingSender()
    application = CustomerApplication(Settings.from_env(), aws=aws, sender=sender)
    try:
        first = application.create_customer("Ada", "ada@example.com", context())
        assert application.health().database_reachable

        rotate(server, aws, secret_arn, "second-password")
        disconnect_service(server)
        # Every new connection (the container's, the relay's) logs in with
        # the rotated password, in the same process.
        monkeypatch.setattr(infra_db, "IDLE_CHECK_SECONDS", 0.0)  # the dropped connection is noticed
        assert application.health_details().database_reachable
        second = application.create_customer("Grace", "grace@example.com", context())
        assert application.outbox_relay().run_once().published == 2
        assert [e.stream_id for e in sender.events] == [uuid.UUID(first.customer_id), uuid.UUID(second.customer_id)]
        assert application.customer(uuid.UUID(second.customer_id), strong=True).row.name == "Grace"
        assert application.customer(uuid.UUID(first.customer_id), strong=True).row.name == "Ada"
    finally:
        application.close()


def test_an_unreadable_secret_is_a_database_that_cannot_be_reached(server, aws, monkeypatch):
    monkeypatch.setenv("DATABASE_SECRET_ARN", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:missing")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    application = CustomerApplication(Settings.from_env(), aws=aws)
    try:
        health = application.health()
        assert not health.database_reachable
        with pytest.raises(CredentialsUnavailable, match="cannot read the secret"):
            application.parts.database().connect()
    finally:
        application.close()


def test_the_url_adds_options_to_what_the_secret_gives(server, aws, secret_arn, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql:///?application_name=from-the-url&connect_timeout=4")
    application = CustomerApplication(Settings.from_env(), aws=aws)
    with application.parts.database().connect() as conn:
        assert conn.execute("SELECT current_user, current_setting('application_name')").fetchone() == (
            ROLE, "from-the-url")


def test_rds_iam_tokens_are_signed_for_each_new_connection(aws, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://iam_user@db.example.internal:5432/customers?sslmode=require")
    monkeypatch.setenv("DATABASE_IAM_AUTH", "true")
    application = CustomerApplication(Settings.from_env(), aws=aws)
    conninfo = psycopg.conninfo.conninfo_to_dict(application.parts.database().conninfo())
    assert conninfo["user"] == "iam_user" and conninfo["sslmode"] == "require"
    # An RDS authentication token: a presigned connect request for this host, port and user.
    assert conninfo["password"].startswith("db.example.internal:5432/?Action=connect&DBUser=iam_user&")
    assert "X-Amz-Signature=" in conninfo["password"]
