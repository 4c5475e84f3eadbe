"""Backfills as deployed: `backfill_events` invoked as its schedule invokes
it, in a process (a Lambda container) of its own, on sealed events,
publishing signed messages with the replay header.

- Rate: a backfill of a fresh part of the store against a raw kafka-python
  producer sending the same messages (opened, upcast, signed, the replay
  header) from a process of its own.
- Live traffic first: the relay's commit-to-Kafka latency (bench.outbox_relay)
  while backfills of the whole store run at full speed beside it, one after
  the other for as long as the latency run lasts.
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

import psycopg

from bench import outbox_relay
from bench.deployed import Deployment, become_container
from chalicelib.eventstore.events import RecordedEvent, recorded_event_columns
from chalicelib.eventstore.postgres import one, recorded_event_row
from chalicelib.usecases.backfills import REPLAY_HEADER
from devstack.kafka import create_topic

# An invocation is given Lambda's most; the benchmark ends it when it is done.
_INVOCATION_SECONDS = 900


def _invoke_backfills() -> dict:
    from chalice.local import LambdaContext

    import app
    from devstack.schedule import scheduled_event

    context = LambdaContext("backfill_events", memory_size=1024, max_runtime_ms=_INVOCATION_SECONDS * 1000)
    answer: dict = app.backfill_events(scheduled_event("backfill_events"), context)
    return answer


def _warm_container(env: dict[str, str], ready, go) -> None:
    """The function's container, warmed by an invocation that finds nothing
    to do (its settings read), once every process is; then go."""
    become_container(env)
    _invoke_backfills()
    ready.release()
    go.wait()


def _backfill_part(env: dict[str, str], ready, go, out) -> None:
    """The function's container, invoked as the schedule does."""
    _warm_container(env, ready, go)
    began = time.monotonic()
    answer = _invoke_backfills()
    out.put((began, time.monotonic(), sum(b["sent"] for b in answer["backfills"])))


def _backfills_without_end(env: dict[str, str], topic: str, ready, go, out) -> None:
    """A container that asks for a backfill of the whole store and runs it,
    again and again, until it is stopped."""
    from chalicelib import application

    _warm_container(env, ready, go)
    while True:
        application.current().start_backfill(topic, requested_by="bench")
        _invoke_backfills()


def _last_position(database: str) -> int:
    with psycopg.connect(database) as conn:
        return int(one(conn.execute("SELECT coalesce(max(global_position), 0) FROM events")))


def _events_after(database: str, position: int) -> list[RecordedEvent]:
    with psycopg.connect(database) as conn:
        return conn.cursor(row_factory=recorded_event_row).execute(
            f"SELECT {recorded_event_columns('e')} FROM events e WHERE e.global_position > %s"
            " ORDER BY e.transaction_id, e.global_position", (position,)).fetchall()


def rate(deployment: Deployment, database: str, bootstrap: str, streams: int = 200, per_stream: int = 50,
         rounds: int = 3) -> dict[str, Any]:
    """A backfill of `streams` customers' events against a raw producer
    sending the same messages, each a process of its own, turns about."""
    from chalicelib.eventstore.feed import Selection

    key = outbox_relay.signing_key(deployment)
    ours, raw = [], []
    count = streams * per_stream
    for round_ in range(rounds):
        topic = f"bench-backfill-{uuid.uuid4().hex[:8]}"
        create_topic(bootstrap, topic)
        env = {**deployment.env, "KAFKA_TOPIC": f"{topic}-live"}
        before = _last_position(database)
        outbox_relay.fill_outbox(env, streams, per_stream)
        outbox_relay.clear_outbox(database)  # no relay is measured here
        events = outbox_relay.as_consumers_read_them(env, _events_after(database, before))
        assert len(events) == count
        if round_ % 2:
            raw.append(outbox_relay.raw_producer_rate(bootstrap, topic, events, key,
                                                      extra_headers=((REPLAY_HEADER, b"backfill-0"),)))
        backfiller = outbox_relay.Processes(_backfill_part, [(env,)])
        try:
            become_container(env)
            from chalicelib import application

            asked = application.current().start_backfill(topic, Selection(after_global_position=before),
                                                          requested_by="bench")
            backfiller.go.set()
            [(began, ended, sent)] = backfiller.results()
        finally:
            backfiller.stop()
        done = application.current().backfill(asked.id)
        assert done is not None and done.state == "done" and sent == done.sent == count, (done, sent)
        ours.append(count / (ended - began))
        if not round_ % 2:
            raw.append(outbox_relay.raw_producer_rate(bootstrap, topic, events, key,
                                                      extra_headers=((REPLAY_HEADER, b"backfill-0"),)))
    return {"events": count, "backfill_per_second": statistics.median(ours),
            "raw_producer_per_second": statistics.median(raw)}


def live_latency_during(deployment: Deployment, database: str, bootstrap: str, events: int = 400) -> dict[str, Any]:
    """The live relay's commit-to-Kafka latency while a backfill of the whole
    store runs at full speed in a container of its own."""
    topic = f"bench-backfill-beside-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic)
    with psycopg.connect(database, autocommit=True) as conn:
        stored = one(conn.execute("SELECT count(*) FROM events"))
    backfiller = outbox_relay.Processes(_backfills_without_end, [(deployment.env, topic)])
    try:
        backfiller.go.set()
        deadline = time.monotonic() + 60
        while not _sent(database, topic):
            if time.monotonic() > deadline:
                raise TimeoutError("the backfill did not start")
            time.sleep(0.05)
        sent_before, measuring = _sent(database, topic), time.monotonic()
        latency = outbox_relay.latency(deployment, database, bootstrap, events=events)
        sent, measured = _sent(database, topic) - sent_before, time.monotonic() - measuring
        with psycopg.connect(database, autocommit=True) as conn:
            running = one(conn.execute("SELECT count(*) FROM backfills WHERE topic = %s"
                                       " AND state IN ('waiting', 'running')", (topic,)))
            failed = conn.execute("SELECT error FROM backfills WHERE topic = %s AND state = 'failed' LIMIT 1",
                                  (topic,)).fetchone()
        if failed is not None:
            raise RuntimeError(f"the backfill beside the relay failed: {failed[0]}")
    finally:
        backfiller.stop()
        with psycopg.connect(database, autocommit=True) as conn:  # none left for the next run to go on with
            conn.execute("DELETE FROM backfills WHERE topic = %s", (topic,))
    return {**latency, "stored_events": stored, "backfill_sent": sent, "backfill_running_at_end": bool(running),
            "backfill_per_second_beside": sent / measured}


def _sent(database: str, topic: str) -> int:
    with psycopg.connect(database, autocommit=True) as conn:
        return int(one(conn.execute("SELECT coalesce(sum(sent), 0) FROM backfills WHERE topic = %s", (topic,))))
