"""The projection function as deployed (`project_customers`, signatures
checked, rows sealed) against raw batched upserts of the rows each batch
leads to, with the unsigned and the in-clear function beside it; and
end-to-end latency from commit to read-model row through the relay as
scheduled, the event source mapping emulator and the function."""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from bench.deployed import Deployment, become_container, settings_of
from bench.outbox_relay import Processes, _relay_part, clear_outbox
from bench.write_side import CONTEXT
from chalicelib.domain.customer import CustomerCreated, CustomerEmailChanged, registry
from chalicelib.eventstore import cloudevents
from chalicelib.eventstore.events import Metadata, RecordedEvent, recorded_event_columns
from chalicelib.eventstore.postgres import one, recorded_event_row
from chalicelib.infra.message_signing import HEADER
from chalicelib.readmodel.projection import ProjectedEvent, fold
from chalicelib.readmodel.rows import CustomerRow
from devstack.kafka import create_topic
from devstack.kafka_source import KafkaEventSource
from devstack.kafka_source_events import KafkaRecord, event_from

BATCH = 100  # the default BatchSize of an event source mapping


def _history(env: dict[str, str], database: str, customers: int, per_customer: int) -> list[RecordedEvent]:
    """Customers created, then changed round after round, stored as commands
    store them (sealed): as on a live topic, consecutive events mostly
    belong to different customers."""
    become_container(env)
    from chalicelib import application

    units = application.current().parts.units()
    ids = [uuid.uuid4() for _ in range(customers)]
    for n, cid in enumerate(ids):
        with units.begin() as unit:
            unit.events.append(cid, "Customer", 0, [registry.serialize(
                CustomerCreated(name=f"C{n}", email=f"c{n}@example.com"), Metadata.new("bench", "bench"))])
    for k in range(1, per_customer):
        for n, cid in enumerate(ids):
            change = CustomerEmailChanged(email=f"c{n}.{k}@example.com", previous_email=None)
            with units.begin() as unit:
                unit.events.append(cid, "Customer", k, [registry.serialize(change, Metadata.new("bench", "bench"))])
    with psycopg.connect(database) as conn:
        stored = conn.cursor(row_factory=recorded_event_row).execute(
            f"SELECT {recorded_event_columns()} FROM events WHERE stream_id = ANY(%s) ORDER BY global_position",
            (ids,)).fetchall()
    with units.reading() as unit:  # as the relay publishes them
        return [registry.upcast_recorded(unit.open_event(e)) for e in stored]


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


_RAW_UPSERT = """
INSERT INTO customers_view (id, name, email, version, deleted, created_at, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, email = EXCLUDED.email, version = EXCLUDED.version,
    deleted = EXCLUDED.deleted, created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at
"""


def _truncate(database: str) -> None:
    with psycopg.connect(database) as conn:
        conn.execute("TRUNCATE customers_view")


def throughput(deployment: Deployment, database: str, customers: int = 2000, per_customer: int = 5,
               rounds: int = 3) -> dict:
    from chalice.local import LambdaContext

    import app as app_module
    from chalicelib import application
    from chalicelib.application import CustomerApplication

    events = _history(deployment.env, database, customers, per_customer)
    batches = _kafka_batches(events)
    # The raw baseline gets each batch's final rows ready-made: only the writes are timed.
    raw_rows: list[list[CustomerRow]] = []
    state: dict[uuid.UUID, CustomerRow] = {}
    for batch in batches:
        touched = {}
        for e in batch:
            row = fold([ProjectedEvent.from_recorded(e)], state.get(e.stream_id))
            assert row is not None
            state[e.stream_id] = touched[e.stream_id] = row
        raw_rows.append(list(touched.values()))

    become_container(deployment.env)
    deployed = application.current()
    signing = deployed.parts.message_signing()
    assert signing is not None
    signed_events = [_msk_event(b, signing.sign) for b in batches]  # the mapping's work, not the function's
    unsigned_events = [_msk_event(b) for b in batches]
    cases: dict[str, tuple[Any, list[dict]]] = {
        "deployed": (deployed, signed_events),
        "unsigned": (CustomerApplication(settings_of(deployment.unsigned())), unsigned_events),
        "unsigned_in_clear": (CustomerApplication(settings_of(deployment.plain())), unsigned_events),
    }
    rates: dict[str, list[float]] = {name: [] for name in [*cases, "raw"]}
    context = LambdaContext("project_customers", memory_size=1024, max_runtime_ms=60_000)
    try:
        for served, batch_events in cases.values():
            application.serve(served)
            app_module.project_customers(batch_events[0], context)  # warm: connection, keys, prepared statements
        names = list(cases)
        for n in range(rounds):
            # Each goes first in turn: what the table went through before weighs on all alike.
            for name in names[n % len(names):] + names[:n % len(names)]:
                served, batch_events = cases[name]
                application.serve(served)
                _truncate(database)
                began = time.perf_counter()
                for event in batch_events:
                    app_module.project_customers(event, context)
                rates[name].append(len(events) / (time.perf_counter() - began))

            _truncate(database)
            with psycopg.connect(database) as conn:
                began = time.perf_counter()
                for rows in raw_rows:
                    with conn.transaction(), conn.cursor() as cursor:
                        cursor.executemany(_RAW_UPSERT, [(r.id, Jsonb(r.name), Jsonb(r.email), r.version,
                                                          r.deleted, r.created_at, r.updated_at) for r in rows])
                rates["raw"].append(len(events) / (time.perf_counter() - began))
    finally:
        application.serve(None)
        for served, _ in cases.values():
            served.close()
    return {"events": len(events), "batch_size": BATCH,
            **{f"{name}_per_second": statistics.median(values) for name, values in rates.items()}}


def latency(deployment: Deployment, database: str, bootstrap: str, commands: int = 300,
            per_second: float = 50) -> dict:
    """Commit to read-model row through the parts as deployed: the relay
    invoked as its schedule does (a process of its own), the event source
    mapping emulator and the real projection function, commands through the
    facade."""
    import app as app_module

    topic = f"bench-e2e-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic)
    env = {**deployment.env, "KAFKA_TOPIC": topic}
    clear_outbox(database)
    relays = Processes(_relay_part, [(env, 0, 1)])
    become_container(env)
    from chalicelib import application

    facade = application.current()
    source = KafkaEventSource(app_module.project_customers, bootstrap, topic, f"bench-{uuid.uuid4().hex[:8]}")
    stop = threading.Event()
    consumer = threading.Thread(target=source.run, args=(stop,))
    ids = []
    try:
        relays.go.set()
        consumer.start()
        facade.create_customer("Warm", f"warm.{uuid.uuid4().hex}@example.com", CONTEXT)
        time.sleep(1.0)
        next_at = time.perf_counter()
        for n in range(commands):
            ids.append(uuid.UUID(facade.create_customer("L", f"l{n}.{uuid.uuid4().hex}@example.com",
                                                        CONTEXT).customer_id))
            next_at += 1 / per_second
            time.sleep(max(0.0, next_at - time.perf_counter()))
        deadline = time.monotonic() + 30
        with psycopg.connect(database, autocommit=True) as conn:
            while time.monotonic() < deadline:
                done = one(conn.execute("SELECT count(*) FROM customers_view WHERE id = ANY(%s)", (ids,)))
                if done == len(ids):
                    break
                time.sleep(0.1)
            samples = sorted(r[0] for r in conn.execute(
                "SELECT extract(epoch FROM v.projected_at - e.recorded_at) * 1000 FROM customers_view v"
                " JOIN events e ON e.stream_id = v.id AND e.version = 1 WHERE v.id = ANY(%s)", (ids,)))
    finally:
        stop.set()
        consumer.join(timeout=30)
        relays.stop()
    assert len(samples) == commands, f"only {len(samples)} of {commands} rows were projected"
    return {"commands": commands, "p50_ms": float(statistics.median(samples)),
            "p99_ms": float(samples[min(len(samples) - 1, int(len(samples) * 0.99))])}
