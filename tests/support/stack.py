"""`make run`'s stack, started by tests as a user starts it: a real HTTP
server, real processes, one Ctrl-C to stop everything."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devstack.postgres import free_port, wait_until_listening

PROJECT = Path(__file__).resolve().parents[2]


def make_token(state: Path, scopes: str | None = None) -> str:
    """What `make token` prints for this stack."""
    result = subprocess.run([sys.executable, "-m", "devstack.issuer", "token"], cwd=PROJECT, check=True,
                            env={**os.environ, "DEVSTACK_DIR": str(state), **({"SCOPES": scopes} if scopes else {})},
                            capture_output=True, text=True)
    return result.stdout.strip()


def authorized(state: Path) -> dict:
    return {"Authorization": f"Bearer {make_token(state)}"}


# What a terminal of the developer's would not have set: the stack and the
# commands run beside it configure themselves.
_SERVICE_SETTINGS = ("DATABASE_URL", "DATABASE_SECRET_ARN", "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPIC",
                     "PROJECTION_DLQ_URL", "KMS_KEY_ID", "EMAIL_HASH_SECRET_ARN", "ERASURE_LOG_BUCKET",
                     "MESSAGE_SIGNING_SECRET_ARN")


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in _SERVICE_SETTINGS and not k.startswith(("AUTH_", "AWS_"))}


def make_command(*targets: str) -> list[str]:
    """`make TARGET`, with this interpreter's environment (installed already)."""
    venv = Path(sys.executable).parent.parent
    return ["make", "--no-print-directory", "-o", f"{venv}/.installed", f"VENV={venv}", f"PY={sys.executable}",
            *targets]


def start_stack(state: Path, api_port: int, pg_port: int, kafka_port: int, *, via_make: bool = False,
                **settings: str) -> subprocess.Popen:
    """`make run` (or the program it runs) in a folder of the test's own,
    with two relay shards (what one relay promises must hold for each of
    several); `settings` add to its environment."""
    settings = {"RELAY_SHARDS": "2", **settings}
    env = clean_environment()
    env.update(DEVSTACK_DIR=str(state), PORT=str(api_port), PGPORT=str(pg_port), KAFKA_PORT=str(kafka_port),
               AUTH_ISSUER_PORT=str(free_port()), AWS_PORT=str(free_port()), **settings)
    command = make_command("run") if via_make else [sys.executable, "-m", "devstack"]
    # A session of its own, as in a terminal: the test signals its whole group.
    return subprocess.Popen(command, cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


@dataclass
class RunningStack:
    state: Path
    api_port: int
    pg_port: int
    kafka_port: int
    process: subprocess.Popen
    output: Output

    @property
    def database(self) -> str:
        """The stack's database, as its superuser (a trusted loopback login)."""
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/customers"

    @property
    def env(self) -> dict[str, str]:
        """What the stack gives its functions (.devstack/stack.env)."""
        return stack_env(self.state)

    def aws(self, service: str):
        """A boto3 client of the stack's emulated AWS."""
        from devstack import aws

        env = self.env
        return aws.client(service, env["AWS_ENDPOINT_URL"], env["AWS_DEFAULT_REGION"])


@contextlib.contextmanager
def running_stack(tmp_path: Path, *, via_make: bool = False, **settings: str) -> Iterator[RunningStack]:
    """`make run` (or, with `via_make`, through make itself) in a folder of
    the test's own, once its API answers; stopped with Ctrl-C at the end of
    the block."""
    state = tmp_path / "stack"
    api_port, pg_port, kafka_port = free_port(), free_port(), free_port()
    process = start_stack(state, api_port, pg_port, kafka_port, via_make=via_make, **settings)
    output = Output(process)
    try:
        wait_for_http(api_port, process)
        yield RunningStack(state, api_port, pg_port, kafka_port, process, output)
    finally:
        interrupt(process, output)


def interrupt(stack: subprocess.Popen, output: Output | None = None, timeout: float = 60) -> None:
    """Ctrl-C in the stack's terminal (every process of its group gets
    SIGINT); back once it has stopped and said all it had to say."""
    if stack.poll() is None:
        os.killpg(stack.pid, signal.SIGINT)
    stack.wait(timeout=timeout)
    if output is not None:
        output.thread.join(timeout=10)


def make(state: Path, *targets: str, env: dict[str, str] | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess:
    """`make TARGET` in another terminal beside the stack in `state` (or,
    with `env`, against what it names)."""
    return subprocess.run(make_command(*targets), cwd=PROJECT, capture_output=True, text=True, timeout=timeout,
                          env={**clean_environment(), "DEVSTACK_DIR": str(state), **(env or {})})


def wait_for_http(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"stack exited early:\n{proc.stdout.read()}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/customer/00000000-0000-0000-0000-000000000000")
        except urllib.error.HTTPError:
            return  # 401: the API answers
        except OSError:
            time.sleep(0.2)
    pytest.fail("the API did not come up")


def wait_until_ready(output: Output, port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until the stack says it is up and the API accepts connections, without
    sending the API a single request."""
    deadline = time.monotonic() + timeout
    while "[stack] API:" not in output:
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail("the stack did not come up:\n" + "".join(output.lines))
        time.sleep(0.1)
    wait_until_listening(port, proc, max(1.0, deadline - time.monotonic()))


def post_customer(state: Path, api_port: int, email: str) -> str:
    request = urllib.request.Request(
        f"http://127.0.0.1:{api_port}/customer", method="POST",
        data=json.dumps({"name": "Ada", "email": email}).encode(),
        headers={"Content-Type": "application/json", **authorized(state)})
    with urllib.request.urlopen(request) as response:
        assert response.status == 201
        return json.load(response)["id"]


def read_source(state: Path, api_port: int, customer_id: str) -> str | None:
    request = urllib.request.Request(f"http://127.0.0.1:{api_port}/customer/{customer_id}",
                                     headers=authorized(state))
    try:
        with urllib.request.urlopen(request) as response:
            return response.headers["X-Read-Source"]
    except OSError:
        return None


def part_pid(state: Path, name: str) -> int:
    return int((state / "pids" / f"{name}.pid").read_text().split()[0])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


class Output:
    """The stack's output, read as it comes."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self.thread = threading.Thread(target=lambda: self.lines.extend(proc.stdout), daemon=True)
        self.thread.start()

    def __contains__(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def json_lines(self) -> list[dict]:
        """The JSON objects among the lines (log lines, metric lines)."""
        found = []
        for line in list(self.lines):
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    pass
        return found


def stack_env(state: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in (state / "stack.env").read_text().splitlines())


def ops(state: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m ops ...` beside the stack in `state` (or, with `env`,
    against what it names)."""
    return subprocess.run([sys.executable, "-m", "ops", *args], cwd=PROJECT, capture_output=True, text=True,
                          timeout=120, env={**clean_environment(), "DEVSTACK_DIR": str(state), **(env or {})})
