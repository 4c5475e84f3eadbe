"""PostgreSQL connections: where they go and with which credentials (the
Database), how a container keeps them (one connection on Lambda, a pool in
the threaded local server), and a pool-shaped view of one connection, for
running store code inside a caller's transaction.

Sizing: a Lambda container serves one invocation at a time, so it keeps one
connection (DB_POOL_MAX_SIZE=1, the default): a thousand containers hold a
thousand connections, not four thousand. `chalice local` serves each request
on its own thread and keeps a pool (the dev stage sets 4).

Through RDS Proxy (DATABASE_PROXY_ENDPOINT) connections must carry no session
state, or the proxy pins them to one database connection: psycopg's prepared
statements are turned off there (every statement is planned anew, which
costs the command path about 40%), and no code on those connections uses
SET, LISTEN or session advisory locks. The outbox relay needs LISTEN and a
session lock, so it always connects directly (`Database.direct()`).

On AWS the server's certificate is verified (sslmode=verify-full) against
the RDS and RDS Proxy certificate authorities shipped in the package.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from chalicelib.infra.credentials import Secret, database_parameters

# A relative sslrootcert names a file of the package: the RDS certificate
# authorities (chalicelib/certs/rds-ca-bundle.pem) that verify-full checks
# the server against.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]

# A connection not handed out for longer than this is pinged before use; one
# in steady use is not, which saves a round trip on every request.
IDLE_CHECK_SECONDS = 5.0
# How long a caller waits for a connection another thread holds.
WAIT_SECONDS = 30.0
# A database that does not answer fails the request, rather than holding it
# until the function's timeout.
CONNECT_TIMEOUT_SECONDS = 5
_handed_out_at: weakref.WeakKeyDictionary[psycopg.Connection, float] = weakref.WeakKeyDictionary()


class ConnectionTimeout(psycopg.OperationalError):
    """No connection could be had in time (every one in use)."""


def _check_if_idle(conn: psycopg.Connection) -> None:
    # A connection that died while the container slept (database restart,
    # failover, NAT timeout) is replaced instead of failing a request. Times
    # are noted here rather than in a `reset` callback, which would make the
    # pool return every connection through a worker thread.
    now = time.monotonic()
    last = _handed_out_at.get(conn)
    _handed_out_at[conn] = now
    if last is None or now - last > IDLE_CHECK_SECONDS:
        conn.execute("")  # raises when the connection is gone


def _refused_credentials(error: psycopg.OperationalError) -> bool:
    # libpq reports a failed login as text only (SQLSTATE 28P01 / 28000 is
    # not attached to a connection failure).
    text = str(error)
    return "authentication failed" in text or "no pg_hba.conf entry" in text


class Connections(Protocol):
    """What the event store and the use cases take connections from."""

    def connection(self) -> contextlib.AbstractContextManager[psycopg.Connection]: ...

    def close(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class Database:
    """Connects to PostgreSQL: with the address and options of `url`, and the
    credentials of a Secrets Manager secret when one is given (read again when
    the database refuses them: rotation), or an RDS IAM token per new
    connection; through `proxy_endpoint` (host or host:port) when given."""

    url: str = ""
    secret: Secret | None = None
    iam_token: Callable[[str, int, str], str] | None = None
    proxy_endpoint: str | None = None

    def direct(self) -> Database:
        """The same database, reached without the proxy."""
        return dataclasses.replace(self, proxy_endpoint=None)

    def conninfo(self) -> str:
        params = database_parameters(self.secret) if self.secret is not None else {}
        given = {name: str(value) for name, value in conninfo_to_dict(self.url).items()}
        root_cert = given.get("sslrootcert")
        if root_cert and root_cert != "system" and not os.path.isabs(root_cert):
            # The package's own file (chalicelib/certs), wherever the process runs.
            params["sslrootcert"] = str(PACKAGE_ROOT / root_cert)
        if self.proxy_endpoint:
            host, _, port = self.proxy_endpoint.partition(":")
            params.update(host=host, **({"port": port} if port else {}))
        if self.iam_token is not None:
            merged = {**given, **params}
            params["password"] = self.iam_token(merged.get("host") or "localhost", int(merged.get("port") or 5432),
                                                merged.get("user") or "")
        return make_conninfo(self.url, **params) if params else self.url

    def connect(self, **kwargs) -> psycopg.Connection:
        return self._connect(psycopg.Connection.connect, **kwargs)

    def _connect(self, connect: Callable[..., psycopg.Connection], **kwargs) -> psycopg.Connection:
        if self.proxy_endpoint:
            kwargs.setdefault("prepare_threshold", None)
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

    def connections(self, max_size: int = 1) -> Connections:
        """What a container keeps: one connection, or a pool of `max_size`."""
        return OneConnection(self) if max_size <= 1 else new_pool(self, max_size)

    def pool(self, max_size: int = 4):
        return new_pool(self, max_size)


class OneConnection:
    """One connection, opened on first use, checked when it has been idle,
    replaced when it broke, and handed to one caller at a time: what a Lambda
    container needs, without a pool's threads or its import. A caller that
    asks again while it holds the connection gets an error rather than a
    deadlock: code that needs a connection while holding one must be given it."""

    def __init__(self, database: Database, wait_seconds: float = WAIT_SECONDS) -> None:
        self._database = database
        self._wait_seconds = wait_seconds
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()
        self._holder: int | None = None

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        if self._holder == threading.get_ident():
            raise RuntimeError("this thread already holds the container's connection: pass it down instead of"
                               " asking for another")
        if not self._lock.acquire(timeout=self._wait_seconds):
            raise ConnectionTimeout(f"the connection was in use for more than {self._wait_seconds:.0f} s")
        self._holder = threading.get_ident()
        try:
            conn = self._usable()
            try:
                yield conn
            finally:
                if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    conn.rollback()  # as a pool does with a connection given back mid-transaction
        finally:
            self._holder = None
            self._lock.release()

    def _usable(self) -> psycopg.Connection:
        conn = self._conn
        if conn is not None and not conn.closed:
            try:
                _check_if_idle(conn)
                return conn
            except psycopg.Error:
                conn.close()
        self._conn = None
        conn = self._database.connect(autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS)
        _handed_out_at[conn] = time.monotonic()
        self._conn = conn
        return conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def new_pool(database: Database | str, max_size: int = 4) -> Any:
    from psycopg_pool import ConnectionPool  # on first use: only the threaded local server needs it

    through = Database(database) if isinstance(database, str) else database

    class _Connection(psycopg.Connection):
        # Each new pooled connection goes through the Database: current credentials.
        @classmethod
        def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:
            return through._connect(super().connect, **kwargs)

    pool = ConnectionPool(
        "",
        connection_class=_Connection,
        min_size=1,
        max_size=max(1, max_size),
        # Each statement is its own transaction unless a block asks for one:
        # an append is a single statement, so a single round trip.
        kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_SECONDS},
        check=_check_if_idle,
        timeout=WAIT_SECONDS,
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
