"""`make run` as a user runs it: a real HTTP server, one Ctrl-C to stop all."""

import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from devstack.postgres import free_port, port_in_use
from tests.support.kafka import read_topic
from tests.support.stack import (
    Output,
    alive,
    interrupt,
    ops,
    part_pid,
    post_customer,
    read_source,
    running_stack,
    stack_env,
    start_stack,
    wait_for_http,
)
from tests.support.waiting import wait_for

PROJECT = Path(__file__).resolve().parents[2]


def test_stack_serves_the_api_publishes_refuses_a_second_copy_and_stops_everything(tmp_path):
    with running_stack(tmp_path) as running:
        state, api_port, kafka_port = running.state, running.api_port, running.kafka_port
        customer_id = post_customer(state, api_port, "ada@example.com")

        # The emulated schedule runs the real relay: the event reaches Kafka.
        records = read_topic(f"127.0.0.1:{kafka_port}", "customer-events", expected=1, timeout=30)
        assert [r.key.decode() for r in records] == [customer_id]
        # The emulated event source runs the real projection: the read model answers.
        deadline = time.monotonic() + 30
        source = None
        while source != "read-model" and time.monotonic() < deadline:
            source = read_source(state, api_port, customer_id)
            time.sleep(0.1)
        assert source == "read-model"
        # Two relay shards run (start_stack): `make outbox` shows each one's backlog.
        shown = ops(state, "outbox").stdout
        assert "unpublished events: 0" in shown and "shard 0: 0 unpublished" in shown and "shard 1:" in shown

        refused = urllib.request.Request(f"http://127.0.0.1:{api_port}/customer/{customer_id}")
        with pytest.raises(urllib.error.HTTPError) as no_token:
            urllib.request.urlopen(refused)
        assert no_token.value.code == 401

        second = start_stack(state, free_port(), free_port(), free_port())
        said, _ = second.communicate(timeout=60)
        assert second.returncode != 0
        assert "already running" in said
    assert "[stack] stopped" in running.output
    assert not (state / "pgdata" / "postmaster.pid").exists()
    assert not port_in_use(kafka_port) and not port_in_use(api_port)


def test_crashed_parts_are_restarted_with_the_api_up_and_sighup_stops_everything(tmp_path):
    with running_stack(tmp_path) as running:
        state, api_port, kafka_port, output, stack = (running.state, running.api_port, running.kafka_port,
                                                      running.output, running.process)
        crashed = {name: part_pid(state, name) for name in ("schedule", "event-source", "Kafka-broker")}
        for pid in crashed.values():
            os.kill(pid, signal.SIGKILL)
        for name in ("schedule", "event source", "Kafka broker"):
            assert wait_for(lambda name=name: f"[stack] {name} restarted" in output, timeout=30), output.lines
            assert f"[stack] {name} exited with code -9; restarting it in" in output
        assert stack.poll() is None
        for name, old in crashed.items():
            assert part_pid(state, name) != old and alive(part_pid(state, name))

        # The restarted parts work: a new customer goes through relay, broker
        # (topic created again) and event source to the read model.
        customer_id = post_customer(state, api_port, "after-restart@example.com")
        assert wait_for(lambda: read_source(state, api_port, customer_id) == "read-model", timeout=60)

        os.killpg(stack.pid, signal.SIGHUP)  # the terminal was closed
        stack.wait(timeout=60)
    assert "[stack] stopped" in output
    assert wait_for(lambda: not (state / "pgdata" / "postmaster.pid").exists(), timeout=10)
    assert not port_in_use(kafka_port) and not port_in_use(api_port)


def test_the_next_run_stops_what_a_killed_run_left_running(tmp_path):
    state = tmp_path / "stack"
    ports = free_port(), free_port(), free_port()
    killed = start_stack(state, *ports)
    try:
        wait_for_http(ports[0], killed)
        leftovers = {name: part_pid(state, name) for name in ("Kafka-broker", "chalice-local", "schedule")}
    finally:
        killed.kill()  # no chance to clean up: PostgreSQL, broker and the API stay
        killed.wait()
    assert all(alive(pid) for pid in leftovers.values())

    again = start_stack(state, *ports)
    output = Output(again)
    try:
        assert wait_for(lambda: "[stack] API:" in output, timeout=60), output.lines
        assert [name for name, pid in leftovers.items() if alive(pid)] == []
        wait_for_http(ports[0], again)
    finally:
        interrupt(again, output)
    # It says what it is doing while it waits for each to stop, then that it did.
    assert "stopping the Kafka broker an earlier stack left running" in output
    assert "stopped the Kafka broker left running by an earlier stack" in output
    assert "stopping the PostgreSQL an earlier stack left running" in output
    assert "stopped a PostgreSQL left running by an earlier stack" in output
    assert not port_in_use(ports[2])






def test_credentials_come_from_the_emulated_secret_rotation_needs_no_restart_and_dead_letters_are_listed(tmp_path):
    import boto3
    from kafka import KafkaProducer

    with running_stack(tmp_path) as running:
        state, api_port, pg_port, kafka_port = running.state, running.api_port, running.pg_port, running.kafka_port
        settings = stack_env(state)
        assert "DATABASE_URL" not in settings and settings["DATABASE_SECRET_ARN"]
        assert "password" not in (state / "stack.env").read_text().lower()
        secrets = boto3.client("secretsmanager", endpoint_url=settings["AWS_ENDPOINT_URL"],
                               region_name=settings["AWS_DEFAULT_REGION"], aws_access_key_id="x",
                               aws_secret_access_key="x")
        secret = json.loads(secrets.get_secret_value(SecretId=settings["DATABASE_SECRET_ARN"])["SecretString"])
        assert secret["username"] == "customer_service" and int(secret["port"]) == pg_port
        post_customer(state, api_port, "before@example.com")

        # A single-user rotation: the role sets a new password, the secret gets it.
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=pg_port, dbname=secret["dbname"], user=secret["username"],
                             password=secret["password"], autocommit=True) as conn:
            conn.execute("ALTER ROLE customer_service PASSWORD 'rotated-password'")
        secrets.put_secret_value(SecretId=settings["DATABASE_SECRET_ARN"],
                                 SecretString=json.dumps({**secret, "password": "rotated-password"}))
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg_port}/postgres", autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'customer_service'")
        # /health logs in anew on every call; the API's pool replaces its dropped connections.
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/health") as response:
            assert json.load(response)["database"] == "reachable"
        created = []

        def create() -> bool:
            try:
                created.append(post_customer(state, api_port, f"after-{len(created)}@example.com"))
                return True
            except urllib.error.HTTPError:
                return False

        assert wait_for(create, timeout=20)
        assert wait_for(lambda: read_source(state, api_port, created[-1]) == "read-model", timeout=60)

        # A message that is not a CloudEvent is a dead letter within seconds.
        producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{kafka_port}")
        producer.send("customer-events", key=b"no-customer", value=b"not a CloudEvent")
        producer.flush()
        producer.close()
        assert wait_for(lambda: "key no-customer" in ops(state, "dlq").stdout, timeout=15)
        replay = ops(state, "dlq", "--replay")
        assert replay.returncode == 0 and "replayed 1 of 1" in replay.stdout, replay
        assert "0 dead letters" in ops(state, "dlq").stdout
