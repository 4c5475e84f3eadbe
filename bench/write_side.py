"""Customer creations per second: our handler path against raw SQL and the
`eventsourcing` library, on the same database in the same run."""

from __future__ import annotations

import functools
import json
import multiprocessing
import statistics
import threading
import time
import uuid
from collections.abc import Callable

import psycopg
from psycopg.conninfo import conninfo_to_dict

from chalicelib.domain import customer as customer_domain
from chalicelib.domain.commands import CreateCustomer
from chalicelib.domain.customer import CustomerEmailChanged, registry
from chalicelib.eventstore.events import CommandContext, Metadata, Snapshot
from chalicelib.eventstore.postgres import PostgresEventStore
from chalicelib.infra import db
from chalicelib.usecases.commands import CustomerCommands

CONTEXT = CommandContext(correlation_id="bench", causation_id="bench")


def rate(factory: Callable[[str, int], Callable[[int], None]], url: str, writers: int, seconds: float) -> float:
    """Operations per second of `writers` processes, each with its own worker
    and connection, all started together and run for `seconds`.

    Processes, not threads: concurrent Lambda invocations are separate
    processes, and threads would measure the GIL rather than the database.
    """
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Barrier(writers + 1)
    stop = ctx.Event()
    counts = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(factory, url, writers, ready, stop, counts)) for _ in range(writers)]
    for proc in procs:
        proc.start()
    try:
        ready.wait(timeout=120)
    except threading.BrokenBarrierError:
        raise RuntimeError(f"a writer failed to start: {counts.get(timeout=10)}") from None
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    results = [counts.get(timeout=120) for _ in procs]
    elapsed = time.perf_counter() - began
    for proc in procs:
        proc.join()
    failures = [r for r in results if isinstance(r, str)]
    if failures:
        raise RuntimeError(f"a writer failed: {failures[0]}")
    return sum(results) / elapsed


def _writer(factory, url, writers, ready, stop, counts) -> None:
    try:
        work = factory(url, writers)
        for n in range(20):  # warm up: connect, prepare statements
            work(-n - 1)
    except BaseException as error:
        ready.abort()
        counts.put(repr(error))
        return
    ready.wait()
    n = 0
    try:
        while not stop.is_set():
            work(n)
            n += 1
    except BaseException as error:  # reported: a broken case must not read as slow
        counts.put(repr(error))
        return
    counts.put(n)


def ours(url: str, writers: int) -> Callable[[int], None]:
    # The connection and store a Lambda container gets from the composition root.
    service = CustomerCommands(PostgresEventStore(db.Database(url).connections(1)))

    def work(n: int) -> None:
        customer_id = uuid.uuid4()  # emails are unique: one per customer
        service.create(CreateCustomer(name="Ada", email=f"{customer_id.hex}@example.com", customer_id=customer_id),
                       CONTEXT)
    return work


def _payload(n: int) -> tuple[str, str]:
    data = json.dumps({"name": "Ada", "email": f"ada{n}@example.com"})
    metadata = json.dumps(Metadata.new("bench", "bench").to_dict())
    return data, metadata


def raw_two_inserts(url: str, writers: int) -> Callable[[int], None]:
    """What one writes by hand: a transaction with an event and an outbox row."""
    conn = psycopg.connect(url)

    def work(n: int) -> None:
        data, metadata = _payload(n)
        stream_id = uuid.uuid4()
        with conn.transaction():
            (position,) = conn.execute(
                "INSERT INTO events (stream_id, stream_type, version, event_type, schema_version,"
                " data, metadata) VALUES (%s, 'Customer', 1, 'CustomerCreated', 1, %s, %s)"
                " RETURNING global_position", (stream_id, data, metadata)).fetchone()
            conn.execute("INSERT INTO outbox (global_position, stream_id) VALUES (%s, %s)",
                         (position, stream_id))
    return work


def raw_one_statement(url: str, writers: int) -> Callable[[int], None]:
    """Both inserts in one hand-written statement, without any of our Python."""
    conn = psycopg.connect(url, autocommit=True)

    def work(n: int) -> None:
        data, metadata = _payload(n)
        conn.execute(
            "WITH e AS (INSERT INTO events (stream_id, stream_type, version, event_type, schema_version,"
            " data, metadata) VALUES (%s, 'Customer', 1, 'CustomerCreated', 1, %s, %s)"
            " RETURNING global_position, stream_id)"
            " INSERT INTO outbox (global_position, stream_id) SELECT global_position, stream_id FROM e",
            (uuid.uuid4(), data, metadata))
    return work


@functools.cache
def _eventsourcing_customer() -> type:
    # Defined once: the library refuses two classes under one topic name.
    from eventsourcing.domain import Aggregate, event

    class Customer(Aggregate):
        @event("Created")
        def __init__(self, name: str, email: str) -> None:
            self.name = name
            self.email = email

    return Customer


def eventsourcing_lib(url: str, writers: int, create_tables: bool = False) -> Callable[[int], None]:
    """eventsourcing 9.x with its PostgreSQL persistence, an application per
    writer process."""
    from eventsourcing.application import Application

    Customer = _eventsourcing_customer()
    params = conninfo_to_dict(url)
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": params["dbname"],
        "POSTGRES_HOST": params.get("host", "127.0.0.1"),
        "POSTGRES_PORT": str(params.get("port", 5432)),
        "POSTGRES_USER": params.get("user", "postgres"),
        "POSTGRES_PASSWORD": params.get("password", ""),
        "POSTGRES_POOL_SIZE": "1",
        "POSTGRES_MAX_OVERFLOW": "0",
        # Created once beforehand: concurrent CREATE TABLE IF NOT EXISTS from
        # several writers races in the catalog.
        "CREATE_TABLE": "y" if create_tables else "n",
    }
    app = Application(env=env)

    def work(n: int) -> None:
        app.save(Customer(name="Ada", email=f"ada{n}@example.com"))
    return work


def load_time(url: str, events: int, snapshot_every: int | None = None, repeats: int = 20) -> float:
    """Median seconds to load a customer with `events` events, through the
    repository as the handlers do (with snapshots every `snapshot_every`)."""
    connections = db.Database(url).connections(1)
    try:
        store = PostgresEventStore(connections)
        service = CustomerCommands(store, snapshot_every=snapshot_every)
        customer_id = uuid.uuid4()
        customer = service.create(
            CreateCustomer(name="Ada", email=f"{customer_id.hex}@example.com", customer_id=customer_id), CONTEXT)
        version = 1
        while version < events:
            # Appended in chunks that end on snapshot boundaries, as single
            # commands would have left them.
            step = min(500, events - version)
            if snapshot_every:
                step = min(step, snapshot_every - version % snapshot_every)
            batch = [registry.serialize(CustomerEmailChanged(email=f"ada{version + n}@example.com",
                                                             previous_email=None),
                                        Metadata.new("bench", "bench")) for n in range(step)]
            snapshot = None
            if snapshot_every and (version + step) % snapshot_every == 0:
                state = {"name": "Ada", "email": f"ada{version + step - 1}@example.com", "deleted": False,
                         "erased": False}
                snapshot = Snapshot(version + step, customer_domain.Customer.state_schema_version, state)
            store.append(customer.id, "Customer", version, batch, snapshot)
            version += step
        assert service.get(customer.id).version == events
        timings = []
        for _ in range(repeats):
            began = time.perf_counter()
            service.get(customer.id)
            timings.append(time.perf_counter() - began)
    finally:
        connections.close()
    return statistics.median(timings)


SNAPSHOT_EVERY = 100

CASES = {
    "ours": ours,
    "raw_sql": raw_two_inserts,
    "raw_sql_one_statement": raw_one_statement,
    "eventsourcing": eventsourcing_lib,
}


def run(url: str, seconds: float, rounds: int) -> dict:
    results: dict = {"creations_per_second": {}}
    eventsourcing_lib(url, 1, create_tables=True)
    for writers in (1, 4):
        figures = {name: [] for name in CASES}
        # Rounds alternate the cases, so that a slow spell of the disk does
        # not land on one of them only; the median of the rounds is kept.
        for _ in range(rounds):
            for name, factory in CASES.items():
                figures[name].append(rate(factory, url, writers, seconds))
        figures = {name: statistics.median(values) for name, values in figures.items()}
        results["creations_per_second"][str(writers)] = figures
    results["load_1000_events_ms"] = load_time(url, 1000) * 1000
    results["snapshots"] = {
        "every": SNAPSHOT_EVERY,
        "load_10000_events_without_ms": load_time(url, 10_000) * 1000,
        "load_10000_events_with_ms": load_time(url, 10_000, SNAPSHOT_EVERY) * 1000,
        "load_1_event_ms": load_time(url, 1, SNAPSHOT_EVERY) * 1000,
        # The least lucky customer: a snapshot and 99 events after it.
        "load_10099_events_with_ms": load_time(url, 10_000 + SNAPSHOT_EVERY - 1, SNAPSHOT_EVERY) * 1000,
    }
    return results


