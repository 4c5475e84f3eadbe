"""`make run` as a user runs it: a real HTTP server, one Ctrl-C to stop all."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from devstack.postgres import free_port, port_in_use
from tests.support.kafka import read_topic

PROJECT = Path(__file__).resolve().parents[2]


def start_stack(state: Path, api_port: int, pg_port: int, kafka_port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPIC")}
    env.update(DEVSTACK_DIR=str(state), PORT=str(api_port), PGPORT=str(pg_port), KAFKA_PORT=str(kafka_port))
    return subprocess.Popen([sys.executable, "-m", "devstack"], cwd=PROJECT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_http(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"stack exited early:\n{proc.stdout.read()}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/customer/00000000-0000-0000-0000-000000000000")
        except urllib.error.HTTPError:
            return  # 404: the API answers
        except OSError:
            time.sleep(0.2)
    pytest.fail("the API did not come up")


def test_stack_serves_the_api_publishes_refuses_a_second_copy_and_stops_everything(tmp_path):
    state = tmp_path / "stack"
    api_port, pg_port, kafka_port = free_port(), free_port(), free_port()
    stack = start_stack(state, api_port, pg_port, kafka_port)
    try:
        wait_for_http(api_port, stack)
        request = urllib.request.Request(
            f"http://127.0.0.1:{api_port}/customer", method="POST",
            data=json.dumps({"name": "Ada", "email": "ada@example.com"}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request) as response:
            assert response.status == 201
            customer_id = json.load(response)["id"]

        # The emulated schedule runs the real drain: the event reaches Kafka.
        records = read_topic(f"127.0.0.1:{kafka_port}", "customer-events", expected=1, timeout=30)
        assert [r.key.decode() for r in records] == [customer_id]
        # The emulated event source runs the real projection: the read model answers.
        deadline = time.monotonic() + 30
        source = None
        while source != "read-model" and time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/customer/{customer_id}") as response:
                source = response.headers["X-Read-Source"]
            time.sleep(0.1)
        assert source == "read-model"

        second = start_stack(state, free_port(), free_port(), free_port())
        output, _ = second.communicate(timeout=60)
        assert second.returncode != 0
        assert "already running" in output
    finally:
        stack.send_signal(signal.SIGINT)
        output, _ = stack.communicate(timeout=60)
    assert "[stack] stopped" in output
    assert not (state / "pgdata" / "postmaster.pid").exists()
    assert not port_in_use(kafka_port) and not port_in_use(api_port)
