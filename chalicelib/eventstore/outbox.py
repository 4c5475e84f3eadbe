"""The outbox table as operators and health checks see it: the backlog
(per relay shard), parked rows and what an operator does with them, and
the wake-up of sleeping relays. The relay that publishes the rows is in
`relay.py`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

BUCKETS = 32  # as in migration 016: more shards than this would find no bucket
CHANNEL_PREFIX = "outbox_"  # + bucket

# Unpublished, not parked, and not behind a parked row of the same stream.
READY = """
o.published_at IS NULL AND o.parked_at IS NULL
AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.stream_id = o.stream_id AND p.id < o.id
                AND p.parked_at IS NOT NULL AND p.published_at IS NULL)
"""

_BACKLOG = f"""
SELECT o.bucket %% %s, count(*), extract(epoch FROM clock_timestamp() - min(o.created_at)),
       count(*) FILTER (WHERE o.parked_at IS NOT NULL), count(*) FILTER (WHERE {READY})
FROM outbox o WHERE o.published_at IS NULL
GROUP BY 1
"""

# For a quick health check, each an index lookup however long the backlog:
# how long the oldest unpublished row has waited (the oldest ready one, or
# a parked one: migration 019 indexes them apart), and whether any is parked.
OLDEST_WAITING_SECONDS = """
SELECT extract(epoch FROM clock_timestamp() - least(
    (SELECT o.created_at FROM outbox o WHERE o.published_at IS NULL AND o.parked_at IS NULL ORDER BY o.id LIMIT 1),
    (SELECT min(o.created_at) FROM outbox o WHERE o.parked_at IS NOT NULL AND o.published_at IS NULL)))"""
ANY_PARKED = "SELECT EXISTS (SELECT 1 FROM outbox o WHERE o.parked_at IS NOT NULL AND o.published_at IS NULL)"

_PARKED = """
SELECT o.id, o.stream_id, e.version, e.event_type, e.schema_version, o.parked_at, o.parked_error
FROM outbox o JOIN events e USING (global_position)
WHERE o.parked_at IS NOT NULL AND o.published_at IS NULL
ORDER BY o.id
"""

# The events an operator skipped (never published, so never projected from Kafka).
SKIPPED_EVENTS = "SELECT global_position FROM outbox WHERE parked_at IS NOT NULL AND published_at IS NOT NULL"



@dataclass(frozen=True)
class Backlog:
    unpublished: int
    oldest_age_seconds: float | None
    parked: int = 0
    ready: int = 0  # neither parked nor behind a parked row

    @property
    def held_back(self) -> int:
        return self.unpublished - self.parked - self.ready


@dataclass(frozen=True)
class ParkedRow:
    outbox_id: int
    stream_id: object
    version: int
    event_type: str
    schema_version: int
    parked_at: object
    error: str


def parked_rows(conn: psycopg.Connection) -> list[ParkedRow]:
    return [ParkedRow(*row) for row in conn.execute(_PARKED)]


def retry_parked(conn: psycopg.Connection, outbox_ids: Sequence[int] | None) -> int:
    """Unpark rows (all when `outbox_ids` is None): the relay tries them again."""
    condition, params = ("", ()) if outbox_ids is None else (" AND id = ANY(%s)", (list(outbox_ids),))
    count = conn.execute("UPDATE outbox SET parked_at = NULL, parked_error = NULL"
                         " WHERE parked_at IS NOT NULL AND published_at IS NULL" + condition, params).rowcount
    wake_relay(conn)
    return count


def skip_parked(conn: psycopg.Connection, outbox_id: int) -> bool:
    """Give up on a parked row: marked as handled without being published,
    so its stream's later rows go on. Its error stays, prefixed."""
    skipped = conn.execute("UPDATE outbox SET published_at = clock_timestamp(),"
                           " parked_error = 'skipped by an operator: ' || parked_error"
                           " WHERE id = %s AND parked_at IS NOT NULL AND published_at IS NULL",
                           (outbox_id,)).rowcount == 1
    if skipped:
        wake_relay(conn)
    return skipped


def republish_since(conn: psycopg.Connection, since: object) -> int:
    """Publish again every row published at or after `since` (a timestamp
    of the database's clock): the topic they went to was lost. The relay
    sends them again in id order; consumers take duplicates as no-ops."""
    count = conn.execute("UPDATE outbox SET published_at = NULL"
                         " WHERE published_at >= %s AND parked_at IS NULL", (since,)).rowcount
    wake_relay(conn)
    return count


def wake_relay(conn: psycopg.Connection) -> None:
    """Wake every sleeping relay now (they also wake by themselves on each commit)."""
    conn.execute("SELECT pg_notify(%s || b, '') FROM generate_series(0, %s) AS b", (CHANNEL_PREFIX, BUCKETS - 1))


def backlog(conn: psycopg.Connection) -> Backlog:
    """The whole outbox's backlog."""
    return total(backlog_by_shard(conn, 1))


def backlog_by_shard(conn: psycopg.Connection, shards: int) -> list[Backlog]:
    """Each shard's backlog, shard 0 first, with `shards` relays."""
    found = {shard: Backlog(count, float(age) if age is not None else None, parked, ready)
             for shard, count, age, parked, ready in conn.execute(_BACKLOG, (shards,))}
    return [found.get(shard, Backlog(0, None)) for shard in range(shards)]


def total(backlogs: Sequence[Backlog]) -> Backlog:
    ages = [b.oldest_age_seconds for b in backlogs if b.oldest_age_seconds is not None]
    return Backlog(sum(b.unpublished for b in backlogs), max(ages) if ages else None,
                   sum(b.parked for b in backlogs), sum(b.ready for b in backlogs))

