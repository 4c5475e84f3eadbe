"""What the console reads of a big outbox, it reads by index: a timeline
costs a few blocks whatever the outbox holds. Real PostgreSQL, its own
EXPLAIN."""

import json

import psycopg

from chalicelib.usecases.console import OUTBOX_OF_EVENTS
from tests.integration.test_outbox_claim_plan import _FILL, _nodes

OUTBOX_ROWS = 50_000


def test_a_timeline_finds_its_events_outbox_rows_by_index_not_by_a_scan_of_the_outbox(db):
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(_FILL, (OUTBOX_ROWS,))
        conn.execute("ANALYZE outbox")
        positions = [row[0] for row in conn.execute(
            "SELECT global_position FROM outbox ORDER BY id OFFSET 777 LIMIT 3")]
        (plan,) = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + OUTBOX_OF_EVENTS,
                               (positions,)).fetchone()
    plan = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
    assert plan["Actual Rows"] == 3
    scans = [n for n in _nodes(plan) if n.get("Relation Name") == "outbox"]
    assert [n["Node Type"] for n in scans if "Scan" in n["Node Type"]] in (["Index Scan"], ["Bitmap Heap Scan"])
    # A scan of the outbox reads hundreds of blocks here (every row), an index a few per event.
    assert plan["Shared Hit Blocks"] + plan["Shared Read Blocks"] < 30
