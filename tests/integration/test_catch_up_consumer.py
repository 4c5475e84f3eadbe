"""A consumer that starts from nothing, while the store is written to: the
example in docs/ joins a backfill and the live topic and gets every event of
the store once, in each customer's order."""

import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from chalicelib.eventstore.events import CommandContext
from devstack.kafka import create_topic
from tests.support.builders import stored_events, unpublished
from tests.support.relay import start_relay, stop_relay
from tests.support.waiting import wait_for

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "catch_up.py"


def test_a_late_consumer_gets_every_event_once_from_the_backfill_then_the_live_topic(
        application, db, kafka_bootstrap, topic):
    context = CommandContext("catch-up")
    stop, written = threading.Event(), []

    def write() -> None:
        while not stop.is_set():
            created = application.create_customer("Late", f"late.{uuid.uuid4().hex[:8]}@example.com", context)
            application.change_email(uuid.UUID(created.customer_id), f"late.{uuid.uuid4().hex[:8]}@example.org",
                                     context)
            written.append(created.customer_id)

    relay_stop, relay = start_relay(application.outbox_relay())
    writer = threading.Thread(target=write)
    writer.start()
    consumer = None
    try:
        assert wait_for(lambda: len(written) >= 20, timeout=30)  # a store written for a while, all on the topic
        backfill_topic = f"backfill-{uuid.uuid4().hex[:8]}"
        create_topic(kafka_bootstrap, backfill_topic)
        consumer = subprocess.Popen(
            [sys.executable, str(EXAMPLE)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "KAFKA_TOPIC": topic, "BACKFILL_TOPIC": backfill_topic,
                 "IDLE_SECONDS": "4", "PATH": ""})
        assert "reading the live topic from now on" in consumer.stderr.readline()
        time.sleep(0.3)
        backfill = application.start_backfill(backfill_topic)
        assert application.run_backfill(backfill.id, 60).backfill.state == "done"
        time.sleep(0.5)  # and the store is still being written
    finally:
        stop.set()
        writer.join(timeout=30)
        assert wait_for(lambda: unpublished(db) == 0, timeout=30)
        stop_relay(db, relay_stop, relay)
    out, err = consumer.communicate(timeout=120)
    assert consumer.returncode == 0, err
    applied = [tuple(line.split()[:2]) for line in out.splitlines()]
    stored = [(str(e.stream_id), f"v{e.version}") for e in stored_events(db)]
    assert sorted(applied) == sorted(stored)  # every event, once
    assert backfill.end_transaction > 0 and len(stored) > 40
