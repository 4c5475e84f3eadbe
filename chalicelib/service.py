"""Composition root: the one place that wires settings, pool, store, relay
and publisher together, on first use rather than at import."""

from __future__ import annotations

import functools

import psycopg
from psycopg_pool import ConnectionPool

from chalicelib.domain.customer import registry
from chalicelib.eventstore.outbox import OutboxRelay
from chalicelib.eventstore.postgres import PostgresEventStore
from chalicelib.handlers import CustomerService
from chalicelib.infra import db
from chalicelib.infra.kafka import KafkaPublisher
from chalicelib.infra.logs import log
from chalicelib.infra.settings import Settings


def pool() -> ConnectionPool:
    settings = Settings.from_env()
    return db.get_pool(settings.database_url, settings.db_pool_max_size)


def event_store() -> PostgresEventStore:
    return PostgresEventStore(pool())


def customer_service(store: PostgresEventStore | None = None) -> CustomerService:
    settings = Settings.from_env()
    return CustomerService(store or event_store(), max_retries=settings.command_max_retries,
                           snapshot_every=settings.customer_snapshot_every or None)


@functools.cache
def _publisher(bootstrap_servers: str, topic: str, source: str) -> KafkaPublisher:
    # One producer per container, kept by warm invocations.
    return KafkaPublisher(bootstrap_servers, topic, source)


def outbox_relay(settings: Settings | None = None) -> OutboxRelay:
    settings = settings or Settings.from_env()
    publisher = _publisher(settings.require_kafka(), settings.kafka_topic, settings.event_source)
    return OutboxRelay(
        # Its own connection, not a pooled one: it holds the relay lock and
        # LISTENs for the whole invocation.
        connect=lambda: psycopg.connect(settings.database_url, autocommit=True),
        publish=publisher,
        batch_size=settings.drain_batch_size,
        retention_seconds=settings.outbox_retention_hours * 3600,
        upcast=registry.upcast_recorded,
        on_error=lambda error: log("outbox_publish_failed", level="error", error=str(error),
                                   brokers=settings.kafka_bootstrap_servers, topic=settings.kafka_topic),
    )
