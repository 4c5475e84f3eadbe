"""The outbox relay: publish committed events in order, then mark them.

Generic: it knows recorded events and a `Sender`, not Kafka.

- It reads "every row still unpublished, in id order", never "id > last
  published": identity values are handed out at insert and can commit out of
  order, so a row may appear below one already published. It is picked up on
  the next pass instead of being skipped.
- A stream's next event is only appended after its previous one committed,
  so id order is per-stream version order.
- Rows are marked only after the broker acknowledged them; a crash in
  between republishes them (at least once, never lost). The next batch is
  claimed and sent while the broker acknowledges one (a pipeline), never with
  a stream that is in flight.
- Relays run side by side, one per shard (RELAY_SHARDS). Rows fall in 32
  buckets by their stream id (migration 016), so a stream's rows share a
  bucket; shard s of N drains the buckets b with b % N == s, each under a
  session-level advisory lock of its own, which PostgreSQL frees by itself
  when the relay's connection dies. A bucket is drained by one relay at a
  time, in id order, whatever N each relay was started with: changing N
  moves whole buckets from one relay to another, once the first lets go.
- A row that cannot become a message (UnpublishableEvent, or an event this
  code cannot read) is parked with its error; its stream's later rows wait
  behind it, in order, and every other stream goes on. An operator retries
  or skips it.
- A lost database connection (restart, failover, network) is handled like a
  broker outage: the relay connects again with backoff, takes the lock again
  and goes on publishing until its deadline.
- Between commits it sleeps until notified. Writers notify only the relay of
  their bucket, and only while it sleeps (migration 016), since notifying
  makes concurrent commits queue: to sleep, the relay takes its buckets'
  sleep locks exclusively, which waits for no writer (it only tries) but
  fails while a writer that saw it awake has not committed yet; then it
  looks once more and sleeps holding the locks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn, Protocol

import orjson
import psycopg
from psycopg.types.json import set_json_loads

from .errors import RowParked, Unavailable, UnpublishableEvent
from .events import RecordedEvent, recorded_event_columns
from .outbox import BUCKETS, CHANNEL_PREFIX, READY
from .postgres import dataclass_row, one

# Advisory lock keys; any constants work, as long as every relay of this
# database uses them.
RELAY_LOCK_BASE = 7_413_020_100  # + bucket: who drains it
SLEEP_LOCK_BASE = 7_413_021_000  # + bucket: its relay sleeps (the number in migration 016)
# A relay that started without some of its buckets (a relay started with
# another shard count holds them) asks for them again this often.
_MISSING_RECHECK_SECONDS = 1.0
# While writers are between insert and commit, the relay cannot go to sleep;
# it looks again after this long instead.
_BUSY_RECHECK_SECONDS = 0.01

_CLAIM = f"""
SELECT o.id AS outbox_id, {recorded_event_columns("e")}
FROM outbox o JOIN events e USING (global_position)
WHERE o.bucket = ANY(%s) AND o.stream_id <> ALL(%s::uuid[]) AND {READY}
ORDER BY o.id
LIMIT %s
"""

_ANY_UNPUBLISHED = f"SELECT EXISTS (SELECT 1 FROM outbox o WHERE o.bucket = ANY(%s) AND {READY})"

# Takes what it can of these locks; the keys it got.
_TRY_LOCKS = "SELECT coalesce(array_agg(k), '{}') FROM unnest(%s::bigint[]) AS k WHERE pg_try_advisory_lock(k)"
_UNLOCK = "SELECT count(*) FILTER (WHERE pg_advisory_unlock(k)) FROM unnest(%s::bigint[]) AS k"

_PARK = "UPDATE outbox SET parked_at = clock_timestamp(), parked_error = %s WHERE id = %s"

_MARK = "UPDATE outbox SET published_at = clock_timestamp() WHERE id = ANY(%s)"

# A skipped row (parked, then marked by an operator) is kept: it says which
# event consumers never saw, and the read model's lag leaves it out.
_PRUNE = """
DELETE FROM outbox WHERE id IN (
    SELECT id FROM outbox
    WHERE published_at IS NOT NULL AND parked_at IS NULL
      AND published_at < clock_timestamp() - make_interval(secs => %s)
    LIMIT 10000)
"""

# Waits until the broker acknowledged every event of a batch; raises
# PublishError (the batch is sent again) or UnpublishableEvent (that row is
# parked).
Acknowledgement = Callable[[], None]


class Sender(Protocol):
    """Where the relay publishes (chalicelib.infra.kafka_publisher)."""

    def send(self, events: Sequence[RecordedEvent]) -> Acknowledgement:
        """Send a batch without waiting for the broker, in order; what it
        returns waits for the acknowledgements. The relay sends the next
        batch before it waits, so batches are pipelined. Raises PublishError
        when the batch cannot even be sent, UnpublishableEvent for an event
        no retry could send."""
        ...


# Makes a stored event the message consumers read (today's shape, its
# personal data readable), looking up what it needs on the relay's
# connection. Raises Unavailable (or a psycopg error) when what it needs
# cannot be had now: the batch is tried again; any other error parks the row.
Prepare = Callable[[psycopg.Connection, RecordedEvent], RecordedEvent]


def as_stored(conn: psycopg.Connection, event: RecordedEvent) -> RecordedEvent:
    return event


# Looks up, in one statement, what preparing a batch's events needs (their
# customers' keys), before each is prepared. Errors as Prepare's.
Prefetch = Callable[[psycopg.Connection, Sequence[RecordedEvent]], None]


def nothing_to_prefetch(conn: psycopg.Connection, events: Sequence[RecordedEvent]) -> None:
    return None


def buckets_of(shard: int, shards: int) -> list[int]:
    """The buckets shard `shard` of `shards` drains."""
    if not 1 <= shards <= BUCKETS or not 0 <= shard < shards:
        raise ValueError(f"shard {shard} of {shards}: shards go from 0 to RELAY_SHARDS - 1,"
                         f" and RELAY_SHARDS from 1 to {BUCKETS}")
    return [bucket for bucket in range(BUCKETS) if bucket % shards == shard]


@dataclass
class RelayResult:
    published: int = 0
    batches: int = 0
    failures: int = 0
    parked: int = 0
    locked_out: bool = False  # every bucket of its shard was being drained by another relay
    missing: int = 0  # buckets of its shard another relay held when it ended
    last_error: str | None = None


class OutboxRelay:
    def __init__(
        self,
        connect: Callable[[], psycopg.Connection],
        sender: Sender,
        *,
        batch_size: int = 500,
        idle_wait: float = 5.0,
        retry_backoff: tuple[float, float] = (0.5, 10.0),
        reconnect_backoff: tuple[float, float] = (0.1, 2.0),
        retention_seconds: float = 7 * 24 * 3600,
        on_error: Callable[[Exception], None] = lambda error: None,
        on_parked: Callable[[int, RecordedEvent, str], None] = lambda outbox_id, event, error: None,
        prepare: Prepare = as_stored,
        prefetch: Prefetch = nothing_to_prefetch,
        shard: int = 0,
        shards: int = 1,
    ) -> None:
        self.shard, self.shards = shard, shards
        self._buckets = buckets_of(shard, shards)
        self._connect = connect
        self._sender = sender
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
        self._prepare = prepare
        self._prefetch = prefetch

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
            held: list[int] = []
            try:
                self._take_missing(conn, held)
                if not held:
                    result.locked_out = True
                    return
                if 0 in held:  # one relay prunes
                    conn.execute(_PRUNE, (self._retention_seconds,))
                self._loop(conn, deadline, stop, result, held)
            finally:
                result.missing = len(self._buckets) - len(held)
                if not conn.closed and not conn.broken:
                    conn.execute("UNLISTEN *")
                    conn.execute(_UNLOCK, ([RELAY_LOCK_BASE + b for b in held],))

    def _take_missing(self, conn: psycopg.Connection, held: list[int]) -> None:
        """Lock the shard's buckets no other relay holds, and listen for their commits."""
        missing = [RELAY_LOCK_BASE + b for b in self._buckets if b not in held]
        got = sorted(key - RELAY_LOCK_BASE for key in one(conn.execute(_TRY_LOCKS, (missing,))))
        if got:
            conn.execute("; ".join(f"LISTEN {CHANNEL_PREFIX}{b}" for b in got))
            held.extend(got)
            held.sort()

    def run_once(self) -> RelayResult:
        """Publish everything unpublished now, then return (operator use)."""
        return self.run(deadline=0.0)

    def _loop(self, conn: psycopg.Connection, deadline: float, stop: threading.Event, result: RelayResult,
              held: list[int]) -> None:
        """Publish in a pipeline: the next batch is claimed and sent while
        the broker acknowledges the one before, which is then marked. A
        stream is in one batch in flight at most (the next claim leaves out
        the streams in flight), so a batch that fails cannot be overtaken by
        a later event of one of its streams."""
        backoff = self._retry_backoff[0]
        asked_at = time.monotonic()
        in_flight: _Sent | None = None
        try:
            while not stop.is_set():
                if len(held) < len(self._buckets) and time.monotonic() - asked_at >= _MISSING_RECHECK_SECONDS:
                    self._take_missing(conn, held)
                    asked_at = time.monotonic()
                looked_at_everything = in_flight is None  # else the claim left out the streams in flight
                try:
                    sent = self._send_next(conn, held, in_flight)
                    if in_flight is not None:
                        done, in_flight = in_flight, None
                        self._finish(conn, done)
                        result.published += len(done.rows)
                        result.batches += 1
                except RowParked:
                    # A batch that was sent with the parked row, or behind it,
                    # is not marked: sent again (at least once).
                    result.parked += 1
                    continue
                except Unavailable as error:  # the broker, or a key service
                    in_flight = None  # not marked: sent again
                    result.failures += 1
                    result.last_error = str(error)
                    self._on_error(error)
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or stop.wait(min(backoff, remaining)):
                        return
                    backoff = min(backoff * 2, self._retry_backoff[1])
                    continue
                backoff = self._retry_backoff[0]
                in_flight = sent
                if in_flight is not None or not looked_at_everything:
                    continue  # more may be waiting; what is in flight is finished on the next turn
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                if len(held) < len(self._buckets):
                    remaining = min(remaining, _MISSING_RECHECK_SECONDS)
                self._sleep_until_notified(conn, remaining, stop, held)
        finally:
            if in_flight is not None and not conn.closed and not conn.broken:
                try:  # stopped with a batch on its way: mark it if the broker took it
                    self._finish(conn, in_flight)
                    result.published += len(in_flight.rows)
                    result.batches += 1
                except (Unavailable, RowParked):
                    pass  # not marked: sent again by the next relay

    def _sleep_until_notified(self, conn: psycopg.Connection, remaining: float, stop: threading.Event,
                              held: list[int]) -> None:
        keys = [SLEEP_LOCK_BASE + b for b in held]
        got = one(conn.execute(_TRY_LOCKS, (keys,)))
        try:
            if len(got) < len(keys):
                # A writer that saw us awake has not committed yet: its row is
                # coming and it will not notify, so look again shortly.
                stop.wait(min(remaining, _BUSY_RECHECK_SECONDS))
                return
            # Rows committed while we were publishing notified nobody.
            if one(conn.execute(_ANY_UNPUBLISHED, (held,))):
                return
            for _ in conn.notifies(timeout=min(remaining, self._idle_wait), stop_after=1):
                pass
        finally:
            if got:
                conn.execute(_UNLOCK, (got,))

    def _send_next(self, conn: psycopg.Connection, buckets: Sequence[int], in_flight: _Sent | None) -> _Sent | None:
        """Claim the next batch (none of the streams in flight) and send it;
        None when there is nothing to send."""
        busy = sorted({event.stream_id for _, event in in_flight.rows}) if in_flight is not None else []
        claim = conn.cursor(row_factory=_outbox_row)
        set_json_loads(orjson.loads, claim)  # the events' data and metadata: most of what reading them costs
        rows = claim.execute(_CLAIM, (list(buckets), busy, self._batch_size)).fetchall()
        if not rows:
            return None
        self._prefetch(conn, [event for _, event in rows])
        events = []
        for outbox_id, event in rows:
            try:
                events.append(self._prepare(conn, event))
            except (Unavailable, psycopg.Error):
                raise  # it cannot be read just now (say, its key not fetched): the batch is tried again
            except Exception as error:  # noqa: BLE001 - no retry can make this code read it
                self._park(conn, outbox_id, event, f"{type(error).__name__}: {error}")
        try:
            return _Sent(rows, self._sender.send(events))
        except UnpublishableEvent as error:
            self._park_unpublishable(conn, rows, error)

    def _finish(self, conn: psycopg.Connection, sent: _Sent) -> None:
        """Wait until the broker acknowledged the batch, then mark it."""
        try:
            sent.wait()
        except UnpublishableEvent as error:
            self._park_unpublishable(conn, sent.rows, error)
        conn.execute(_MARK, ([outbox_id for outbox_id, _ in sent.rows],))

    def _park_unpublishable(self, conn: psycopg.Connection, rows: list[tuple[int, RecordedEvent]],
                            error: UnpublishableEvent) -> NoReturn:
        outbox_id = next(o for o, e in rows if e.global_position == error.event.global_position)
        self._park(conn, outbox_id, error.event, str(error))

    def _park(self, conn: psycopg.Connection, outbox_id: int, event: RecordedEvent, error: str) -> NoReturn:
        conn.execute(_PARK, (error, outbox_id))
        self._on_parked(outbox_id, event, error)
        raise RowParked(outbox_id)


@dataclass
class _Sent:
    """A batch on its way to the broker: its rows, and how to wait for its acknowledgement."""

    rows: list[tuple[int, RecordedEvent]]
    wait: Acknowledgement


_outbox_row = dataclass_row(RecordedEvent, leading=("outbox_id",))
