"""Every operator command and `make` target as an operator runs it: `make
run` in one terminal, the command in another, each on data that needs it (a
parked row, a dead letter, data stored in clear, a key wrapped without its
context, an erasure undone by a restore)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
import uuid

import psycopg
import pytest
from psycopg import sql

from devstack import aws as devstack_aws
from devstack.postgres import free_port
from tests.support import pgtools
from tests.support.stack import (
    PROJECT,
    clean_environment,
    make,
    make_command,
    ops,
    post_customer,
    read_source,
    running_stack,
)
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("operator"), via_make=True, RELAY_SHARDS="1") as running:
        yield running
    assert "[stack] stopped" in running.output


def one_line(result: subprocess.CompletedProcess) -> str:
    """What a command that refused to run said: one line, no traceback (make's
    own lines, the command it runs and its error trailer, left out)."""
    ours = [line for line in (result.stdout + result.stderr).splitlines()
            if line.strip() and not re.match(r"make(\[\d+\])?: \*\*\*", line) and not line.startswith(sys.executable)]
    assert result.returncode != 0 and len(ours) == 1 and "Traceback" not in ours[0], ours
    return ours[0]


def test_make_run_prints_where_everything_is(stack):
    for part in ("API:", "PostgreSQL:", "AWS:", "Kafka:", "tokens:"):
        assert f"[stack] {part}" in stack.output


def test_make_migrate_brings_an_empty_database_up_to_date_then_has_nothing_to_do(stack):
    name = f"fresh_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack.database, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    empty = f"postgresql://postgres@127.0.0.1:{stack.pg_port}/{name}"  # no password: a trusted login
    first = make(stack.state, "migrate", env={"DATABASE_URL": empty})
    assert first.returncode == 0, first.stderr
    applied = re.findall(r"\d{3}_[a-z0-9_]+\.sql", first.stdout)
    migrations = sorted(path.name for path in (PROJECT / "chalicelib" / "schema").glob("*.sql"))
    assert applied == migrations and applied[0] == "001_event_store.sql"
    again = make(stack.state, "migrate", env={"DATABASE_URL": empty})
    assert again.returncode == 0 and "already up to date" in again.stdout


def test_make_migrate_as_documented_for_a_deployment_with_the_database_secret(stack):
    env = stack.env
    arn = stack.aws("secretsmanager").describe_secret(SecretId=env["DATABASE_SECRET_ARN"])["ARN"]
    assert arn.startswith("arn:aws:secretsmanager:")
    documented = {"DATABASE_SECRET_ARN": arn, "AWS_ENDPOINT_URL": env["AWS_ENDPOINT_URL"],
                  "AWS_DEFAULT_REGION": env["AWS_DEFAULT_REGION"], **devstack_aws.CREDENTIALS}
    if env.get("DATABASE_URL"):
        documented["DATABASE_URL"] = env["DATABASE_URL"]  # connection options only; the secret has the rest
    result = make(stack.state, "migrate", env=documented)
    assert result.returncode == 0, result.stderr
    assert "already up to date" in result.stdout


def unreadable_event(database: str) -> tuple[uuid.UUID, int]:
    """A customer's event in a shape this code cannot read (a newer one),
    committed with its outbox row: the relay parks it."""
    stream = uuid.uuid4()
    with psycopg.connect(database, autocommit=True) as conn:
        (position,) = conn.execute(
            "INSERT INTO events (stream_id, stream_type, version, event_type, schema_version, data, metadata)"
            " VALUES (%s, 'Customer', 1, 'CustomerCreated', 99, '{}', %s) RETURNING global_position",
            (stream, json.dumps({"event_id": str(uuid.uuid4()), "occurred_at": "2026-12-03T08:00:00+00:00",
                                 "correlation_id": "ops-test", "causation_id": None}))).fetchone()
        (outbox_id,) = conn.execute("INSERT INTO outbox (global_position, stream_id) VALUES (%s, %s) RETURNING id",
                                    (position, stream)).fetchone()
    return stream, outbox_id


def parked(database: str, outbox_id: int) -> bool:
    with psycopg.connect(database) as conn:
        row = conn.execute("SELECT parked_at IS NOT NULL, published_at IS NOT NULL FROM outbox WHERE id = %s",
                           (outbox_id,)).fetchone()
    return row == (True, False)


def test_a_parked_row_is_shown_retried_and_skipped_and_make_publish_wakes_the_relay(stack):
    _, outbox_id = unreadable_event(stack.database)
    assert wait_for(lambda: parked(stack.database, outbox_id), timeout=30)

    shown = make(stack.state, "outbox")
    assert shown.returncode == 0 and "parked: 1 (cannot be published)" in shown.stdout
    listed = ops(stack.state, "outbox", "--parked")
    assert listed.returncode == 0 and f"outbox {outbox_id} " in listed.stdout
    assert "newer than this code" in listed.stdout

    retried = ops(stack.state, "outbox", "--retry", str(outbox_id))
    assert retried.returncode == 0 and "unparked 1" in retried.stdout
    assert wait_for(lambda: parked(stack.database, outbox_id), timeout=30)  # still unreadable: parked again

    skipped = ops(stack.state, "outbox", "--skip", str(outbox_id))
    assert skipped.returncode == 0 and f"skipped outbox row {outbox_id}" in skipped.stdout
    assert ops(stack.state, "outbox", "--skip", str(outbox_id)).returncode == 1  # not parked any more
    assert "parked:" not in make(stack.state, "outbox").stdout

    post_customer(stack.state, stack.api_port, f"publish-{uuid.uuid4().hex[:8]}@example.com")
    published = make(stack.state, "publish")
    assert published.returncode == 0, published.stderr
    assert "unpublished events: 0" in published.stdout.splitlines()[-1]


def test_make_dlq_lists_a_dead_letter_and_make_dlq_replay_replays_it(stack):
    from kafka import KafkaProducer

    customer = post_customer(stack.state, stack.api_port, f"dead-letter-{uuid.uuid4().hex[:8]}@example.com")
    producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{stack.kafka_port}")
    producer.send("customer-events", key=customer.encode(), value=b"not a CloudEvent").get(timeout=30)
    producer.close()

    def letters() -> int:
        listed = make(stack.state, "dlq")
        found = re.search(r"(\d+) dead letters", listed.stdout)
        return int(found.group(1)) if found else -1

    assert wait_for(lambda: letters() == 1, timeout=30, interval=0.5)
    replayed = make(stack.state, "dlq-replay")
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 1 of 1 dead letters: 1 customers re-projected" in replayed.stdout
    assert letters() == 0


def test_make_rebuild_shows_its_progress_and_keeps_every_customer(stack):
    customer = post_customer(stack.state, stack.api_port, f"rebuilt-{uuid.uuid4().hex[:8]}@example.com")
    assert wait_for(lambda: read_source(stack.state, stack.api_port, customer) == "read-model", timeout=30)
    rebuilt = make(stack.state, "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert re.search(r"rebuild: [\d,]+/[\d,]+ events \(100%\)", rebuilt.stderr), rebuilt.stderr  # not a terminal
    assert re.search(r"rebuilt customers_view: \d+ customers from \d+ events", rebuilt.stdout)
    assert read_source(stack.state, stack.api_port, customer) == "read-model"


def test_encrypt_events_seals_a_customer_stored_in_clear(stack):
    stream = uuid.uuid4()
    with psycopg.connect(stack.database, autocommit=True) as conn:  # as a deployment without KMS_KEY_ID wrote it
        (position,) = conn.execute(
            "INSERT INTO events (stream_id, stream_type, version, event_type, schema_version, data, metadata)"
            " VALUES (%s, 'Customer', 1, 'CustomerCreated', 1, %s, %s) RETURNING global_position",
            (stream, json.dumps({"name": "Clear Person", "email": f"clear.{stream.hex[:8]}@example.com"}),
             json.dumps({"event_id": str(uuid.uuid4()), "occurred_at": "2026-12-03T08:00:00+00:00",
                         "correlation_id": "before-encryption", "causation_id": None}))).fetchone()
        conn.execute("INSERT INTO outbox (global_position, stream_id) VALUES (%s, %s)", (position, stream))
    sealed = ops(stack.state, "encrypt-events")
    assert sealed.returncode == 0, sealed.stderr
    assert "encrypted the personal data of 1 customers" in sealed.stdout
    with psycopg.connect(stack.database) as conn:
        (data,) = conn.execute("SELECT data FROM events WHERE stream_id = %s", (stream,)).fetchone()
    assert set(data["name"]) == {"sealed"} and "Clear Person" not in json.dumps(data)
    again = ops(stack.state, "encrypt-events")
    assert "encrypted the personal data of 0 customers" in again.stdout


def test_rewrap_keys_gives_a_key_wrapped_without_the_context_its_context(stack):
    kms = stack.aws("kms")
    key_arn = kms.describe_key(KeyId=devstack_aws.KMS_ALIAS)["KeyMetadata"]["Arn"]
    blob = kms.encrypt(KeyId=key_arn, Plaintext=os.urandom(32))["CiphertextBlob"]  # no encryption context
    with psycopg.connect(stack.database, autocommit=True) as conn:
        (kek_id,) = conn.execute("INSERT INTO key_encryption_keys (kms_key_id, wrapped, encryption_context)"
                                 " VALUES (%s, %s, NULL) RETURNING id", (key_arn, blob)).fetchone()
    rewrapped = ops(stack.state, "rewrap-keys")
    assert rewrapped.returncode == 0, rewrapped.stderr
    assert f"rewrapped 1 key-encryption keys with the encryption context (ids {kek_id})" in rewrapped.stdout
    assert "none needed it" in ops(stack.state, "rewrap-keys").stdout


def test_reapply_erasures_makes_again_an_erasure_a_restore_undid(stack, tmp_path):
    customer = post_customer(stack.state, stack.api_port, f"erase-me-{uuid.uuid4().hex[:8]}@example.com")
    pgtools.backup(stack.database, tmp_path / "backup.dump")
    token = make(stack.state, "-s", "token", env={"SCOPES": "customers:erase customers:read"}).stdout.strip()
    erase = urllib.request.Request(f"http://127.0.0.1:{stack.api_port}/customer/{customer}/personal-data",
                                   method="DELETE", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(erase) as answer:
        assert answer.status == 204

    pgtools.restore(stack.database, tmp_path / "backup.dump")

    def has_key() -> bool:
        with psycopg.connect(stack.database) as conn:
            return conn.execute("SELECT count(*) FROM stream_keys WHERE stream_id = %s", (customer,)).fetchone()[0] == 1

    assert has_key()  # the restore brought the key back
    reapplied = ops(stack.state, "reapply-erasures")
    assert reapplied.returncode == 0, reapplied.stderr
    assert f"erased again: {customer}" in reapplied.stdout
    assert not has_key()


def test_make_token_gives_a_token_the_api_takes(stack):
    token = make(stack.state, "-s", "token").stdout.strip()
    assert token.count(".") == 2
    request = urllib.request.Request(f"http://127.0.0.1:{stack.api_port}/customers/search", method="POST",
                                     data=b'{"email": "nobody@example.com"}',
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request) as answer:
        assert answer.status == 200 and json.load(answer) == {"customers": []}


def test_a_missing_or_malformed_setting_is_one_line_from_every_command(stack):
    database = {"DATABASE_URL": stack.database}  # and nothing else of the stack's
    assert "PROJECTION_DLQ_URL is not set" in one_line(make(stack.state, "dlq", env=database))
    assert "PROJECTION_DLQ_URL is not set" in one_line(make(stack.state, "dlq-replay", env=database))
    assert "KAFKA_BOOTSTRAP_SERVERS is not set" in one_line(make(stack.state, "publish", env=database))
    assert "ERASURE_LOG_BUCKET is not set" in one_line(ops(stack.state, "reapply-erasures", env=database))
    assert "KMS_KEY_ID is not set" in one_line(ops(stack.state, "encrypt-events", env=database))
    assert "KMS_KEY_ID is not set" in one_line(ops(stack.state, "rewrap-keys", env=database))
    assert "RELAY_SHARDS must be" in one_line(make(stack.state, "outbox", env={**database, "RELAY_SHARDS": "99"}))
    malformed = {"DATABASE_URL": "postgres is over there"}
    assert "DATABASE_URL is not a PostgreSQL connection string" in one_line(make(stack.state, "migrate",
                                                                                 env=malformed))


def test_make_run_with_a_malformed_database_url_says_so_in_one_line(tmp_path):
    result = subprocess.run(make_command("run"), cwd=PROJECT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "DEVSTACK_DIR": str(tmp_path / "stack"),
                                 "DATABASE_URL": "postgres is over there", "PORT": str(free_port())})
    assert result.returncode != 0
    said = [line for line in (result.stdout + result.stderr).splitlines() if "DATABASE_URL" in line]
    assert said and "is not a PostgreSQL connection string" in said[-1] and "Traceback" not in result.stderr


def test_make_clean_removes_the_virtualenv(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    result = subprocess.run(["make", "--no-print-directory", f"VENV={venv}", "clean"], cwd=PROJECT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert not venv.exists()


def backfill_topic(stack) -> tuple[str, str]:
    """The stack's broker and a new topic on it for one backfill."""
    from devstack.kafka import create_topic

    bootstrap = f"127.0.0.1:{stack.kafka_port}"
    topic = f"backfill-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic)
    return bootstrap, topic


def newest_position(database: str) -> int:
    with psycopg.connect(database) as conn:
        return conn.execute("SELECT coalesce(max(global_position), 0) FROM events").fetchone()[0]


def test_a_backfill_killed_at_any_moment_goes_on_from_its_checkpoint_with_progress_and_status(stack):
    from tests.support.kafka import cloudevent, read_topic

    bootstrap, topic = backfill_topic(stack)
    before = newest_position(stack.database)  # the other tests' events, damaged ones among them
    added = [post_customer(stack.state, stack.api_port, f"kill{n}.{uuid.uuid4().hex[:6]}@example.com")
             for n in range(150)]
    stored = len(added)
    env = {**clean_environment(), "DEVSTACK_DIR": str(stack.state), "BACKFILL_BATCH_SIZE": "10"}
    killed = subprocess.Popen([sys.executable, "-m", "ops", "backfill", "--topic", topic, "--rate", "100",
                               "--from-position", str(before)],
                              cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def sent() -> int:
        with psycopg.connect(stack.database) as conn:
            row = conn.execute("SELECT sent FROM backfills WHERE topic = %s", (topic,)).fetchone()
        return row[0] if row else 0

    try:
        started = wait_for(lambda: sent() >= 40, timeout=60)
    finally:
        killed.kill()  # kill -9: no chance to clean up
        killed.wait()
    assert started, f"{ops(stack.state, 'backfill', '--status').stdout}\n{killed.stdout.read()}\n{killed.stderr.read()}"
    listed = ops(stack.state, "backfill", "--status")
    (line,) = [line for line in listed.stdout.splitlines() if f"to {topic}" in line]
    backfill_id = int(line.split()[0].removeprefix("backfill-"))
    assert " running " in line and f"/{stored:,} events" in line

    resumed = ops(stack.state, "backfill", "--resume", str(backfill_id), env={"BACKFILL_BATCH_SIZE": "10"})
    assert resumed.returncode == 0, resumed.stderr
    assert f"done: {stored:,} events sent, everything up to position" in resumed.stdout
    assert re.search(rf"backfill-{backfill_id}: [\d,]+/{stored:,} events \(100%\)", resumed.stderr), resumed.stderr
    records = read_topic(bootstrap, topic, expected=stored)
    delivered = [(cloudevent(r)["subject"], cloudevent(r)["streamversion"]) for r in records]
    assert len(set(delivered)) == stored and set(added) == {subject for subject, _ in delivered}
    assert len(delivered) - stored <= 10  # again: at most the batch on its way when it was killed
    assert f"backfill-{backfill_id}  done" in ops(stack.state, "backfill", "--status").stdout


def test_a_backfill_stops_at_an_event_it_cannot_read_names_it_and_does_not_pass_it_on_resume(stack):
    from tests.support.kafka import cloudevent, read_topic

    bootstrap, topic = backfill_topic(stack)
    before = newest_position(stack.database)
    first = [post_customer(stack.state, stack.api_port, f"before{n}.{uuid.uuid4().hex[:6]}@example.com")
             for n in range(2)]
    damaged, _ = unreadable_event(stack.database)
    after = post_customer(stack.state, stack.api_port, f"after.{uuid.uuid4().hex[:6]}@example.com")
    env = {"BACKFILL_BATCH_SIZE": "2"}
    asked = ops(stack.state, "backfill", "--topic", topic, "--from-position", str(before), env=env)
    assert asked.returncode == 1
    assert f"{damaged} v1 CustomerCreated: UnknownEventType" in asked.stdout
    assert "once that is mended: python -m ops backfill --resume" in asked.stderr
    (line,) = [line for line in ops(stack.state, "backfill", "--status").stdout.splitlines() if f"to {topic}" in line]
    assert " failed " in line and " 2/4 events" in line
    backfill_id = line.split()[0].removeprefix("backfill-")
    again = ops(stack.state, "backfill", "--resume", backfill_id, env=env)
    assert again.returncode == 1 and "failed " in again.stdout and str(damaged) in again.stdout  # tried, not skipped
    sent = read_topic(bootstrap, topic, expected=2, timeout=3)
    assert sorted(cloudevent(r)["subject"] for r in sent) == sorted(first)

    with psycopg.connect(stack.database, autocommit=True) as conn:  # mended (say, the code that reads it deployed)
        conn.execute("UPDATE events SET schema_version = 1, data = %s WHERE stream_id = %s",
                     (json.dumps({"name": "Mended", "email": "mended@example.com"}), damaged))
    mended = ops(stack.state, "backfill", "--resume", backfill_id, env=env)
    assert mended.returncode == 0 and "done: 4 events sent" in mended.stdout, mended.stdout + mended.stderr
    subjects = [cloudevent(r)["subject"] for r in read_topic(bootstrap, topic, expected=4)]
    assert sorted(subjects) == sorted([*first, str(damaged), after])
