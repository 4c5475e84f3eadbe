"""`make run`: the whole service on this machine, stopped by one Ctrl-C.

Starts what is not configured from outside (PostgreSQL unless DATABASE_URL
is set, a Kafka-compatible broker unless KAFKA_BOOTSTRAP_SERVERS is set),
applies migrations, creates the topic, then runs the API with `chalice local`,
the scheduled outbox drain and the Kafka event source of the projection
function, neither of which `chalice local` runs.
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
from devstack.kafka import EmbeddedKafka, create_topic
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


def port_setting(name: str, default: int) -> int:
    port = int(os.environ.get(name, str(default)))
    if port_in_use(port):
        sys.exit(f"[stack] port {port} is taken by another program; set {name}=... to use another")
    return port


class Stack:
    """What this run started, stopped in reverse order."""

    def __init__(self) -> None:
        self.started: list[tuple[str, object]] = []

    def add(self, name: str, thing: object) -> None:
        self.started.append((name, thing))

    def first_exited(self) -> str | None:
        for name, thing in self.started:
            if isinstance(thing, subprocess.Popen) and thing.poll() is not None:
                return f"{name} exited with code {thing.returncode}"
        return None

    def stop(self) -> None:
        for _name, thing in reversed(self.started):
            if isinstance(thing, subprocess.Popen):
                if thing.poll() is None:
                    thing.terminate()
                    try:
                        thing.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        thing.kill()
            else:
                thing.stop()


def main() -> int:
    lock = hold_single_instance_lock()  # noqa: F841 - held until exit
    api_port = port_setting("PORT", 8000)
    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stack = Stack()
    env_file = STATE / "stack.env"
    try:
        database_url = os.environ.get("DATABASE_URL")
        if database_url:
            say("PostgreSQL: from DATABASE_URL")
        else:
            postgres = EmbeddedPostgres(STATE / "pgdata", int(os.environ.get("PGPORT", "54329")))
            # We hold the stack lock, so a server still running on our data
            # is an orphan of a stack that was killed: stop it cleanly.
            if postgres.stop_orphan():
                say("stopped a PostgreSQL left running by an earlier stack")
            postgres.port = port_setting("PGPORT", 54329)
            say(f"starting embedded PostgreSQL (data in {postgres.data_dir}) ...")
            database_url = postgres.start()
            stack.add("PostgreSQL", postgres)
        applied = migrate(database_url)
        say(f"migrations applied: {', '.join(applied) if applied else 'none needed'}")

        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        topic = os.environ.get("KAFKA_TOPIC") or "customer-events"
        if bootstrap:
            say("Kafka: from KAFKA_BOOTSTRAP_SERVERS")
        else:
            broker = EmbeddedKafka(port_setting("KAFKA_PORT", 29092), log_path=STATE / "kafka.log")
            say("starting embedded Kafka-compatible broker (Tansu, in memory) ...")
            bootstrap = broker.start()
            stack.add("Kafka broker", broker)
        create_topic(bootstrap, topic, partitions=int(os.environ.get("KAFKA_TOPIC_PARTITIONS", "3")))

        env = {**os.environ, "DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
               "KAFKA_TOPIC": topic}
        stack.add("chalice local", subprocess.Popen(
            [str(Path(sys.executable).parent / "chalice"), "local", "--host", "127.0.0.1",
             "--port", str(api_port), "--stage", "dev", "--no-autoreload"],
            cwd=PROJECT, env=env,
        ))
        stack.add("schedule", subprocess.Popen([sys.executable, "-m", "devstack.schedule"], cwd=PROJECT, env=env))
        stack.add("event source", subprocess.Popen([sys.executable, "-m", "devstack.kafka_source"],
                                                   cwd=PROJECT, env=env))
        env_file.write_text(f"DATABASE_URL={database_url}\nKAFKA_BOOTSTRAP_SERVERS={bootstrap}\nKAFKA_TOPIC={topic}\n")

        say(f"API:        http://127.0.0.1:{api_port}")
        say(f"PostgreSQL: {database_url}")
        say(f"Kafka:      {bootstrap}  topic {topic}")
        say("outbox:     drained by the scheduled function (python -m ops outbox shows the backlog)")
        say("read model: kept by project_customers, fed from Kafka (python -m ops rebuild rebuilds it)")
        say("Ctrl-C stops everything this started.")
        while not stopping:
            exited = stack.first_exited()
            if exited:
                say(exited)
                return 1
            time.sleep(0.2)
        return 0
    except AlreadyRunning as error:
        sys.exit(f"[stack] {error}; is another stack running?")
    finally:
        say("stopping ...")
        env_file.unlink(missing_ok=True)
        stack.stop()
        say("stopped")


if __name__ == "__main__":
    sys.exit(main())
