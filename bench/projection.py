"""Projection throughput through the function against raw batched upserts of
the same rows, and end-to-end latency from commit to read-model row."""

from __future__ import annotations

import dataclasses
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable

import psycopg
from psycopg.types.json import Jsonb

from chalicelib.domain.customer import CustomerCreated, CustomerEmailChanged, registry
from chalicelib.eventstore import cloudevents
from chalicelib.eventstore.events import CommandContext, Metadata, RecordedEvent, recorded_event_columns
from chalicelib.eventstore.outbox import wake_relay
from chalicelib.eventstore.postgres import PostgresEventStore, recorded_event_row
from chalicelib.eventstore.relay import OutboxRelay
from chalicelib.infra import db
from chalicelib.infra.kafka_publisher import KafkaPublisher
from chalicelib.infra.message_signing import HEADER
from chalicelib.readmodel.projection import ProjectedEvent, fold
from devstack.kafka import create_topic
from devstack.kafka_source import KafkaEventSource
from devstack.kafka_source_events import KafkaRecord, event_from

BATCH = 100  # the default BatchSize of an event source mapping


def _history(url: str, customers: int, per_customer: int) -> list[RecordedEvent]:
    """Customers created, then changed round after round: as on a live topic,
    consecutive events mostly belong to different customers."""
    ids = [uuid.uuid4() for _ in range(customers)]
    with db.new_pool(url, max_size=1) as pool:
        store = PostgresEventStore(pool)
        for n, cid in enumerate(ids):
            store.append(cid, "Customer", 0, [registry.serialize(
                CustomerCreated(name=f"C{n}", email=f"c{n}@example.com"), Metadata.new("bench", "bench"))])
        for k in range(1, per_customer):
            for n, cid in enumerate(ids):
                change = CustomerEmailChanged(email=f"c{n}.{k}@example.com", previous_email=None)
                store.append(cid, "Customer", k, [registry.serialize(change, Metadata.new("bench", "bench"))])
    with psycopg.connect(url) as conn:
        return conn.cursor(row_factory=recorded_event_row).execute(
            f"SELECT {recorded_event_columns()} FROM events WHERE stream_id = ANY(%s) ORDER BY global_position",
            (ids,)).fetchall()


def _kafka_batches(events: list[RecordedEvent], partitions: int = 3) -> list[list[RecordedEvent]]:
    """As the mapping would batch them: per partition, in offset order."""
    by_partition: dict[int, list[RecordedEvent]] = {}
    for e in events:
        by_partition.setdefault(hash(e.stream_id) % partitions, []).append(e)
    return [p[i:i + BATCH] for p in by_partition.values() for i in range(0, len(p), BATCH)]


def _msk_event(batch: list[RecordedEvent], sign: Callable[[bytes], bytes] | None = None) -> dict:
    records = []
    for e in batch:
        value = cloudevents.encode(e, "/customer-service")
        headers = {"event-type": e.event_type.encode(), **({HEADER: sign(value)} if sign else {})}
        records.append(KafkaRecord("customer-events", hash(e.stream_id) % 3, e.global_position, 0,
                                   str(e.stream_id).encode(), value, headers))
    return event_from(records, source="aws:kafka")


def _signing_application():
    """The application as deployed checks signatures: its key in a secret
    (moto, in this process; read once per container)."""
    import boto3
    from moto import mock_aws

    from chalicelib.application import CustomerApplication
    from chalicelib.infra.settings import Settings
    from devstack.aws import new_hmac_key_secret

    mock = mock_aws()
    mock.start()
    secrets = boto3.client("secretsmanager", region_name="eu-west-1", aws_access_key_id="bench",
                           aws_secret_access_key="bench", endpoint_url=None)
    arn = secrets.create_secret(Name="bench-message-signing", SecretString=new_hmac_key_secret())["ARN"]
    settings = dataclasses.replace(Settings.from_env(), message_signing_secret_arn=arn)
    return CustomerApplication(settings, aws=lambda service: secrets), mock


_RAW_UPSERT = """
INSERT INTO customers_view (id, name, email, version, deleted, created_at, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, email = EXCLUDED.email, version = EXCLUDED.version,
    deleted = EXCLUDED.deleted, created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at
"""


def _truncate(url: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("TRUNCATE customers_view")


def throughput(url: str, customers: int = 2000, per_customer: int = 5, rounds: int = 3) -> dict:
    os.environ["DATABASE_URL"] = url
    from chalice.local import LambdaContext

    import app as app_module

    events = _history(url, customers, per_customer)
    batches = _kafka_batches(events)
    msk_events = [_msk_event(b) for b in batches]  # the mapping's work, not the function's
    # The raw baseline gets each batch's final rows ready-made: only the writes are timed.
    raw_rows, state = [], {}
    for batch in batches:
        touched = {}
        for e in batch:
            state[e.stream_id] = touched[e.stream_id] = fold([ProjectedEvent.from_recorded(e)], state.get(e.stream_id))
        raw_rows.append(list(touched.values()))

    from chalicelib import application

    signing, mock = _signing_application()
    signed_events = [_msk_event(b, signing.parts.message_signing().sign) for b in batches]
    unsigned = application.current()
    ours, signed, raw = [], [], []
    context = LambdaContext("project_customers", memory_size=512, max_runtime_ms=60_000)
    try:
        for served, batch_events in ((signing, signed_events), (unsigned, msk_events)):
            application.serve(served)
            app_module.project_customers(batch_events[0], context)  # warm: connection, key, prepared statements
        for n in range(rounds):
            # Each goes first in turn: what the table went through before weighs on both alike.
            cases = [(unsigned, msk_events, ours), (signing, signed_events, signed)]
            for served, batch_events, rates in cases[n % 2:] + cases[:n % 2]:
                application.serve(served)
                _truncate(url)
                began = time.perf_counter()
                for event in batch_events:
                    app_module.project_customers(event, context)
                rates.append(len(events) / (time.perf_counter() - began))

            _truncate(url)
            with psycopg.connect(url) as conn:
                began = time.perf_counter()
                for rows in raw_rows:
                    with conn.transaction(), conn.cursor() as cursor:
                        cursor.executemany(_RAW_UPSERT, [(r.id, Jsonb(r.name), Jsonb(r.email), r.version,
                                                          r.deleted, r.created_at, r.updated_at) for r in rows])
                raw.append(len(events) / (time.perf_counter() - began))
    finally:
        application.serve(unsigned)
        signing.close()
        mock.stop()
    return {"events": len(events), "batch_size": BATCH, "function_per_second": statistics.median(ours),
            "signed_per_second": statistics.median(signed), "raw_upserts_per_second": statistics.median(raw)}


def latency(url: str, bootstrap: str, commands: int = 300, per_second: float = 50) -> dict:
    """Commit to read-model row through the local stack's parts: a running
    relay, the event source mapping emulator, the real projection function."""
    os.environ["DATABASE_URL"] = url
    import app as app_module
    from chalicelib.domain.commands import CreateCustomer
    from chalicelib.usecases.commands import CustomerCommands

    topic = f"bench-e2e-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic)
    publisher = KafkaPublisher(bootstrap, topic, "/customer-service")
    relay = OutboxRelay(lambda: psycopg.connect(url, autocommit=True), publisher)
    source = KafkaEventSource(app_module.project_customers, bootstrap, topic, f"bench-{uuid.uuid4().hex[:8]}")
    stop = threading.Event()
    threads = [threading.Thread(target=relay.run, args=(time.monotonic() + 600, stop)),
               threading.Thread(target=source.run, args=(stop,))]
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE outbox SET published_at = now() WHERE published_at IS NULL")
    for t in threads:
        t.start()
    time.sleep(1.0)
    ids = []
    with db.new_pool(url, max_size=1) as pool:
        service = CustomerCommands(PostgresEventStore(pool))
        next_at = time.perf_counter()
        for n in range(commands):
            ids.append(service.create(CreateCustomer("L", f"l{n}.{uuid.uuid4().hex}@example.com", uuid.uuid4()),
                                      CommandContext("bench")).id)
            next_at += 1 / per_second
            time.sleep(max(0.0, next_at - time.perf_counter()))
    deadline = time.monotonic() + 30
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            (done,) = conn.execute("SELECT count(*) FROM customers_view WHERE id = ANY(%s)", (ids,)).fetchone()
            if done == len(ids):
                break
            time.sleep(0.1)
        samples = sorted(r[0] for r in conn.execute(
            "SELECT extract(epoch FROM v.projected_at - e.recorded_at) * 1000 FROM customers_view v"
            " JOIN events e ON e.stream_id = v.id AND e.version = 1 WHERE v.id = ANY(%s)", (ids,)))
        stop.set()
        wake_relay(conn)
    for t in threads:
        t.join(timeout=30)
    publisher.close()
    assert len(samples) == commands, f"only {len(samples)} of {commands} rows were projected"
    return {"commands": commands, "p50_ms": float(statistics.median(samples)),
            "p99_ms": float(samples[min(len(samples) - 1, int(len(samples) * 0.99))])}
