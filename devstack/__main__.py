"""`make run`: the whole service on this machine, stopped by one Ctrl-C.

Starts what is not configured from outside (PostgreSQL unless DATABASE_URL is
set), applies migrations, then serves the API with `chalice local`.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from chalicelib.eventstore.migrations import migrate
from devstack.postgres import AlreadyRunning, EmbeddedPostgres, port_in_use

PROJECT = Path(__file__).resolve().parent.parent
# Runtime data stays out of chalicelib/ and app.py, which are what the app is
# made of; `chalice local` also runs without its file-watching reloader.
STATE = Path(os.environ.get("DEVSTACK_DIR") or PROJECT / ".devstack").resolve()


def say(message: str) -> None:
    # Shutting down must go on even when the terminal or a pipe is gone.
    try:
        print(f"[stack] {message}", flush=True)
    except OSError:
        pass


def hold_single_instance_lock() -> object:
    STATE.mkdir(exist_ok=True)
    handle = open(STATE / "stack.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        sys.exit(f"[stack] a local stack is already running here (pid {owner}); "
                 "stop it with Ctrl-C in its terminal first.")
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def main() -> int:
    lock = hold_single_instance_lock()  # noqa: F841 - held until exit
    api_port = int(os.environ.get("PORT", "8000"))
    if port_in_use(api_port):
        sys.exit(f"[stack] port {api_port} is taken by another program; set PORT=... to use another")

    postgres = None
    chalice = None
    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        database_url = os.environ.get("DATABASE_URL")
        if database_url:
            say("using PostgreSQL from DATABASE_URL")
        else:
            pg_port = int(os.environ.get("PGPORT", "54329"))
            postgres = EmbeddedPostgres(STATE / "pgdata", pg_port)
            # We hold the stack lock, so a server still running on our data
            # is an orphan of a stack that was killed: stop it cleanly.
            if postgres.stop_orphan():
                say("stopped a PostgreSQL left running by an earlier stack")
            if port_in_use(pg_port):
                sys.exit(f"[stack] port {pg_port} for PostgreSQL is taken; set PGPORT=... to use another")
            say(f"starting embedded PostgreSQL (data in {postgres.data_dir}) ...")
            database_url = postgres.start()
        applied = migrate(database_url)
        say(f"migrations applied: {', '.join(applied) if applied else 'none needed'}")

        env = {**os.environ, "DATABASE_URL": database_url}
        chalice = subprocess.Popen(
            [str(Path(sys.executable).parent / "chalice"), "local", "--host", "127.0.0.1",
             "--port", str(api_port), "--stage", "dev", "--no-autoreload"],
            cwd=PROJECT, env=env,
        )
        say(f"API:        http://127.0.0.1:{api_port}")
        say(f"PostgreSQL: {database_url}")
        say("Ctrl-C stops everything this started.")
        while not stopping:
            if chalice.poll() is not None:
                say(f"chalice local exited with code {chalice.returncode}")
                return chalice.returncode or 1
            time.sleep(0.2)
        return 0
    except AlreadyRunning as error:
        sys.exit(f"[stack] {error}; is another stack running?")
    finally:
        say("stopping ...")
        if chalice is not None and chalice.poll() is None:
            chalice.terminate()
            try:
                chalice.wait(timeout=10)
            except subprocess.TimeoutExpired:
                chalice.kill()
        if postgres is not None:
            postgres.stop()
        say("stopped")


if __name__ == "__main__":
    sys.exit(main())
