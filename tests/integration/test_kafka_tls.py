"""The relay's producer over TLS, configured by the settings alone: a broker
reached only through TLS (a proxy in front of a broker of its own, which
tells clients to come back through the proxy), a CA file that trusts it."""

import uuid

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from chalicelib.application import CustomerApplication
from chalicelib.eventstore.events import CommandContext
from chalicelib.infra.settings import Settings
from devstack.kafka import EmbeddedKafka
from devstack.postgres import free_port
from tests.support.tls import TlsProxy, make_certificates
from tests.support.waiting import wait_for

TOPIC = "customer-events"


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    ca, certificate, key = make_certificates(tmp_path_factory.mktemp("tls"))
    proxy_port = free_port()
    broker = EmbeddedKafka(free_port(), advertised_port=proxy_port)
    broker.start()
    proxy = TlsProxy(proxy_port, broker.port, certificate, key)
    security = {"security_protocol": "SSL", "ssl_cafile": str(ca)}
    admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{proxy_port}", **security)
    admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=1)])
    admin.close()
    yield f"127.0.0.1:{proxy_port}", ca, proxy
    proxy.close()
    broker.stop()


def over_tls(monkeypatch, bootstrap: str, ca_file) -> None:
    """The application's settings for the broker over TLS, trusting `ca_file`."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    monkeypatch.setenv("KAFKA_TOPIC", TOPIC)
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("KAFKA_SSL_CAFILE", str(ca_file))


def test_the_relay_publishes_over_tls_with_the_ca_file_from_the_settings(db, tls_broker, monkeypatch):
    bootstrap, ca, _ = tls_broker
    over_tls(monkeypatch, bootstrap, ca)
    application = CustomerApplication(Settings.from_env())
    try:
        created = application.create_customer("Ada", f"{uuid.uuid4().hex}@example.com", CommandContext("t", "t"))
        assert application.publish_outbox_now()[0].published == 1
    finally:
        application.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, security_protocol="SSL", ssl_cafile=str(ca),
                             group_id=None, enable_auto_commit=False)
    consumer.assign([TopicPartition(TOPIC, 0)])
    consumer.seek_to_beginning()
    keys = []

    def arrived() -> bool:
        keys.extend(r.key.decode() for batch in consumer.poll(timeout_ms=200).values() for r in batch)
        return created.customer_id in keys

    try:
        assert wait_for(arrived, timeout=15)
    finally:
        consumer.close()


def test_a_broker_certificate_the_ca_file_does_not_vouch_for_is_refused(db, tls_broker, monkeypatch, tmp_path):
    bootstrap, _, proxy = tls_broker
    other_ca, _, _ = make_certificates(tmp_path)
    over_tls(monkeypatch, bootstrap, other_ca)
    refused_before = proxy.handshakes_refused
    application = CustomerApplication(Settings.from_env())
    try:
        application.create_customer("Ada", f"{uuid.uuid4().hex}@example.com", CommandContext("t", "t"))
        result, backlog = application.publish_outbox_now()
    finally:
        application.close()
    assert (result.published, result.failures, backlog.unpublished) == (0, 1, 1)
    assert proxy.handshakes_refused > refused_before
