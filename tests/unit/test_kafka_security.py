"""Kafka TLS and SASL settings for the relay's producer (and the dead-letter
replay's consumer): checked when read, MSK IAM signed with the function's
AWS credentials, SCRAM users read from Secrets Manager (moto)."""

import json

import pytest
from kafka.net.sasl import get_sasl_mechanism

from chalicelib.application import CustomerApplication
from chalicelib.bootstrap import Bootstrap
from chalicelib.infra.settings import ConfigurationError, Settings


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/nowhere")
    for name in ("KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM", "KAFKA_SASL_SECRET_ARN", "KAFKA_SSL_CAFILE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("settings, complaint", [
    ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs KAFKA_SASL_MECHANISM"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "GSSAPI"}, "needs KAFKA_SASL_MECHANISM"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "AWS_MSK_IAM"},
     "needs KAFKA_SECURITY_PROTOCOL SASL_SSL"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"}, "needs KAFKA_SASL_SECRET_ARN"),
])
def test_settings_that_cannot_work_are_refused_when_read(env, settings, complaint):
    for name, value in settings.items():
        env.setenv(name, value)
    with pytest.raises(ConfigurationError, match=complaint):
        Settings.from_env()


def test_plaintext_is_the_default_and_adds_nothing(env):
    assert Bootstrap(Settings.from_env()).kafka_security() == {"security_protocol": "PLAINTEXT"}


def test_tls_with_a_ca_file(env):
    env.setenv("KAFKA_SECURITY_PROTOCOL", "ssl")
    env.setenv("KAFKA_SSL_CAFILE", "/etc/ssl/brokers.pem")
    assert Bootstrap(Settings.from_env()).kafka_security() == {
        "security_protocol": "SSL", "ssl_cafile": "/etc/ssl/brokers.pem"}


def test_msk_iam_is_signed_with_the_functions_aws_credentials(env, aws):
    env.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    env.setenv("KAFKA_SASL_MECHANISM", "aws_msk_iam")
    config = Bootstrap(Settings.from_env(), aws=aws).kafka_security()
    assert config == {"security_protocol": "SASL_SSL", "sasl_mechanism": "AWS_MSK_IAM"}
    # What kafka-python sends the broker when it authenticates with these settings.
    mechanism = get_sasl_mechanism(config["sasl_mechanism"])(host="b-1.cluster.kafka.eu-west-1.amazonaws.com",
                                                             **config)
    payload = json.loads(mechanism.auth_bytes())
    assert payload["action"] == "kafka-cluster:Connect"
    assert payload["x-amz-credential"].endswith("/eu-west-1/kafka-cluster/aws4_request")
    assert len(payload["x-amz-signature"]) == 64


def test_a_scram_user_comes_from_its_secret_read_anew_for_each_new_client(env, aws):
    arn = aws("secretsmanager").create_secret(
        Name="AmazonMSK_customer-service", SecretString=json.dumps({"username": "svc", "password": "one"}))["ARN"]
    env.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    env.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    env.setenv("KAFKA_SASL_SECRET_ARN", arn)
    application = CustomerApplication(Settings.from_env(), aws=aws)
    assert application.parts.kafka_security() == {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                                            "sasl_plain_username": "svc", "sasl_plain_password": "one"}
    aws("secretsmanager").put_secret_value(SecretId=arn, SecretString=json.dumps({"username": "svc",
                                                                                  "password": "two"}))
    assert application.parts.kafka_security()["sasl_plain_password"] == "two"
