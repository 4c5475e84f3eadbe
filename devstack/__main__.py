"""`make run`: the whole service on this machine, stopped by one Ctrl-C.

Starts what is not configured from outside (PostgreSQL unless DATABASE_URL
is set, a Kafka-compatible broker unless KAFKA_BOOTSTRAP_SERVERS is set, the
AWS APIs emulated by moto unless AWS_ENDPOINT_URL is set), makes there what
the template makes on AWS (the database secret, the dead-letter queue),
applies migrations, creates the topic, then runs the API with `chalice local`,
the scheduled outbox relay and the Kafka event source of the projection
function, neither of which `chalice local` runs. The functions read their
database credentials from the secret, as they do on Lambda.

Like the platform on AWS, it keeps every part running: a part that exits is
started again after a backoff (0.5 s, doubling up to 30 s, back to 0.5 s
once it has run for a minute), and the output says so. Ctrl-C, SIGTERM and
SIGHUP (the terminal closed) all stop everything. Each part's pid is noted
under .devstack/pids, so that a run after a killed one stops its leftovers.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from chalicelib.eventstore.migrations import migrate
from chalicelib.eventstore.postgres import one
from devstack import aws, processes
from devstack.issuer import DevIssuer
from devstack.kafka import EmbeddedKafka, create_topic
from devstack.postgres import AlreadyRunning, EmbeddedPostgres, port_in_use, provision_login

# The role the functions log in as, with a password only the secret holds.
SERVICE_ROLE = "customer_service"
SERVICE_DATABASE = "customers"
# What the secret gives; DATABASE_URL keeps the other connection options.
_SECRET_PARTS = {"user": "username", "password": "password", "host": "host", "port": "port", "dbname": "dbname"}

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


class Child:
    """A program of ours run as a child process (the API, the emulators)."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.argv = argv
        self.env = env
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, cwd=PROJECT, env=self.env)

    def stop(self) -> None:
        processes.stop(self.process)


class Part:
    """One supervised part: something with start(), stop() and a `process`."""

    BACKOFF = (0.5, 30.0)
    HEALTHY_AFTER_SECONDS = 60.0

    def __init__(self, name: str, thing, after_start: Callable[[], None] = lambda: None, *,
                 note: bool = True) -> None:
        self.name = name
        self.thing = thing
        self.after_start = after_start
        self.note = note
        self.backoff = self.BACKOFF[0]
        self.started_at = 0.0
        self.restart_at: float | None = None
        self.restarts = 0

    def start(self) -> None:
        self.thing.start()
        self.after_start()
        self.started_at = time.monotonic()
        if self.note:
            note_pid(self.name, self.thing.process.pid)

    def supervise(self) -> None:
        """Start the part again, after a backoff, if it has exited."""
        process = self.thing.process
        if process is None or process.poll() is None:
            if time.monotonic() - self.started_at > self.HEALTHY_AFTER_SECONDS:
                self.backoff = self.BACKOFF[0]
            return
        now = time.monotonic()
        if self.restart_at is None:
            self.restart_at = now + self.backoff
            say(f"{self.name} exited with code {process.returncode}; restarting it in {self.backoff:.1f} s")
            self.backoff = min(self.backoff * 2, self.BACKOFF[1])
            return
        if now < self.restart_at:
            return
        self.restart_at = None
        self.restarts += 1
        try:
            self.start()
        except Exception as error:  # noqa: BLE001 - tried again after the next backoff
            say(f"{self.name} did not start: {error}")
            return
        say(f"{self.name} restarted (restart {self.restarts}, pid {self.thing.process.pid})")


class Stack:
    """What this run started, supervised, and stopped in reverse order."""

    def __init__(self) -> None:
        self.parts: list[Part] = []

    def start(self, part: Part) -> None:
        part.start()
        self.parts.append(part)

    def supervise(self) -> None:
        for part in self.parts:
            part.supervise()

    def stop(self) -> None:
        for part in reversed(self.parts):
            part.thing.stop()
            forget_pid(part.name)


def _pid_file(name: str) -> Path:
    return STATE / "pids" / (name.replace(" ", "-") + ".pid")


def _started(pid: int) -> str | None:
    """When the process started (clock ticks since boot): with the pid, it
    tells our process from a later one that got the same pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def note_pid(name: str, pid: int) -> None:
    path = _pid_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{pid} {_started(pid)}")


def forget_pid(name: str) -> None:
    _pid_file(name).unlink(missing_ok=True)


def stop_leftovers() -> list[str]:
    """Stop the parts an earlier, killed run left running (we hold the stack
    lock, so no other stack owns them); their names."""
    stopped = []
    for path in sorted((STATE / "pids").glob("*.pid")):
        pid_text, _, started = path.read_text().partition(" ")
        pid = int(pid_text)
        if started and _started(pid) == started:
            say(f"stopping the {path.stem.replace('-', ' ')} an earlier stack left running (pid {pid}) ...")
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while _started(pid) == started and time.monotonic() < deadline:
                time.sleep(0.05)
            if _started(pid) == started:
                os.kill(pid, signal.SIGKILL)
            stopped.append(path.stem.replace("-", " "))
        path.unlink()
    return stopped


class BrokerStarts:
    """Each start of the embedded broker: it comes back empty, so the events
    published since its previous start (which its topic held) go out again
    from the outbox, the truth; then the topic is made."""

    def __init__(self, database_url: str, create_topic: Callable[[], None]) -> None:
        self.database_url = database_url
        self.create_topic = create_topic
        self.previous: object = None

    def __call__(self) -> None:
        from chalicelib.eventstore.outbox import republish_since

        with psycopg.connect(self.database_url, autocommit=True) as conn:
            now = one(conn.execute("SELECT clock_timestamp()"))
            if self.previous is not None:
                count = republish_since(conn, self.previous)
                say(f"the broker came back empty: {count} events it had are published again from the outbox")
        self.previous = now
        self.create_topic()


def login_problem(database_options: str, aws_env: dict[str, str]) -> str | None:
    """Why the functions could not log in the way they will (the secret read
    through the AWS endpoint), or None: nothing starts half-working."""
    from chalicelib.infra.credentials import Secret
    from chalicelib.infra.db import Database

    def clients(service: str):
        return aws.client(service, aws_env["AWS_ENDPOINT_URL"], aws_env["AWS_DEFAULT_REGION"])

    try:
        Database(database_options, secret=Secret(aws.SECRET_NAME, clients)).connect(connect_timeout=5).close()
    except psycopg.Error as error:
        return str(error).strip().splitlines()[0]
    return None


def main() -> int:
    lock = hold_single_instance_lock()  # noqa: F841 - held until exit
    # We hold the stack lock, so whatever still runs from our state folder is
    # an orphan of a stack that was killed: stop it before it holds a port.
    for leftover in stop_leftovers():
        say(f"stopped the {leftover} left running by an earlier stack")
    api_port = port_setting("PORT", 8000)
    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    stack = Stack()
    issuer: DevIssuer | None = None
    env_file = STATE / "stack.env"
    try:
        database_url = os.environ.get("DATABASE_URL")
        if database_url:
            say("PostgreSQL: from DATABASE_URL")
        else:
            postgres = EmbeddedPostgres(STATE / "pgdata", int(os.environ.get("PGPORT", "54329")))
            if postgres.orphan_pid():
                say(f"stopping the PostgreSQL an earlier stack left running (pid {postgres.orphan_pid()}) ...")
            if postgres.stop_orphan():
                say("stopped a PostgreSQL left running by an earlier stack")
            postgres.port = port_setting("PGPORT", 54329)
            say(f"starting embedded PostgreSQL (data in {postgres.data_dir}) ...")
            # Its own postmaster.pid finds a leftover server (stop_orphan).
            stack.start(Part("PostgreSQL", postgres, note=False))
            # As on RDS: the service logs in with a password, kept in the secret.
            postgres.require_password(SERVICE_ROLE)
            password = secrets.token_urlsafe(18)
            database_url = make_conninfo(provision_login(postgres.url, SERVICE_ROLE, password, SERVICE_DATABASE),
                                         password=password)
        try:
            applied = migrate(database_url)
        except psycopg.ProgrammingError as error:
            reason = str(error).strip().splitlines()[0]
            sys.exit(f"[stack] DATABASE_URL is not a PostgreSQL connection string ({reason}); use the form"
                     " postgresql://user:password@host:port/dbname")
        except psycopg.OperationalError as error:
            sys.exit(f"[stack] cannot log in to PostgreSQL with DATABASE_URL ({str(error).strip().splitlines()[-1]});"
                     " check its host, port, user and password (postgresql://user:password@host:port/dbname)")
        say(f"migrations applied: {', '.join(applied) if applied else 'none needed'}")
        given = {name: str(value) for name, value in conninfo_to_dict(database_url).items() if value is not None}
        database_secret: dict[str, str | int] = {"engine": "postgres", **{
            key: given[part] for part, key in _SECRET_PARTS.items() if given.get(part)}}
        database_options = make_conninfo(**{k: v for k, v in given.items() if k not in _SECRET_PARTS})
        keys = aws.key_secrets(STATE)
        region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "eu-west-1"
        if os.environ.get("AWS_ENDPOINT_URL"):
            endpoint = os.environ["AWS_ENDPOINT_URL"]
            say(f"AWS APIs: from AWS_ENDPOINT_URL {endpoint}")
            aws_env = {"AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": region, **aws.CREDENTIALS}
            made = aws.provision(endpoint, region, database_secret, keys)
        else:
            emulated = aws.EmulatedAws(port_setting("AWS_PORT", 4566), region, STATE)
            made = {}
            say("starting the emulated AWS endpoint (moto: Secrets Manager, SQS, KMS, S3) ...")
            # It keeps everything in memory: a restarted one gets the secret and queue again.
            stack.start(Part("AWS endpoint", emulated, after_start=lambda: made.update(
                aws.provision(emulated.endpoint, region, database_secret, keys))))
            aws_env = emulated.environment()

        problem = login_problem(database_options, aws_env)
        if problem:
            sys.exit(f"[stack] the functions cannot log in to PostgreSQL with the credentials DATABASE_URL gives"
                     f" ({problem}); put the user's password in DATABASE_URL"
                     " (postgresql://user:password@host:port/dbname), or use a login the server trusts")

        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        topic = os.environ.get("KAFKA_TOPIC") or "customer-events"
        if bootstrap:
            say("Kafka: from KAFKA_BOOTSTRAP_SERVERS")
        else:
            broker = EmbeddedKafka(port_setting("KAFKA_PORT", 29092), log_path=STATE / "kafka.log")
            say("starting embedded Kafka-compatible broker (Tansu, in memory) ...")
            # The broker keeps topics in memory: a restarted one needs the
            # topic again, and what the lost topic held is published again
            # (before the topic exists, so nothing newer gets there first).
            stack.start(Part("Kafka broker", broker, after_start=BrokerStarts(database_url, lambda: create_topic(
                broker.bootstrap_servers, topic, partitions=int(os.environ.get("KAFKA_TOPIC_PARTITIONS", "3"))))))
            bootstrap = broker.bootstrap_servers
        create_topic(bootstrap, topic, partitions=int(os.environ.get("KAFKA_TOPIC_PARTITIONS", "3")))

        if os.environ.get("AUTH_ISSUER"):
            say(f"tokens: from AUTH_ISSUER {os.environ['AUTH_ISSUER']}")
            auth = {}
        else:
            # A development issuer: its key pair under .devstack/issuer, its
            # JWKS served here; `make token` signs tokens with it.
            issuer = DevIssuer(STATE / "issuer", port_setting("AUTH_ISSUER_PORT", 8009))
            issuer.serve()
            auth = issuer.environment()
        settings = {
            # The secret's name stands for its ARN here; both are accepted.
            "DATABASE_SECRET_ARN": aws.SECRET_NAME, **({"DATABASE_URL": database_options} if database_options else {}),
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_TOPIC": topic,
            "PROJECTION_DLQ_URL": made["PROJECTION_DLQ_URL"], "KMS_KEY_ID": aws.KMS_ALIAS,
            "ERASURE_LOG_BUCKET": made["ERASURE_LOG_BUCKET"],
            "EMAIL_HASH_SECRET_ARN": aws.EMAIL_HASH_SECRET_NAME,
            "MESSAGE_SIGNING_SECRET_ARN": aws.MESSAGE_SIGNING_SECRET_NAME, **aws_env, **auth,
            # The schedule runs a relay per shard; `make outbox` shows each one's backlog.
            "RELAY_SHARDS": os.environ.get("RELAY_SHARDS") or "1",
        }
        env = {**{k: v for k, v in os.environ.items()
                  if k not in ("DATABASE_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN")}, **settings}
        # Chalice's local server, from our launcher: a backlog for load, no reloader.
        stack.start(Part("chalice local", Child(
            [sys.executable, "-m", "devstack.api_server", "--host", "127.0.0.1", "--port", str(api_port),
             "--stage", "dev"], env)))
        stack.start(Part("schedule", Child([sys.executable, "-m", "devstack.schedule"], env)))
        stack.start(Part("event source", Child([sys.executable, "-m", "devstack.kafka_source"], env)))
        env_file.write_text("".join(f"{name}={value}\n" for name, value in settings.items()))

        say(f"API:        http://127.0.0.1:{api_port}")
        signing_in = "  (sign in at the development issuer)" if auth else ""
        say(f"console:    http://127.0.0.1:{api_port}/console{signing_in}")
        shown = make_conninfo(**{k: v for k, v in given.items() if k != "password"})
        say(f"PostgreSQL: {shown} (its password: in the secret {aws.SECRET_NAME})")
        say(f"AWS:        {aws_env['AWS_ENDPOINT_URL']}  dead letters in {made['PROJECTION_DLQ_URL']} (make dlq)")
        say(f"Kafka:      {bootstrap}  topic {topic}")
        if auth:
            say(f"tokens:     issuer {auth['AUTH_ISSUER']}; TOKEN=$(make -s token) for one valid an hour")
        say("outbox:     published by the scheduled relay (python -m ops outbox shows the backlog)")
        say("read model: kept by project_customers, fed from Kafka (python -m ops rebuild rebuilds it)")
        say("Ctrl-C stops everything this started; a part that exits is started again.")
        while not stopping:
            stack.supervise()
            time.sleep(0.2)
        return 0
    except AlreadyRunning as error:
        sys.exit(f"[stack] {error}; is another stack running?")
    finally:
        say("stopping ...")
        env_file.unlink(missing_ok=True)
        stack.stop()
        if issuer is not None:
            issuer.stop()
        say("stopped")


if __name__ == "__main__":
    sys.exit(main())
