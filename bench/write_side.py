"""Customer creations per second as deployed (the facade the view calls,
personal data sealed) against the same in clear, raw SQL and the
`eventsourcing` library, on the same database in the same run; a customer's
load time through the units of work commands use."""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable

import psycopg
from psycopg.conninfo import conninfo_to_dict

from bench.deployed import become_container
from chalicelib.domain import customer as customer_domain
from chalicelib.domain.customer import CustomerEmailChanged, registry
from chalicelib.eventstore.events import CommandContext, Metadata, Snapshot
from chalicelib.eventstore.postgres import one

CONTEXT = CommandContext(correlation_id="bench", causation_id="bench",
                         actor={"subject": "bench", "client_id": "bench"})
Work = Callable[[int], None]


def rate(factory: Callable[[str, int], Work], url: str, writers: int, seconds: float) -> float:
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


def ours(env: dict[str, str], url: str, writers: int) -> Work:
    """A function's container with `env`: the facade the POST /customer view
    calls, on the parts the composition root makes."""
    become_container(env)
    from chalicelib import application

    facade = application.current()

    def work(n: int) -> None:
        facade.create_customer("Ada", f"{uuid.uuid4().hex}@example.com", CONTEXT)  # emails are unique
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
            position = one(conn.execute(
                "INSERT INTO events (stream_id, stream_type, version, event_type, schema_version,"
                " data, metadata) VALUES (%s, 'Customer', 1, 'CustomerCreated', 1, %s, %s)"
                " RETURNING global_position", (stream_id, data, metadata)))
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


_SAME_ROWS = """
WITH e AS (
    INSERT INTO events (stream_id, stream_type, version, event_type, schema_version, data, metadata)
    VALUES (%(stream_id)s, 'Customer', 1, 'CustomerCreated', 1, %(data)s, %(metadata)s)
    RETURNING global_position, stream_id),
r AS (INSERT INTO reservations (scope, key, owner) VALUES ('customer-email', %(email_hash)s, %(stream_id)s)),
k AS (INSERT INTO stream_keys (stream_id, kek_id, wrapped_key) VALUES (%(stream_id)s, %(kek_id)s, %(wrapped_key)s))
INSERT INTO outbox (global_position, stream_id) SELECT global_position, stream_id FROM e
"""


_SAME_ROWS_MARK = "bench-same-rows"


def remove_same_rows(url: str) -> None:
    """The same rows are not customers: their wrapped key is another
    customer's, which opens for no one (the wrap is bound to its stream), and
    the backfills measured after would stop at the first of them."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute("CREATE TEMP TABLE same_rows ON COMMIT DROP AS SELECT DISTINCT stream_id FROM events"
                     " WHERE metadata->>'correlation_id' = %s", (_SAME_ROWS_MARK,))
        for table, column in (("outbox", "stream_id"), ("reservations", "owner"), ("stream_keys", "stream_id"),
                              ("events", "stream_id")):
            conn.execute(f"DELETE FROM {table} WHERE {column} IN (SELECT stream_id FROM same_rows)")
    with psycopg.connect(url, autocommit=True) as conn:
        # Vacuumed now, not by an autovacuum in the middle of the latency measured next.
        conn.execute("VACUUM ANALYZE events, outbox, reservations, stream_keys")


def raw_same_rows(url: str, writers: int) -> Callable[[int], None]:
    """By hand, in one statement, the rows a creation as deployed writes: its
    event (data as sealed, of the same size), its outbox row, its email's
    reservation (a keyed hash) and the customer's wrapped key. The sizes are
    taken from a customer the facade created."""
    conn = psycopg.connect(url, autocommit=True)
    row = conn.execute("SELECT e.data, e.metadata, k.kek_id, k.wrapped_key FROM events e"
                       " JOIN stream_keys k USING (stream_id) WHERE e.version = 1"
                       " ORDER BY e.global_position DESC LIMIT 1").fetchone()
    if row is None:
        raise RuntimeError("no sealed customer to copy the sizes of: run the deployed case first")
    data, metadata, kek_id, wrapped_key = json.dumps(row[0]), row[1], row[2], bytes(row[3])

    def work(n: int) -> None:
        conn.execute(_SAME_ROWS, {"stream_id": uuid.uuid4(), "data": data,
                                  "metadata": json.dumps({**metadata, "event_id": str(uuid.uuid4()),
                                                          "correlation_id": _SAME_ROWS_MARK}),
                                  "email_hash": os.urandom(32).hex(), "kek_id": kek_id, "wrapped_key": wrapped_key})
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
    env: dict[str, str] = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(params["dbname"]),
        "POSTGRES_HOST": str(params.get("host", "127.0.0.1")),
        "POSTGRES_PORT": str(params.get("port", 5432)),
        "POSTGRES_USER": str(params.get("user", "postgres")),
        "POSTGRES_PASSWORD": str(params.get("password", "")),
        "POSTGRES_POOL_SIZE": "1",
        "POSTGRES_MAX_OVERFLOW": "0",
        # Created once beforehand: concurrent CREATE TABLE IF NOT EXISTS from
        # several writers races in the catalog.
        "CREATE_TABLE": "y" if create_tables else "n",
    }
    app: Application = Application(env=env)

    def work(n: int) -> None:
        app.save(Customer(name="Ada", email=f"ada{n}@example.com"))
    return work


def load_time(env: dict[str, str], events: int, snapshot_every: int | None = None, repeats: int = 20) -> float:
    """Median seconds to load a customer with `events` events, as a command
    loads it: through a unit of work of a container with `env` (with
    snapshots every `snapshot_every`)."""
    become_container(env, CUSTOMER_SNAPSHOT_EVERY=str(snapshot_every or 0))
    from chalicelib import application

    facade = application.current()
    units = facade.parts.units()
    customer_id = uuid.UUID(facade.create_customer("Ada", f"{uuid.uuid4().hex}@example.com", CONTEXT).customer_id)
    version = 1
    while version < events:
        # Appended in chunks that end on snapshot boundaries, as single
        # commands would have left them.
        step = min(500, events - version)
        if snapshot_every:
            step = min(step, snapshot_every - version % snapshot_every)
        batch = [registry.serialize(CustomerEmailChanged(email=f"ada{version + n}@example.com", previous_email=None),
                                    Metadata.new("bench", "bench")) for n in range(step)]
        snapshot = None
        if snapshot_every and (version + step) % snapshot_every == 0:
            state = {"name": "Ada", "email": f"ada{version + step - 1}@example.com", "deleted": False,
                     "erased": False}
            snapshot = Snapshot(version + step, customer_domain.Customer.state_schema_version, state)
        with units.begin() as unit:
            unit.events.append(customer_id, "Customer", version, batch, snapshot)
        version += step
    timings = []
    for _ in range(repeats + 1):
        began = time.perf_counter()
        with units.begin() as unit:
            loaded = unit.customers.get(customer_id)
        timings.append(time.perf_counter() - began)
    assert loaded.version == events
    facade.close()
    return statistics.median(timings[1:])  # the first one warms the key and the statements


SNAPSHOT_EVERY = 100

def run(url: str, env: dict[str, str], clear: dict[str, str], seconds: float, rounds: int) -> dict:
    cases: dict[str, Callable[[str, int], Work]] = {
        "ours": functools.partial(ours, env),
        "ours_in_clear": functools.partial(ours, clear),
        "raw_sql": raw_two_inserts,
        "raw_sql_one_statement": raw_one_statement,
        "raw_same_rows": raw_same_rows,
        "eventsourcing": eventsourcing_lib,
    }
    results: dict = {"creations_per_second": {}}
    eventsourcing_lib(url, 1, create_tables=True)
    for writers in (1, 4):
        figures: dict[str, list[float]] = {name: [] for name in cases}
        # Rounds alternate the cases, so that a slow spell of the disk does
        # not land on one of them only; the median of the rounds is kept.
        for _ in range(rounds):
            for name, factory in cases.items():
                figures[name].append(rate(factory, url, writers, seconds))
        results["creations_per_second"][str(writers)] = {name: statistics.median(v) for name, v in figures.items()}
    remove_same_rows(url)
    quick = seconds < 1
    results["load_1000_events_ms"] = {"sealed": load_time(env, 1000) * 1000, "clear": load_time(clear, 1000) * 1000}
    big = 1000 if quick else 10_000
    results["snapshots"] = {
        "every": SNAPSHOT_EVERY, "events": big,
        "load_without_ms": load_time(env, big) * 1000,
        "load_with_ms": load_time(env, big, SNAPSHOT_EVERY) * 1000,
        "load_1_event_ms": load_time(env, 1, SNAPSHOT_EVERY) * 1000,
        # The least lucky customer: a snapshot and 99 events after it.
        "load_unlucky_with_ms": load_time(env, big + SNAPSHOT_EVERY - 1, SNAPSHOT_EVERY) * 1000,
    }
    return results
