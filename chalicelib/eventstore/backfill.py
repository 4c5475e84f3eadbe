"""Backfills: stored events republished to a topic of a consumer's choice,
the whole history or a part of it (migration 018).

Generic, like the relay: it knows recorded events and a `Sender`.

- When asked for, a backfill takes its end: the next transaction id
  (pg_snapshot_xmax). It sends every event of the transactions below it,
  which are every transaction begun before it, in the store's commit order
  (chalicelib.eventstore.feed); the live topic carries every event committed
  after. First it waits for the transactions still running to end, so that
  nothing below its end can appear after it passed.
- Per customer, events go out in version order, with the same key, so to
  the same partition, as on the live topic.
- Its checkpoint is the position of the last event the broker acknowledged,
  stored with each batch: stopped at any moment (`kill -9`), it goes on from
  there, sending again at most the batch it had on its way.
- One runner at a time per backfill (a session advisory lock); any number
  of backfills side by side.
- A rate limit (events per second) spaces its batches; it has a connection
  and a producer of its own, so the live relay's are never waited for.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from . import feed
from .errors import Unavailable, UnpublishableEvent, UnreadableEvent
from .events import RecordedEvent
from .postgres import one
from .relay import Sender
from .rows import dataclass_row

BACKFILL_LOCK_BASE = 7_413_030_000  # + backfill id: its runner

# Makes stored events the messages consumers read, looking up what it needs
# on the backfill's connection: Unavailable when that cannot be had now,
# UnreadableEvent for an event no retry makes readable.
PrepareBatch = Callable[[psycopg.Connection, Sequence[RecordedEvent]], list[RecordedEvent]]
# The sender of a backfill's messages (its topic, its replay header).
SenderFor = Callable[["Backfill"], Sender]
Progress = Callable[[int, int], None]


class TopicNotAllowed(Exception):
    """A SenderFor's answer for a topic this deployment may not write to: no
    retry would help, so the backfill fails with the reason."""


@dataclass(frozen=True)
class Backfill:
    id: int
    topic: str
    stream_id: uuid.UUID | None
    event_types: list[str]
    after_global_position: int | None
    end_transaction: int
    rate_limit: int | None
    state: str
    total: int | None
    sent: int
    at_transaction: int
    at_position: int
    error: str | None
    requested_by: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @property
    def name(self) -> str:
        """What its messages say they are a replay of."""
        return f"backfill-{self.id}"

    @property
    def selection(self) -> feed.Selection:
        return feed.Selection(self.stream_id, tuple(self.event_types), self.after_global_position)

    @property
    def checkpoint(self) -> feed.Position:
        return feed.Position(self.at_transaction, self.at_position)

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed")


_COLUMNS = ("id, topic, stream_id, event_types, after_global_position,"
            " end_transaction::text::bigint AS end_transaction, rate_limit, state, total, sent,"
            " at_transaction::text::bigint AS at_transaction, at_position, error, requested_by, created_at,"
            " updated_at, finished_at")
_row = dataclass_row(Backfill)


def create(conn: psycopg.Connection, topic: str, selection: feed.Selection = feed.EVERYTHING, *,
           rate_limit: int | None = None, requested_by: str | None = None) -> Backfill:
    """A backfill of what `selection` names to `topic`, ending at the next transaction."""
    return _one(conn, "INSERT INTO backfills (topic, stream_id, event_types, after_global_position,"
                      " end_transaction, rate_limit, requested_by)"
                      " VALUES (%s, %s, %s, %s, pg_snapshot_xmax(pg_current_snapshot()), %s, %s)"
                      f" RETURNING {_COLUMNS}",
                (topic, selection.stream_id, list(selection.event_types), selection.after_global_position,
                 rate_limit, requested_by))


def get(conn: psycopg.Connection, backfill_id: int) -> Backfill | None:
    return conn.cursor(row_factory=_row).execute(f"SELECT {_COLUMNS} FROM backfills WHERE id = %s",
                                                 (backfill_id,)).fetchone()


def listed(conn: psycopg.Connection, limit: int = 100) -> list[Backfill]:
    """The newest first."""
    return conn.cursor(row_factory=_row).execute(f"SELECT {_COLUMNS} FROM backfills ORDER BY id DESC LIMIT %s",
                                                 (limit,)).fetchall()


def unfinished(conn: psycopg.Connection) -> list[int]:
    return [row[0] for row in conn.execute(
        "SELECT id FROM backfills WHERE state IN ('waiting', 'running') ORDER BY id")]


def _one(conn: psycopg.Connection, sql: str, params: Sequence[Any]) -> Backfill:
    found = conn.cursor(row_factory=_row).execute(sql, params).fetchone()
    if found is None:
        raise LookupError("no such backfill")
    return found


def _update(conn: psycopg.Connection, backfill_id: int, assignments: str, params: Sequence[Any] = ()) -> Backfill:
    return _one(conn, f"UPDATE backfills SET {assignments}, updated_at = clock_timestamp() WHERE id = %s"
                      f" RETURNING {_COLUMNS}", (*params, backfill_id))


def _fail(conn: psycopg.Connection, backfill_id: int, error: Exception) -> Backfill:
    return _update(conn, backfill_id, "state = 'failed', error = %s", (str(error)[:1000],))


def retry(conn: psycopg.Connection, backfill_id: int) -> Backfill | None:
    """A failed backfill made unfinished again, from its checkpoint (once
    what stopped it is mended); any other as it is. None if there is none."""
    conn.execute("UPDATE backfills SET state = CASE WHEN total IS NULL THEN 'waiting' ELSE 'running' END,"
                 " error = NULL, updated_at = clock_timestamp() WHERE id = %s AND state = 'failed'", (backfill_id,))
    return get(conn, backfill_id)


@dataclass
class RunResult:
    backfill: Backfill | None
    sent: int = 0  # by this run
    running_elsewhere: bool = False  # another runner holds it
    failures: int = 0  # broker or key service away, tried again
    last_error: str | None = None


class BackfillRunner:
    def __init__(self, connect: Callable[[], psycopg.Connection], sender_for: SenderFor, prepare: PrepareBatch, *,
                 batch_size: int = 500, retry_backoff: tuple[float, float] = (0.5, 10.0),
                 on_error: Callable[[Exception], None] = lambda error: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._connect = connect
        self._sender_for = sender_for
        self._prepare = prepare
        self._batch_size = batch_size
        self._retry_backoff = retry_backoff
        self._on_error = on_error
        self._clock = clock

    def run(self, backfill_id: int, deadline: float, stop: threading.Event | None = None,
            progress: Progress = lambda sent, total: None) -> RunResult:
        """Send the backfill's events from its checkpoint until it is done,
        `deadline` (time.monotonic()) passes or `stop` is set."""
        stop = stop or threading.Event()
        with self._connect() as conn:
            conn.autocommit = True
            if not one(conn.execute("SELECT pg_try_advisory_lock(%s)", (BACKFILL_LOCK_BASE + backfill_id,))):
                return RunResult(get(conn, backfill_id), running_elsewhere=True)
            try:
                return self._run(conn, backfill_id, deadline, stop, progress)
            finally:
                if not conn.closed and not conn.broken:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (BACKFILL_LOCK_BASE + backfill_id,))

    def _run(self, conn: psycopg.Connection, backfill_id: int, deadline: float, stop: threading.Event,
             progress: Progress) -> RunResult:
        backfill = get(conn, backfill_id)
        if backfill is None:
            raise LookupError(f"no backfill {backfill_id}")
        result = RunResult(backfill)
        if backfill.finished:
            return result
        if backfill.state == "waiting":
            # Until every transaction begun before it has ended: then nothing
            # below its end can still appear.
            while feed.horizon(conn) < backfill.end_transaction:
                if stop.wait(0.02) or self._clock() > deadline:
                    return result
            total = feed.count(conn, below=backfill.end_transaction, selection=backfill.selection)
            backfill = result.backfill = _update(conn, backfill_id, "state = 'running', total = %s", (total,))
        total = backfill.total or 0
        progress(backfill.sent, total)
        try:
            sender = self._sender_for(backfill)
        except TopicNotAllowed as refused:
            result.backfill = _fail(conn, backfill_id, refused)
            return result
        began, backoff = self._clock(), self._retry_backoff[0]
        while not stop.is_set() and self._clock() < deadline:
            rows = feed.read(conn, backfill.checkpoint, self._batch_size, below=backfill.end_transaction,
                             selection=backfill.selection)
            if not rows:
                result.backfill = _update(conn, backfill_id, "state = 'done', finished_at = clock_timestamp()")
                return result
            try:
                sender.send(self._prepare(conn, [event for _, event in rows]))()
            except (UnreadableEvent, UnpublishableEvent) as error:
                result.backfill = _fail(conn, backfill_id, error)
                return result
            except Unavailable as error:
                result.failures += 1
                result.last_error = str(error)
                self._on_error(error)
                if stop.wait(min(backoff, max(0.0, deadline - self._clock()))):
                    return result
                backoff = min(backoff * 2, self._retry_backoff[1])
                continue
            backoff = self._retry_backoff[0]
            last = rows[-1][0]
            backfill = result.backfill = _update(
                conn, backfill_id, "at_transaction = %s::text::xid8, at_position = %s, sent = sent + %s",
                (str(last.transaction), last.global_position, len(rows)))
            result.sent += len(rows)
            progress(backfill.sent, max(total, backfill.sent))
            if backfill.rate_limit:
                # Spaced so that this run's rate stays at the limit.
                ahead = began + result.sent / backfill.rate_limit - self._clock()
                if ahead > 0 and stop.wait(min(ahead, max(0.0, deadline - self._clock()))):
                    return result
        return result
