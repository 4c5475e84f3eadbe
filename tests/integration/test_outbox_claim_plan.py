"""The relay's claim keeps its plan when the outbox's statistics are stale:
analyzed while nearly empty (its usual state), then a backlog built faster
than autovacuum analyzes it again (a broker outage). Real PostgreSQL, its
own EXPLAIN."""

import json

import psycopg
import pytest

from chalicelib.eventstore.outbox import OLDEST_WAITING_SECONDS
from chalicelib.eventstore.relay import _CLAIM, buckets_of

BACKLOG = 20_000
BATCH = 500

# Events and outbox rows as commands leave them, made in bulk.
_FILL = """
WITH e AS (
    INSERT INTO events (stream_id, stream_type, version, event_type, schema_version, data, metadata)
    SELECT gen_random_uuid(), 'Customer', 1, 'CustomerCreated', 1, '{"name": "x"}', '{}'
    FROM generate_series(1, %s)
    RETURNING global_position, stream_id)
INSERT INTO outbox (global_position, stream_id) SELECT global_position, stream_id FROM e
"""


@pytest.fixture
def stale_outbox(db):
    """An outbox analyzed with 20 published rows in it, then given a backlog
    and one parked row, autovacuum kept away meanwhile."""
    with psycopg.connect(db, autocommit=True) as conn:
        for table in ("outbox", "events"):
            conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")
        try:
            conn.execute(_FILL, (20,))
            conn.execute("UPDATE outbox SET published_at = clock_timestamp()")
            conn.execute("ANALYZE outbox")
            conn.execute("ANALYZE events")
            conn.execute(_FILL, (BACKLOG,))
            conn.execute("UPDATE outbox SET parked_at = clock_timestamp(), parked_error = 'test'"
                         " WHERE id = (SELECT id FROM outbox ORDER BY id OFFSET 5000 LIMIT 1)")
            yield conn
        finally:
            for table in ("outbox", "events"):
                conn.execute(f"ALTER TABLE {table} RESET (autovacuum_enabled)")


def _plan(conn: psycopg.Connection, buckets: list[int]) -> dict:
    (plan,) = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + _CLAIM, (buckets, [], BATCH)).fetchone()
    return (json.loads(plan) if isinstance(plan, str) else plan)[0]


def _nodes(node: dict):
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


def _buffers(plan: dict) -> int:
    top = plan["Plan"]
    return top["Shared Hit Blocks"] + top["Shared Read Blocks"]


@pytest.mark.parametrize("shards", [1, 2, 4])
def test_the_claim_walks_the_ready_rows_in_order_and_looks_up_parked_rows_by_index_on_stale_statistics(
        stale_outbox, shards):
    plan = _plan(stale_outbox, buckets_of(0, shards))
    nodes = list(_nodes(plan["Plan"]))
    assert not [n for n in nodes if n["Node Type"] in ("Sort", "Incremental Sort")], "the backlog is sorted"
    outbox_scans = {n["Alias"]: n for n in nodes if n.get("Relation Name") == "outbox"}
    assert outbox_scans["o"]["Node Type"] == "Index Scan"
    assert outbox_scans["o"]["Index Name"] == "outbox_ready_idx"
    assert outbox_scans["p"].get("Index Name") == "outbox_parked_idx"
    assert plan["Plan"]["Actual Rows"] == BATCH
    # What it reads is what a batch needs, not the backlog: each claimed row,
    # its event and its parked-row check, a few blocks apiece.
    assert _buffers(plan) < 8 * BATCH

    stale = _buffers(plan)
    stale_outbox.execute("ANALYZE outbox")
    stale_outbox.execute("ANALYZE events")
    assert stale < 2 * _buffers(_plan(stale_outbox, buckets_of(0, shards)))


def test_the_oldest_waiting_row_counts_parked_rows_and_ready_ones(stale_outbox):
    def oldest() -> float:
        return stale_outbox.execute(OLDEST_WAITING_SECONDS).fetchone()[0]

    assert oldest() > 0
    stale_outbox.execute("UPDATE outbox SET published_at = clock_timestamp() WHERE parked_at IS NULL")
    assert oldest() > 0  # the parked row is still waiting
    stale_outbox.execute("UPDATE outbox SET published_at = clock_timestamp()")
    assert oldest() is None
