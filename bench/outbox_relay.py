"""Outbox relay throughput at 1, 2 and 4 shards against as many raw
kafka-python producers sending the same messages to the same broker, each a
process of its own; commit-to-Kafka latency at 1 and 4 shards."""

from __future__ import annotations

import statistics
import threading
import time
import uuid

import psycopg
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from chalicelib.domain.commands import CreateCustomer
from chalicelib.domain.customer import CustomerCreated, CustomerEmailChanged, registry
from chalicelib.eventstore import cloudevents
from chalicelib.eventstore.events import CommandContext, Metadata, RecordedEvent, recorded_event_columns
from chalicelib.eventstore.outbox import BUCKETS, wake_relay
from chalicelib.eventstore.postgres import PostgresEventStore, recorded_event_row
from chalicelib.eventstore.relay import OutboxRelay
from chalicelib.infra import db
from chalicelib.infra.kafka_publisher import PRODUCER_SETTINGS, KafkaPublisher
from chalicelib.usecases.commands import CustomerCommands
from devstack.kafka import create_topic

SOURCE = "/customer-service"


def _fill_outbox(url: str, streams: int, per_stream: int) -> None:
    with db.new_pool(url, max_size=1) as pool:
        store = PostgresEventStore(pool)
        for _ in range(streams):
            events = [registry.serialize(CustomerCreated(name="Ada", email="e@example.com"),
                                         Metadata.new("bench", "bench"))]
            events += [registry.serialize(CustomerEmailChanged(email=f"e{n}@example.com", previous_email=None),
                                          Metadata.new("bench", "bench")) for n in range(per_stream - 1)]
            store.append(uuid.uuid4(), "Customer", 0, events)


def _unpublished(url: str) -> list[RecordedEvent]:
    with psycopg.connect(url) as conn:
        return conn.cursor(row_factory=recorded_event_row).execute(
            f"SELECT {recorded_event_columns('e')} FROM outbox o JOIN events e USING (global_position)"
            " WHERE o.published_at IS NULL ORDER BY o.id").fetchall()


def _clear_outbox(url: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE outbox SET published_at = now() WHERE published_at IS NULL")


def _raw_producer_part(bootstrap: str, topic: str, events: list[RecordedEvent], ready, go, out) -> None:
    """One producing process: what a hand-written producer does with its
    share of the messages: send them all, flush once. Encoding is counted, as
    the relay must encode too."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_SETTINGS)
    producer.send(topic, b"warm-up").get(timeout=30)
    ready.release()
    go.wait()
    began = time.monotonic()
    for event in events:
        producer.send(topic, key=str(event.stream_id).encode(), value=cloudevents.encode(event, SOURCE),
                      headers=[("content-type", cloudevents.CONTENT_TYPE.encode()),
                               ("event-type", event.event_type.encode())])
    producer.flush(timeout=120)
    out.put((began, time.monotonic(), len(events)))
    producer.close()


def _relay_part(url: str, bootstrap: str, topic: str, shard: int, shards: int, ready, go, out) -> None:
    """One relay process, as one Lambda container of its shard."""
    publisher = KafkaPublisher(bootstrap, topic, SOURCE)
    publisher([])  # connected first, as a warm invocation would be
    relay = OutboxRelay(lambda: psycopg.connect(url, autocommit=True), publisher, shard=shard, shards=shards)
    ready.release()
    go.wait()
    began = time.monotonic()
    result = relay.run_once()
    out.put((began, time.monotonic(), result.published, result.failures, result.missing))
    publisher.close()


def _in_processes(target, arguments: list[tuple]) -> list[tuple]:
    """Run target(*arguments[i], ready, go, out) in a process each, all set up
    before any starts; what each put in `out`."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    ready, go, out = context.Semaphore(0), context.Event(), context.Queue()
    processes = [context.Process(target=target, args=(*args, ready, go, out)) for args in arguments]
    for process in processes:
        process.start()
    for _ in processes:
        if not ready.acquire(timeout=120):
            raise TimeoutError("a benchmark process did not get ready")
    go.set()
    results = [out.get(timeout=300) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    return results


def _rate(parts: list[tuple]) -> float:
    """Events per second, from the first start to the last end."""
    return sum(p[2] for p in parts) / (max(p[1] for p in parts) - min(p[0] for p in parts))


def _raw_producer_rate(bootstrap: str, topic: str, events: list[RecordedEvent], processes: int) -> float:
    shares = [[e for e in events if e.stream_id.bytes[15] % BUCKETS % processes == n] for n in range(processes)]
    return _rate(_in_processes(_raw_producer_part, [(bootstrap, topic, share) for share in shares]))


def _relay_rate(url: str, bootstrap: str, topic: str, count: int, shards: int) -> float:
    parts = _in_processes(_relay_part, [(url, bootstrap, topic, shard, shards) for shard in range(shards)])
    assert sum(p[2] for p in parts) == count and not any(p[3] or p[4] for p in parts), parts
    return _rate(parts)


def throughput(url: str, bootstrap: str, streams: int = 200, per_stream: int = 50, rounds: int = 3,
               shard_counts: tuple[int, ...] = (1, 2, 4)) -> dict:
    """Relays at each shard count against as many raw producing processes,
    each a process of its own (as Lambda containers are), same messages."""
    count = streams * per_stream
    figures: dict[str, dict] = {}
    _clear_outbox(url)  # what earlier benchmarks left
    for shards in shard_counts:
        relay, raw = [], []
        for round_ in range(rounds):
            topic = f"bench-relay-{uuid.uuid4().hex[:8]}"
            create_topic(bootstrap, topic)
            _fill_outbox(url, streams, per_stream)
            events = _unpublished(url)
            # Alternate which goes first, so neither always meets a warmer broker.
            if round_ % 2:
                raw.append(_raw_producer_rate(bootstrap, topic, events, shards))
                relay.append(_relay_rate(url, bootstrap, topic, count, shards))
            else:
                relay.append(_relay_rate(url, bootstrap, topic, count, shards))
                raw.append(_raw_producer_rate(bootstrap, topic, events, shards))
            _clear_outbox(url)
        figures[str(shards)] = {"relay_per_second": statistics.median(relay),
                                "raw_producer_per_second": statistics.median(raw)}
    return {"events": count, "shards": figures, **figures[str(shard_counts[0])]}


def latency(url: str, bootstrap: str, events: int = 400, per_second: float = 100, shards: int = 1) -> dict:
    """Commit-to-consumer latency: commands at a steady rate while a relay
    invocation per shard runs (woken by NOTIFY) and a consumer reads the topic."""
    _clear_outbox(url)  # what earlier benchmarks left
    topic = f"bench-latency-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic)
    publishers = [KafkaPublisher(bootstrap, topic, SOURCE) for _ in range(shards)]
    for publisher in publishers:
        publisher([])
    stop = threading.Event()
    relays = [threading.Thread(target=OutboxRelay(lambda: psycopg.connect(url, autocommit=True), publisher,
                                                  shard=shard, shards=shards).run,
                               args=(time.monotonic() + 600, stop))
              for shard, publisher in enumerate(publishers)]

    # A consumer tuned for latency: the default lets the broker hold a fetch
    # for up to 500 ms waiting for more data, which would measure the consumer.
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=5)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
    consumer.assign(partitions)
    consumer.seek_to_end(*partitions)
    for p in partitions:
        consumer.position(p)
    received: dict[str, float] = {}

    def consume() -> None:
        while not stop.is_set() or len(received) < events:
            for batch in consumer.poll(timeout_ms=50).values():
                now = time.perf_counter()
                for record in batch:
                    received.setdefault(record.key.decode(), now)
            if stop.is_set() and time.perf_counter() > give_up:
                return

    give_up = float("inf")
    reader = threading.Thread(target=consume)
    for relay in relays:
        relay.start()
    reader.start()
    time.sleep(0.5)

    committed: dict[str, float] = {}
    with db.new_pool(url, max_size=1) as pool:
        service = CustomerCommands(PostgresEventStore(pool))
        interval = 1 / per_second
        next_at = time.perf_counter()
        for n in range(events):
            customer = service.create(CreateCustomer(name="L", email=f"l{n}.{uuid.uuid4().hex}@example.com",
                                                     customer_id=uuid.uuid4()),
                                      CommandContext("bench"))
            committed[str(customer.id)] = time.perf_counter()
            next_at += interval
            time.sleep(max(0.0, next_at - time.perf_counter()))
    give_up = time.perf_counter() + 30
    with psycopg.connect(url, autocommit=True) as conn:
        # The last commits may still be on their way: stopping the relay now
        # would leave them unpublished and count them as lost.
        while conn.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetchone()[0]:
            if time.perf_counter() > give_up:
                break
            time.sleep(0.01)
        stop.set()
        wake_relay(conn)
    for relay in relays:
        relay.join()
    reader.join()
    consumer.close()
    for publisher in publishers:
        publisher.close()
    samples = sorted((received[k] - t) * 1000 for k, t in committed.items() if k in received)
    assert len(samples) == events, f"only {len(samples)} of {events} events arrived"
    with psycopg.connect(url) as conn:
        (to_broker_p50,) = conn.execute(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY o.published_at - e.recorded_at)"
            " FROM outbox o JOIN events e USING (global_position) WHERE e.stream_id = ANY(%s)",
            ([uuid.UUID(k) for k in committed],)).fetchone()
    return {"events": events, "shards": shards, "p50_ms": statistics.median(samples),
            "commit_to_acked_p50_ms": to_broker_p50.total_seconds() * 1000,
            "p99_ms": samples[min(len(samples) - 1, int(len(samples) * 0.99))]}
