"""The outbox relay as deployed: each shard's `relay_outbox` invoked as its
schedule invokes it, a process (a Lambda container) of its own, on an
outbox of sealed events, publishing signed messages. Throughput at 1, 2 and
4 shards against as many raw kafka-python producers sending the same
messages (opened, signed) to the same broker, each a process of its own;
commit-to-Kafka latency at 1 and 4 shards, commands through the facade."""

from __future__ import annotations

import json
import multiprocessing
import statistics
import threading
import time
import uuid
from datetime import datetime
from typing import Any

import psycopg
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from bench.deployed import Deployment, become_container
from bench.write_side import CONTEXT
from chalicelib.domain.customer import CustomerCreated, CustomerEmailChanged, registry
from chalicelib.eventstore import cloudevents
from chalicelib.eventstore.events import Metadata, RecordedEvent, recorded_event_columns
from chalicelib.eventstore.outbox import BUCKETS
from chalicelib.eventstore.postgres import one, one_row, recorded_event_row
from chalicelib.infra.kafka_publisher import PRODUCER_SETTINGS
from chalicelib.infra.message_signing import HEADER, SCHEME, hmac_sha256
from devstack.kafka import create_topic

SOURCE = "/customer-service"
# A relay invocation is given this long; the benchmark stops it once the outbox is drained.
_INVOCATION_SECONDS = 300


def _context(seconds: float) -> Any:
    from chalice.local import LambdaContext

    # The handler stops 5 s before its time is up (app.py).
    return LambdaContext("relay_outbox", memory_size=1024, max_runtime_ms=int((5 + seconds) * 1000))


def _invoke_relay(shard: int, seconds: float) -> dict:
    import app
    from devstack.schedule import scheduled_event

    result: dict = app.relay_outbox(scheduled_event("relay_outbox", {"shard": shard}), _context(seconds))
    return result


def fill_outbox(env: dict[str, str], streams: int, per_stream: int) -> list[uuid.UUID]:
    """Customers' events as commands store them: personal data sealed, with
    their outbox rows."""
    become_container(env)
    from chalicelib import application

    units = application.current().parts.units()
    ids = []
    for _ in range(streams):
        created = CustomerCreated(name="Ada", email="e@example.com")
        events = [registry.serialize(created, Metadata.new("bench", "bench"))]
        events += [registry.serialize(CustomerEmailChanged(email=f"e{n}@example.com", previous_email=None),
                                      Metadata.new("bench", "bench")) for n in range(per_stream - 1)]
        stream = uuid.uuid4()
        with units.begin() as unit:
            unit.events.append(stream, "Customer", 0, events)
        ids.append(stream)
    return ids


def _unpublished(database: str) -> list[RecordedEvent]:
    with psycopg.connect(database) as conn:
        return conn.cursor(row_factory=recorded_event_row).execute(
            f"SELECT {recorded_event_columns('e')} FROM outbox o JOIN events e USING (global_position)"
            " WHERE o.published_at IS NULL ORDER BY o.id").fetchall()


def as_consumers_read_them(env: dict[str, str], events: list[RecordedEvent]) -> list[RecordedEvent]:
    become_container(env)
    from chalicelib import application

    with application.current().parts.units().reading() as unit:
        return [registry.upcast_recorded(unit.open_event(event)) for event in events]


def clear_outbox(database: str) -> None:
    with psycopg.connect(database) as conn:
        conn.execute("UPDATE outbox SET published_at = clock_timestamp() WHERE published_at IS NULL")


def signing_key(deployment: Deployment) -> bytes:
    secret = deployment.client("secretsmanager").get_secret_value(
        SecretId=deployment.env["MESSAGE_SIGNING_SECRET_ARN"])["SecretString"]
    return str(json.loads(secret)["hmacKey"]).encode()


def _raw_producer_part(bootstrap: str, topic: str, events: list[RecordedEvent], key: bytes,
                       extra_headers: list[tuple[str, bytes]], ready, go, out) -> None:
    """One producing process: what a hand-written producer does with its
    share of the messages: encode, sign, send them all, flush once."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_SETTINGS)
    producer.send(topic, b"warm-up").get(timeout=30)
    ready.release()
    go.wait()
    began = time.monotonic()
    for event in events:
        value = cloudevents.encode(event, SOURCE)
        producer.send(topic, key=str(event.stream_id).encode(), value=value,
                      headers=[("content-type", cloudevents.CONTENT_TYPE.encode()),
                               ("event-type", event.event_type.encode()),
                               (HEADER, SCHEME + hmac_sha256(key, value).hex().encode()),
                               *extra_headers])
    producer.flush(timeout=120)
    out.put((began, time.monotonic(), len(events)))
    producer.close()


def _relay_part(env: dict[str, str], shard: int, shards: int, ready, go, out) -> None:
    """One shard's container: warmed by an invocation on an empty outbox (its
    producer connected, its keys read), then invoked as its schedule does."""
    become_container(env, RELAY_SHARDS=str(shards))
    _invoke_relay(shard, 0.1)
    ready.release()
    go.wait()
    out.put(_invoke_relay(shard, _INVOCATION_SECONDS))


class Processes:
    """Processes running target(*arguments[i], ready, go, out), all set up
    before any starts."""

    def __init__(self, target, arguments: list[tuple]) -> None:
        context = multiprocessing.get_context("spawn")
        self.ready, self.go, self.out = context.Semaphore(0), context.Event(), context.Queue()
        self.processes = [context.Process(target=target, args=(*args, self.ready, self.go, self.out))
                          for args in arguments]
        for process in self.processes:
            process.start()
        for _ in self.processes:
            if not self.ready.acquire(timeout=120):
                self.stop()
                raise TimeoutError("a benchmark process did not get ready")

    def results(self) -> list[tuple]:
        return [self.out.get(timeout=300) for _ in self.processes]

    def stop(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.terminate()
            process.join(timeout=30)


def raw_producer_rate(bootstrap: str, topic: str, events: list[RecordedEvent], key: bytes, processes: int = 1,
                      extra_headers: tuple[tuple[str, bytes], ...] = ()) -> float:
    """Events per second that `processes` raw producers send these messages at."""
    shares = [[e for e in events if e.stream_id.bytes[15] % BUCKETS % processes == n] for n in range(processes)]
    running = Processes(_raw_producer_part, [(bootstrap, topic, share, key, list(extra_headers))
                                              for share in shares])
    try:
        running.go.set()
        parts = running.results()
    finally:
        running.stop()
    return sum(p[2] for p in parts) / (max(p[1] for p in parts) - min(p[0] for p in parts))


def _drained_at(database: str, since: datetime, count: int, timeout: float = 300) -> datetime:
    """When the last of the outbox's rows was marked published, once all are."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(database, autocommit=True) as conn:
        while one(conn.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL")):
            if time.monotonic() > deadline:
                raise TimeoutError("the relays did not drain the outbox")
            time.sleep(0.01)
        done, last = one_row(conn.execute("SELECT count(*), max(published_at) FROM outbox WHERE published_at >= %s",
                                          (since,)))
    assert done == count, f"{done} of {count} events published"
    return last


def drain_rate(relays: Processes, database: str, count: int) -> float:
    """Sets the waiting relays going; their rate draining the outbox's
    `count` unpublished rows, in events per second."""
    with psycopg.connect(database) as conn:
        began = one(conn.execute("SELECT clock_timestamp()"))
    relays.go.set()
    return count / (_drained_at(database, began, count) - began).total_seconds()


def throughput(deployment: Deployment, database: str, bootstrap: str, streams: int = 200, per_stream: int = 50,
               rounds: int = 3, shard_counts: tuple[int, ...] = (1, 2, 4)) -> dict:
    """Relays at each shard count against as many raw producing processes,
    each a process of its own (as Lambda containers are), same messages."""
    count = streams * per_stream
    key = signing_key(deployment)
    figures: dict[str, dict] = {}
    clear_outbox(database)  # what earlier benchmarks left
    for shards in shard_counts:
        relay, raw = [], []
        for round_ in range(rounds):
            topic = f"bench-relay-{uuid.uuid4().hex[:8]}"
            create_topic(bootstrap, topic)
            env = {**deployment.env, "KAFKA_TOPIC": topic}
            relays = Processes(_relay_part, [(env, shard, shards) for shard in range(shards)])
            try:
                fill_outbox(env, streams, per_stream)
                events = as_consumers_read_them(env, _unpublished(database))
                # Alternate which goes first, so neither always meets a warmer broker.
                if round_ % 2:
                    raw.append(raw_producer_rate(bootstrap, topic, events, key, shards))
                relay.append(drain_rate(relays, database, count))
            finally:
                relays.stop()
            if not round_ % 2:
                raw.append(raw_producer_rate(bootstrap, topic, events, key, shards))
            clear_outbox(database)
        figures[str(shards)] = {"relay_per_second": statistics.median(relay),
                                "raw_producer_per_second": statistics.median(raw)}
    return {"events": count, "shards": figures, **figures[str(shard_counts[0])]}


def latency(deployment: Deployment, database: str, bootstrap: str, events: int = 400, per_second: float = 100,
            shards: int = 1) -> dict:
    """Commit-to-consumer latency: commands through the facade at a steady
    rate while each shard's relay invocation runs (woken by NOTIFY) and a
    consumer reads the topic."""
    clear_outbox(database)  # what earlier benchmarks left
    # Marked all at once, those rows leave as many dead entries in the ready
    # index, which every claim walks until the outbox is vacuumed (2 ms a
    # claim at 160,000 of them: p50 13 ms instead of 6). Measured as the
    # outbox is once vacuum has been by (docs/operations.md, "The relay's
    # rhythm"), not as this benchmark's own bulk update leaves it.
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("VACUUM outbox")
    topic = f"bench-latency-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic)
    env = {**deployment.env, "KAFKA_TOPIC": topic}
    relays = Processes(_relay_part, [(env, shard, shards) for shard in range(shards)])  # stopped from here
    # A consumer tuned for latency: the default lets the broker hold a fetch
    # for up to 500 ms waiting for more data, which would measure the consumer.
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=5)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
    consumer.assign(partitions)
    consumer.seek_to_end(*partitions)
    for p in partitions:
        consumer.position(p)
    received: dict[str, float] = {}
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            for batch in consumer.poll(timeout_ms=50).values():
                now = time.perf_counter()
                for record in batch:
                    received.setdefault(record.key.decode(), now)

    reader = threading.Thread(target=consume)
    reader.start()
    committed: dict[str, float] = {}
    try:
        relays.go.set()
        become_container(env)
        from chalicelib import application

        facade = application.current()
        facade.create_customer("Warm", f"warm.{uuid.uuid4().hex}@example.com", CONTEXT)  # its key made
        time.sleep(0.5)
        interval = 1 / per_second
        next_at = time.perf_counter()
        for n in range(events):
            created = facade.create_customer("L", f"l{n}.{uuid.uuid4().hex}@example.com", CONTEXT)
            committed[created.customer_id] = time.perf_counter()
            next_at += interval
            time.sleep(max(0.0, next_at - time.perf_counter()))
        deadline = time.monotonic() + 30
        while any(k not in received for k in committed) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        reader.join()
        consumer.close()
        relays.stop()
    samples = sorted((received[k] - t) * 1000 for k, t in committed.items() if k in received)
    assert len(samples) == events, f"only {len(samples)} of {events} events arrived"
    with psycopg.connect(database) as conn:
        to_broker_p50 = one(conn.execute(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY o.published_at - e.recorded_at)"
            " FROM outbox o JOIN events e USING (global_position) WHERE e.stream_id = ANY(%s)",
            ([uuid.UUID(k) for k in committed],)))
    return {"events": events, "shards": shards, "p50_ms": statistics.median(samples),
            "commit_to_acked_p50_ms": to_broker_p50.total_seconds() * 1000,
            "p99_ms": samples[min(len(samples) - 1, int(len(samples) * 0.99))]}
