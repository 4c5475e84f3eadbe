"""Is the service well: the database reachable, the outbox published and the
read model caught up, each within its limit.

Two views. The public one (`GET /health`, for load balancers, anonymous)
costs one cheap statement, whose answer a container keeps for
HEALTH_CACHE_SECONDS: however often it is asked, the database sees at most
one such query per container in that time. The detailed one (a token with
the operator scope) counts the backlog and parked rows, measures the lag
over many events and says what to do.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from psycopg import sql

from chalicelib.eventstore.outbox import ANY_PARKED, OLDEST_WAITING_SECONDS, Backlog, backlog
from chalicelib.eventstore.postgres import one_row
from chalicelib.infra.logs import log
from chalicelib.readmodel import queries


@dataclass(frozen=True)
class Health:
    healthy: bool
    database_reachable: bool
    outbox: Backlog | None = None
    events_behind: int | None = None
    projection_lag_seconds: float | None = None
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Limits:
    max_outbox_age_seconds: float
    max_projection_lag_seconds: float


_QUICK = sql.SQL("SELECT ({}), ({}), lag.age FROM ({}) AS lag(behind, age)").format(
    sql.SQL(OLDEST_WAITING_SECONDS), sql.SQL(ANY_PARKED), queries.lag_sql(queries.QUICK_LAG_WINDOW_EVENTS))

Connect = Callable[[], AbstractContextManager[psycopg.Connection]]
T = TypeVar("T")


class HealthCheck:
    def __init__(self, connection: Connect, limits: Limits, cache_seconds: float = 5.0) -> None:
        self._connection = connection
        self._limits = limits
        self._cache_seconds = cache_seconds
        self._cached: tuple[float, Health] | None = None
        self._lock = threading.Lock()

    def public(self) -> Health:
        """Healthy or not, from one cheap statement at most every `cache_seconds`."""
        cached = self._cached
        if cached is None or time.monotonic() - cached[0] >= self._cache_seconds:
            with self._lock:  # one check at a time; those who waited take its answer
                cached = self._cached
                if cached is None or time.monotonic() - cached[0] >= self._cache_seconds:
                    cached = self._cached = (time.monotonic(), self._quick())
        return cached[1]

    def _read(self, read: Callable[[psycopg.Connection], T]) -> T:
        """Once more on a new connection when the one in hand turns out dead
        (the database restarted, failed over or dropped it): reads are safe
        to repeat, and a health check must not report yesterday's connection."""
        try:
            with self._connection() as conn:
                return read(conn)
        except psycopg.OperationalError:
            with self._connection() as conn:
                return read(conn)

    def _quick(self) -> Health:
        try:
            waiting, parked, lag = self._read(lambda conn: one_row(conn.execute(_QUICK)))
        except psycopg.Error as error:
            log("health_database_unreachable", level="error", error=str(error))
            return Health(False, False, reasons=("the database is unreachable",))
        reasons = self._reasons(None if parked else 0, float(waiting) if waiting is not None else None,
                                None, float(lag) if lag is not None else None)
        return Health(not reasons, True, reasons=reasons)

    def details(self) -> Health:
        """The backlog, parked rows and the read model's lag, with what to do."""
        def read(conn: psycopg.Connection) -> tuple[Backlog, int, float | None]:
            with conn.transaction():
                # Transaction-scoped: no session state is left on a connection
                # that RDS Proxy may hand to someone else.
                conn.execute("SET LOCAL statement_timeout = 3000")
                return backlog(conn), *queries.projection_lag(conn)

        try:
            waiting, behind, lag = self._read(read)
        except psycopg.Error as error:
            log("health_database_unreachable", level="error", error=str(error))
            return Health(False, False, reasons=("the database is unreachable",))
        reasons = self._reasons(waiting.parked, waiting.oldest_age_seconds, behind, lag)
        return Health(not reasons, True, waiting, behind, lag, reasons)

    def _reasons(self, parked: int | None, oldest_age: float | None, behind: int | None,
                 lag: float | None) -> tuple[str, ...]:
        limits = self._limits
        reasons = []
        if parked != 0:  # None: some, not counted
            reasons.append(f"{parked or 'some'} outbox events are parked (they cannot be published) and hold back"
                           " their customers' later events: python -m ops outbox --parked")
        if (oldest_age or 0) > limits.max_outbox_age_seconds:
            reasons.append(f"the oldest unpublished outbox event waits for {oldest_age:.0f} s"
                           f" (limit {limits.max_outbox_age_seconds:.0f} s): is the relay running,"
                           " can it reach Kafka?")
        if (lag or 0) > limits.max_projection_lag_seconds:
            how_far = f"{behind} events and " if behind is not None else ""
            reasons.append(f"the read model is {how_far}{lag:.0f} s behind the event store"
                           f" (limit {limits.max_projection_lag_seconds:.0f} s): is the projection fed?")
        return tuple(reasons)
