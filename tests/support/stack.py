"""`make run`'s stack, started by tests as a user starts it: a real HTTP
server, real processes, one Ctrl-C to stop everything."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from devstack.postgres import free_port

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


def interrupt(stack: subprocess.Popen, timeout: float = 60) -> None:
    """Ctrl-C in the stack's terminal: every process of its group gets SIGINT."""
    if stack.poll() is None:
        os.killpg(stack.pid, signal.SIGINT)
    stack.wait(timeout=timeout)


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
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail("the API does not accept connections")
            time.sleep(0.1)


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
