"""Faults injected into real parts, under load: each heals without an
operator and loses no acknowledged write. Each test is bounded in time."""

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from chalicelib.eventstore.migrations import migrate
from chalicelib.eventstore.relay import OutboxRelay
from chalicelib.infra import db as infra_db
from chalicelib.infra.kafka_publisher import KafkaPublisher
from devstack.kafka import EmbeddedKafka, create_topic
from devstack.postgres import EmbeddedPostgres, free_port
from tests.support.builders import Commands, new_customer, unpublished
from tests.support.deliveries import read_model, read_model_from_store
from tests.support.kafka import cloudevent, read_topic
from tests.support.relay import start_relay, stop_relay
from tests.support.waiting import wait_for

PROJECT = Path(__file__).resolve().parents[2]


class Writers:
    """Creates customers one after another until stopped; remembers which
    creations were acknowledged (returned), as a client would."""

    def __init__(self, commands: Commands) -> None:
        self.commands = commands
        self.acknowledged: list[uuid.UUID] = []
        self.refused = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                self.acknowledged.append(new_customer(self.commands, n).id)
            except Exception:  # noqa: BLE001 - the database is away: the client sees an error
                self.refused += 1
                self.stop.wait(0.05)

    def __enter__(self) -> "Writers":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=30)



def relaying(url: str, publisher, **options):
    results = []
    stop, thread = start_relay(OutboxRelay(lambda: psycopg.connect(url, autocommit=True, connect_timeout=2),
                                           publisher, **options), results)
    return stop, thread, results


@pytest.fixture
def own_postgres(tmp_path):
    """A durable PostgreSQL of this test's own, which it may crash."""
    server = EmbeddedPostgres(tmp_path / "pgdata", free_port())
    url = server.start(durable=True)
    migrate(url)
    yield server, url
    server.stop()


def test_postgres_crash_and_restart_under_load(own_postgres, kafka_bootstrap, topic, capsys):
    server, url = own_postgres
    publisher = KafkaPublisher(kafka_bootstrap, topic, "/customer-service")
    pool = infra_db.new_pool(url, max_size=2)
    # Two shards: each relay must find its way back on its own.
    shards = [relaying(url, publisher, idle_wait=600, shard=shard, shards=2) for shard in (0, 1)]
    try:
        with Writers(Commands(pool)) as writers:
            time.sleep(1.5)
            server.crash()
            time.sleep(1.0)
            server.start(durable=True)
            back = time.monotonic()
            with psycopg.connect(url, autocommit=True) as conn:
                back_at = conn.execute("SELECT clock_timestamp()").fetchone()[0]
            assert wait_for(lambda: len(writers.acknowledged) > 0 and writers.refused > 0)
            time.sleep(1.5)
        assert wait_for(lambda: unpublished(url) == 0, timeout=30)
        assert all(thread.is_alive() for _, thread, _ in shards), "a relay gave up instead of reconnecting"
        with psycopg.connect(url) as conn:
            stored = {r[0] for r in conn.execute("SELECT stream_id FROM events")}
            first_after = conn.execute(
                "SELECT min(o.published_at) - %s FROM outbox o JOIN events e USING (global_position)"
                " WHERE e.recorded_at > %s", (back_at, back_at)).fetchone()[0]
    finally:
        for stop, thread, _ in shards:
            stop_relay(url, stop, thread)
        pool.close()
        publisher.close()
    assert set(writers.acknowledged) <= stored, "an acknowledged write was lost"
    published = {cloudevent(r)["subject"] for r in read_topic(kafka_bootstrap, topic, expected=len(stored))}
    assert {str(i) for i in writers.acknowledged} <= published
    assert all(results[0].failures >= 1 and results[0].published for _, _, results in shards)
    with capsys.disabled():
        print(f"\n[fault] database back -> first publish of a new event: {first_after.total_seconds():.2f} s"
              f" (restart took {time.monotonic() - back:.1f} s ago); {len(writers.acknowledged)} writes"
              f" acknowledged, {writers.refused} refused while it was down")


def test_broker_paused_then_the_backlog_drains(db, commands):
    broker = EmbeddedKafka(free_port())
    bootstrap = broker.start()
    create_topic(bootstrap, "customer-events")
    publisher = KafkaPublisher(bootstrap, "customer-events", "/customer-service")
    stop, thread, results = relaying(db, publisher, idle_wait=600, retry_backoff=(0.2, 2.0))
    try:
        first = new_customer(commands, 1)
        assert wait_for(lambda: unpublished(db) == 0)
        os.kill(broker.process.pid, signal.SIGSTOP)
        try:
            paused = [new_customer(commands, n).id for n in range(2, 12)]
            time.sleep(10)
            assert unpublished(db) == 10  # held, not lost, not marked
        finally:
            os.kill(broker.process.pid, signal.SIGCONT)
        assert wait_for(lambda: unpublished(db) == 0, timeout=60)
        subjects = {cloudevent(r)["subject"] for r in read_topic(bootstrap, "customer-events", expected=11)}
        assert {str(first.id), *map(str, paused)} <= subjects
        assert thread.is_alive()
    finally:
        stop_relay(db, stop, thread)
        publisher.close()
        broker.stop()


_DIE_AFTER_PUBLISHING = """
import os, sys, time, psycopg
from chalicelib.eventstore.relay import OutboxRelay
from chalicelib.infra.kafka_publisher import KafkaPublisher
publisher = KafkaPublisher(sys.argv[2], sys.argv[3], "/customer-service")
class SendThenHang:
    def send(self, events):
        publisher.send(events)()
        print("published", len(events), flush=True)
        time.sleep(600)  # killed here: published, not marked
OutboxRelay(lambda: psycopg.connect(sys.argv[1], autocommit=True), SendThenHang()).run_once()
"""


def test_relay_killed_between_publish_and_mark_republishes(db, commands, kafka_bootstrap, topic):
    customers = [new_customer(commands, n).id for n in range(5)]
    relay = subprocess.Popen([sys.executable, "-c", _DIE_AFTER_PUBLISHING, db, kafka_bootstrap, topic],
                             cwd=PROJECT, stdout=subprocess.PIPE, text=True)
    try:
        assert relay.stdout.readline().startswith("published 5")
    finally:
        relay.kill()
        relay.wait()
    assert unpublished(db) == 5
    publisher = KafkaPublisher(kafka_bootstrap, topic, "/customer-service")
    try:  # the next invocation; PostgreSQL freed the dead one's lock
        result = OutboxRelay(lambda: psycopg.connect(db, autocommit=True), publisher).run_once()
    finally:
        publisher.close()
    assert result.published == 5 and unpublished(db) == 0
    subjects = [cloudevent(r)["subject"] for r in read_topic(kafka_bootstrap, topic, expected=10)]
    assert sorted(set(subjects)) == sorted(map(str, customers)) and len(subjects) == 10


def test_projection_killed_resumes_from_committed_offsets(db, commands, kafka_bootstrap, topic):
    publisher = KafkaPublisher(kafka_bootstrap, topic, "/customer-service")
    relay = OutboxRelay(lambda: psycopg.connect(db, autocommit=True), publisher)
    env = {**os.environ, "DATABASE_URL": db, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "KAFKA_TOPIC": topic,
           "PROJECTION_GROUP_ID": f"faults-{uuid.uuid4().hex[:8]}", "PROJECTION_BATCH_SIZE": "5",
           "LOG_LEVEL": "warning"}

    def customers_published(numbers: range) -> None:
        for n in numbers:
            new_customer(commands, n)
        relay.run_once()

    def projection_until(condition, then_stop: signal.Signals) -> None:
        projection = subprocess.Popen([sys.executable, "-m", "devstack.kafka_source"], cwd=PROJECT, env=env,
                                      stdout=subprocess.DEVNULL)
        try:
            assert wait_for(condition, timeout=30)
        finally:
            projection.send_signal(then_stop)
            projection.wait(timeout=30)

    try:
        customers_published(range(20))
        # Killed mid-stream, between batches or inside one.
        projection_until(lambda: len(read_model(db)) >= 5, then_stop=signal.SIGKILL)
        customers_published(range(20, 30))
        projection_until(lambda: read_model(db) == read_model_from_store(db), then_stop=signal.SIGTERM)
    finally:
        publisher.close()
