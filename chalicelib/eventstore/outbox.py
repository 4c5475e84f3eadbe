"""The outbox relay: publish committed events in order, then mark them.

Generic: it knows recorded events and a `publish` callable, not Kafka.

- It reads "every row still unpublished, in id order", never "id > last
  published": identity values are handed out at insert and can commit out of
  order, so a row may appear below one already published. It is picked up on
  the next pass instead of being skipped.
- A stream's next event is only appended after its previous one committed,
  so id order is per-stream version order.
- Rows are marked only after `publish` returned, i.e. the broker acknowledged
  them; a crash in between republishes them (at least once, never lost).
- One relay at a time, by a session-level advisory lock that PostgreSQL frees
  by itself when the relay's connection dies.
- A row that cannot become a message (UnpublishableEvent, or an event this
  code cannot read) is parked with its error; its stream's later rows wait
  behind it, in order, and every other stream goes on. An operator retries
  or skips it.
- A lost database connection (restart, failover, network) is handled like a
  broker outage: the relay connects again with backoff, takes the lock again
  and goes on publishing until its deadline.
- Between commits it sleeps until notified. Writers notify only while it
  sleeps (migration 003), since notifying makes concurrent commits queue:
  to sleep, the relay takes SLEEP_LOCK_KEY exclusively, which waits for no
  writer (it only tries) but fails while a writer that saw it awake has not
  committed yet; then it looks once more and sleeps holding the lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psycopg

from .errors import PublishError, RowParked, UnpublishableEvent
from .events import RecordedEvent, recorded_event_columns
from .postgres import dataclass_row

# Any constant works, as long as every relay of this database uses it.
RELAY_LOCK_KEY = 7_413_020_002
SLEEP_LOCK_KEY = 7_413_020_003  # the same number as in migration 003
CHANNEL = "outbox"
# While writers are between insert and commit, the relay cannot go to sleep;
# it looks again after this long instead.
_BUSY_RECHECK_SECONDS = 0.01

# Unpublished, not parked, and not behind a parked row of the same stream.
_READY = """
o.published_at IS NULL AND o.parked_at IS NULL
AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.stream_id = o.stream_id AND p.id < o.id
                AND p.parked_at IS NOT NULL AND p.published_at IS NULL)
"""

_CLAIM = f"""
SELECT o.id AS outbox_id, {recorded_event_columns("e")}
FROM outbox o JOIN events e USING (global_position)
WHERE {_READY}
ORDER BY o.id
LIMIT %s
"""

_ANY_UNPUBLISHED = f"SELECT EXISTS (SELECT 1 FROM outbox o WHERE {_READY})"

_PARK = "UPDATE outbox SET parked_at = clock_timestamp(), parked_error = %s WHERE id = %s"

_MARK = "UPDATE outbox SET published_at = clock_timestamp() WHERE id = ANY(%s)"

_BACKLOG = f"""
SELECT count(*), extract(epoch FROM clock_timestamp() - min(o.created_at)),
       count(*) FILTER (WHERE o.parked_at IS NOT NULL), count(*) FILTER (WHERE {_READY})
FROM outbox o WHERE o.published_at IS NULL
"""

# For a quick health check, each an index lookup however long the backlog:
# how long the oldest unpublished row has waited, and whether any is parked.
OLDEST_WAITING_SECONDS = """
SELECT extract(epoch FROM clock_timestamp() - o.created_at) FROM outbox o
WHERE o.published_at IS NULL ORDER BY o.id LIMIT 1"""
ANY_PARKED = "SELECT EXISTS (SELECT 1 FROM outbox o WHERE o.parked_at IS NOT NULL AND o.published_at IS NULL)"

_PARKED = """
SELECT o.id, o.stream_id, e.version, e.event_type, e.schema_version, o.parked_at, o.parked_error
FROM outbox o JOIN events e USING (global_position)
WHERE o.parked_at IS NOT NULL AND o.published_at IS NULL
ORDER BY o.id
"""

# A skipped row (parked, then marked by an operator) is kept: it says which
# event consumers never saw, and the read model's lag leaves it out.
_PRUNE = """
DELETE FROM outbox WHERE id IN (
    SELECT id FROM outbox
    WHERE published_at IS NOT NULL AND parked_at IS NULL
      AND published_at < clock_timestamp() - make_interval(secs => %s)
    LIMIT 10000)
"""

# The events an operator skipped (never published, so never projected from Kafka).
SKIPPED_EVENTS = "SELECT global_position FROM outbox WHERE parked_at IS NOT NULL AND published_at IS NOT NULL"


Publish = Callable[[Sequence[RecordedEvent]], None]


@dataclass
class RelayResult:
    published: int = 0
    batches: int = 0
    failures: int = 0
    parked: int = 0
    locked_out: bool = False
    last_error: str | None = None


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
    """Wake a sleeping relay now (it also wakes by itself on each commit)."""
    conn.execute(f"NOTIFY {CHANNEL}")


def backlog(conn: psycopg.Connection) -> Backlog:
    count, age, parked, ready = conn.execute(_BACKLOG).fetchone()
    return Backlog(count, float(age) if age is not None else None, parked, ready)


class OutboxRelay:
    def __init__(
        self,
        connect: Callable[[], psycopg.Connection],
        publish: Publish,
        *,
        batch_size: int = 500,
        idle_wait: float = 5.0,
        retry_backoff: tuple[float, float] = (0.5, 10.0),
        reconnect_backoff: tuple[float, float] = (0.1, 2.0),
        retention_seconds: float = 7 * 24 * 3600,
        on_error: Callable[[Exception], None] = lambda error: None,
        on_parked: Callable[[int, RecordedEvent, str], None] = lambda outbox_id, event, error: None,
        upcast: Callable[[RecordedEvent], RecordedEvent] = lambda event: event,
    ) -> None:
        self._connect = connect
        self._publish = publish
        self._batch_size = batch_size
        # Notifications wake the relay; this is only the longest sleep
        # between checks should one be lost (say, the listening connection
        # was replaced).
        self._idle_wait = idle_wait
        self._retry_backoff = retry_backoff
        # Short: a database that is back should see its new events published
        # within seconds, and trying to connect costs little.
        self._reconnect_backoff = reconnect_backoff
        self._retention_seconds = retention_seconds
        self._on_error = on_error
        self._on_parked = on_parked
        # Consumers get today's shape of every event, however old the row.
        self._upcast = upcast

    def run(self, deadline: float, stop: threading.Event | None = None) -> RelayResult:
        """Drain until `deadline` (time.monotonic()) or until `stop` is set,
        sleeping between commits until notified. Returns at once if another
        relay runs. Whoever sets `stop` sends a NOTIFY on the channel to wake
        a sleeping relay."""
        result = RelayResult()
        stop = stop or threading.Event()
        backoff = self._reconnect_backoff[0]
        while True:
            try:
                self._relay_on_one_connection(deadline, stop, result)
                return result
            except psycopg.OperationalError as error:
                result.failures += 1
                result.last_error = f"database connection lost: {error}"
                self._on_error(error)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or stop.wait(min(backoff, remaining)):
                return result
            backoff = min(backoff * 2, self._reconnect_backoff[1])

    def _relay_on_one_connection(self, deadline: float, stop: threading.Event, result: RelayResult) -> None:
        with self._connect() as conn:
            conn.autocommit = True
            if not conn.execute("SELECT pg_try_advisory_lock(%s)", (RELAY_LOCK_KEY,)).fetchone()[0]:
                result.locked_out = True
                return
            try:
                conn.execute(f"LISTEN {CHANNEL}")
                conn.execute(_PRUNE, (self._retention_seconds,))
                self._loop(conn, deadline, stop, result)
            finally:
                if not conn.closed and not conn.broken:
                    conn.execute(f"UNLISTEN {CHANNEL}")
                    conn.execute("SELECT pg_advisory_unlock(%s)", (RELAY_LOCK_KEY,))

    def run_once(self) -> RelayResult:
        """Publish everything unpublished now, then return (operator use)."""
        return self.run(deadline=0.0)

    def _loop(self, conn: psycopg.Connection, deadline: float, stop: threading.Event, result: RelayResult) -> None:
        backoff = self._retry_backoff[0]
        while not stop.is_set():
            try:
                published = self.publish_batch(conn)
            except RowParked:
                result.parked += 1
                continue
            except PublishError as error:
                result.failures += 1
                result.last_error = str(error)
                self._on_error(error)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or stop.wait(min(backoff, remaining)):
                    return
                backoff = min(backoff * 2, self._retry_backoff[1])
                continue
            backoff = self._retry_backoff[0]
            if published:
                result.published += published
                result.batches += 1
            if published == self._batch_size:
                continue  # more may be waiting
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._sleep_until_notified(conn, remaining, stop)

    def _sleep_until_notified(self, conn: psycopg.Connection, remaining: float, stop: threading.Event) -> None:
        if not conn.execute("SELECT pg_try_advisory_lock(%s)", (SLEEP_LOCK_KEY,)).fetchone()[0]:
            # A writer that saw us awake has not committed yet: its row is
            # coming and it will not notify, so look again shortly.
            stop.wait(min(remaining, _BUSY_RECHECK_SECONDS))
            return
        try:
            # Rows committed while we were publishing notified nobody.
            if conn.execute(_ANY_UNPUBLISHED).fetchone()[0]:
                return
            for _ in conn.notifies(timeout=min(remaining, self._idle_wait), stop_after=1):
                pass
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (SLEEP_LOCK_KEY,))

    def publish_batch(self, conn: psycopg.Connection) -> int:
        """Publish the next batch and mark it; 0 when there was nothing to
        publish. Raises RowParked when a row was parked instead: the next
        claim leaves out its stream's later rows."""
        rows = conn.cursor(row_factory=_outbox_row).execute(_CLAIM, (self._batch_size,)).fetchall()
        if not rows:
            return 0
        events = []
        for outbox_id, event in rows:
            try:
                events.append(self._upcast(event))
            except PublishError:
                raise  # it cannot be read just now (say, its key not fetched): the batch is tried again
            except Exception as error:  # noqa: BLE001 - no retry can make this code read it
                self._park(conn, outbox_id, event, f"{type(error).__name__}: {error}")
        try:
            self._publish(events)
        except UnpublishableEvent as error:
            outbox_id = next(o for o, e in rows if e.global_position == error.event.global_position)
            self._park(conn, outbox_id, error.event, str(error))
        conn.execute(_MARK, ([outbox_id for outbox_id, _ in rows],))
        return len(rows)

    def _park(self, conn: psycopg.Connection, outbox_id: int, event: RecordedEvent, error: str) -> None:
        conn.execute(_PARK, (error, outbox_id))
        self._on_parked(outbox_id, event, error)
        raise RowParked(outbox_id)


_outbox_row = dataclass_row(RecordedEvent, leading=("outbox_id",))
