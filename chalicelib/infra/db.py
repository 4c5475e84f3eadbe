"""PostgreSQL connections: where they go and with which credentials (the
Database), the pool (the application facade opens it on first use and keeps
it for warm invocations), and a pool-shaped view of one connection, for
running store code inside a caller's transaction."""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Callable, Iterator

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from chalicelib.infra.credentials import Secret, database_parameters

# A connection not handed out for longer than this is pinged before use; one
# in steady use is not, which saves a round trip on every request.
IDLE_CHECK_SECONDS = 5.0
_handed_out_at: weakref.WeakKeyDictionary[psycopg.Connection, float] = weakref.WeakKeyDictionary()


def _check_if_idle(conn: psycopg.Connection) -> None:
    # A connection that died while the container slept (database restart,
    # failover, NAT timeout) is replaced instead of failing a request. Times
    # are noted here rather than in a `reset` callback, which would make the
    # pool return every connection through a worker thread.
    now = time.monotonic()
    last = _handed_out_at.get(conn)
    _handed_out_at[conn] = now
    if last is None or now - last > IDLE_CHECK_SECONDS:
        ConnectionPool.check_connection(conn)


def _refused_credentials(error: psycopg.OperationalError) -> bool:
    # libpq reports a failed login as text only (SQLSTATE 28P01 / 28000 is
    # not attached to a connection failure).
    text = str(error)
    return "authentication failed" in text or "no pg_hba.conf entry" in text


class Database:
    """Connects to PostgreSQL: with the address and options of `url`, and the
    credentials of a Secrets Manager secret when one is given (read again when
    the database refuses them: rotation), or an RDS IAM token per new
    connection."""

    def __init__(self, url: str = "", *, secret: Secret | None = None,
                 iam_token: Callable[[str, int, str], str] | None = None) -> None:
        self.url = url
        self.secret = secret
        self.iam_token = iam_token

    def conninfo(self) -> str:
        if self.secret is None and self.iam_token is None:
            return self.url
        params = database_parameters(self.secret) if self.secret is not None else {}
        if self.iam_token is not None:
            merged = {**conninfo_to_dict(self.url), **params}
            params["password"] = self.iam_token(merged.get("host") or "localhost", int(merged.get("port") or 5432),
                                                merged.get("user") or "")
        return make_conninfo(self.url, **params)

    def connect(self, **kwargs) -> psycopg.Connection:
        return self._connect(psycopg.Connection.connect, **kwargs)

    def _connect(self, connect: Callable[..., psycopg.Connection], **kwargs) -> psycopg.Connection:
        conninfo = self.conninfo()
        used = self.secret.reads if self.secret is not None else 0
        try:
            return connect(conninfo, **kwargs)
        except psycopg.OperationalError as error:
            if self.secret is None or not _refused_credentials(error):
                raise
        # The password was rotated since the secret was read.
        self.secret.refresh(used)
        return connect(self.conninfo(), **kwargs)

    def connection_class(self) -> type[psycopg.Connection]:
        """A connection class whose connect() goes through this Database, for
        the pool: each new pooled connection gets current credentials."""
        database = self

        class _Connection(psycopg.Connection):
            @classmethod
            def connect(cls, conninfo: str = "", **kwargs):
                return database._connect(super().connect, **kwargs)

        return _Connection

    def pool(self, max_size: int = 4) -> ConnectionPool:
        return new_pool(self, max_size)


def new_pool(database: Database | str, max_size: int = 4) -> ConnectionPool:
    if isinstance(database, str):
        database = Database(database)
    pool = ConnectionPool(
        "",
        connection_class=database.connection_class(),
        min_size=1,
        max_size=max(1, max_size),
        # Each statement is its own transaction unless a block asks for one:
        # an append is a single statement, so a single round trip.
        kwargs={"autocommit": True},
        check=_check_if_idle,
        open=False,
        name="customer-service",
    )
    pool.open(wait=True, timeout=10)
    return pool


class TransactionConnection:
    """Hands out one connection, inside the caller's transaction, to code that
    asks a pool for connections (the event store)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        yield self._conn
