"""Catch-up after an outage: the relay as deployed draining a backlog that
built while the outbox's statistics came from a nearly empty table (its
usual state when autovacuum last analyzed it), against the same backlog on
a freshly analyzed outbox. Nobody runs ANALYZE in between; autovacuum is
kept off the outbox meanwhile, as it would not have come round yet."""

from __future__ import annotations

import uuid

import psycopg

from bench.deployed import Deployment
from bench.outbox_relay import Processes, _relay_part, clear_outbox, drain_rate, fill_outbox
from devstack.kafka import create_topic


def _drain_rate(env: dict[str, str], database: str, bootstrap: str, events: int, backlog) -> float:
    """The relay's rate draining what `backlog()` leaves unpublished, called
    once the relay's container is warm (its warm-up would drain it first)."""
    topic = f"bench-catch-up-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic)
    relays = Processes(_relay_part, [({**env, "KAFKA_TOPIC": topic}, 0, 1)])
    try:
        backlog()
        return drain_rate(relays, database, events)
    finally:
        relays.stop()


def rate(deployment: Deployment, database: str, bootstrap: str, streams: int = 2000, per_stream: int = 50) -> dict:
    events = streams * per_stream
    clear_outbox(database)
    with psycopg.connect(database, autocommit=True) as conn:
        # Nearly empty, as the relay keeps it: a few published rows when analyzed.
        conn.execute("DELETE FROM outbox WHERE id NOT IN (SELECT id FROM outbox ORDER BY id DESC LIMIT 20)")
        conn.execute("ANALYZE outbox")
        conn.execute("ALTER TABLE outbox SET (autovacuum_enabled = off)")
    try:
        ids: list[uuid.UUID] = []
        stale = _drain_rate(deployment.env, database, bootstrap, events,
                            lambda: ids.extend(fill_outbox(deployment.env, streams, per_stream)))

        def again() -> None:
            with psycopg.connect(database, autocommit=True) as conn:
                conn.execute("UPDATE outbox SET published_at = NULL WHERE stream_id = ANY(%s)", (ids,))
                conn.execute("ANALYZE outbox")

        fresh = _drain_rate(deployment.env, database, bootstrap, events, again)
    finally:
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute("ALTER TABLE outbox RESET (autovacuum_enabled)")
            # The outbox as the relay keeps it, for the benchmarks after this
            # one: its published rows pruned, and vacuumed now rather than by
            # an autovacuum that would run in the middle of their measures.
            conn.execute("DELETE FROM outbox WHERE published_at IS NOT NULL AND parked_at IS NULL")
            conn.execute("VACUUM ANALYZE outbox")
    return {"events": events, "stale_statistics_per_second": stale, "fresh_statistics_per_second": fresh}
