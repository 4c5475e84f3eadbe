"""The console's routes through the app as API Gateway invokes it: each
refuses a missing, bad or under-scoped token and changes nothing; personal
data is masked unless revealed by a caller who may read it, and a reveal is
logged; operator actions do what they say and are logged with who did them.
(tests/e2e/test_console_browser.py drives the page itself.)"""

import base64
import json
import re
import uuid

import psycopg
import pytest
from chalice.test import Client

from app import app
from chalicelib.auth import FEED, OPERATE, READ, WRITE
from chalicelib.infra.dead_letters import unreadable_record
from chalicelib.infra.kafka_delivery import DeliveredRecord
from chalicelib.infra.kafka_reader import partition_for_key
from tests.support.api import Api
from tests.support.kafka import read_topic

PARKED_ERROR = "planted: cannot be written as a CloudEvent"
EVERYTHING_BUT_OPERATE = f"{READ} {WRITE} customers:erase {FEED}"


@pytest.fixture
def console(application, issuer):
    """The API, called by an operator who may also read personal data."""
    with Client(app) as client:
        yield Api(client, token=issuer.token(subject="operator-olga", scopes=f"{OPERATE} {READ}"))


@pytest.fixture
def writer(application, issuer):
    """Whoever creates and changes customers through the API."""
    with Client(app) as client:
        yield Api(client, token=issuer.token(subject="writer-wim"))


def as_caller(console, token):
    return Api(console.client, token=token)


def plant_parked_row(db, customer_id) -> int:
    with psycopg.connect(db) as conn:
        position = conn.execute("SELECT global_position FROM events WHERE stream_id = %s ORDER BY version DESC"
                                " LIMIT 1", (customer_id,)).fetchone()[0]
        conn.execute("UPDATE outbox SET published_at = clock_timestamp() WHERE stream_id = %s AND parked_at IS NULL",
                     (customer_id,))
        return conn.execute("INSERT INTO outbox (global_position, stream_id, parked_at, parked_error)"
                            " VALUES (%s, %s, clock_timestamp(), %s) RETURNING id",
                            (position, customer_id, PARKED_ERROR)).fetchone()[0]


def outbox_row(db, outbox_id):
    with psycopg.connect(db) as conn:
        return conn.execute("SELECT parked_at IS NOT NULL, published_at IS NOT NULL FROM outbox WHERE id = %s",
                            (outbox_id,)).fetchone()


def send_dead_letter(aws, dlq, customer_id) -> str:
    record = DeliveredRecord({"topic": "customer-events", "partition": 0, "offset": 7,
                              "key": base64.b64encode(str(customer_id).encode()).decode(),
                              "value": base64.b64encode(b"not a cloudevent").decode()})
    body = unreadable_record(record, "planted: not a CloudEvents 1.0 JSON object", "project_customers")
    return aws("sqs").send_message(QueueUrl=dlq, MessageBody=json.dumps(body))["MessageId"]


def letters_in(aws, dlq) -> set[str]:
    answer = aws("sqs").receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, VisibilityTimeout=0)
    return {m["MessageId"] for m in answer.get("Messages", [])}


def backfills(db) -> int:
    with psycopg.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM backfills").fetchone()[0]


def log_lines(capfd, message):
    found = []
    for line in capfd.readouterr().err.splitlines():  # log lines go to stderr
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("message") == message:
            found.append(record)
    return found


def console_routes(customer_id, outbox_id, letter):
    return [
        ("GET", f"/console/api/customer/{customer_id}/timeline", None),
        ("GET", f"/console/api/customer/{customer_id}/timeline?reveal=true", None),
        ("GET", "/console/api/topic", None),
        ("GET", f"/console/api/topic/messages?customer={customer_id}&reveal=true", None),
        ("GET", "/console/api/operations", None),
        ("POST", f"/console/api/outbox/{outbox_id}/retry", None),
        ("POST", f"/console/api/outbox/{outbox_id}/skip", None),
        ("POST", f"/console/api/dead-letters/{letter}/replay", None),
        ("POST", f"/console/api/dead-letters/{letter}/discard", None),
        ("POST", "/console/api/backfills", {"topic": "customer-events-backfill-refused"}),
    ]


def test_every_console_route_refuses_a_missing_bad_or_underscoped_token_and_changes_nothing(
        db, dlq, aws, application, console, writer, issuer, capfd):
    customer_id = writer.create(email="refused@example.com").json_body["id"]
    outbox_id = plant_parked_row(db, customer_id)
    letter = send_dead_letter(aws, dlq, customer_id)
    other_issuer_token = issuer.token(scopes=OPERATE, iss="https://elsewhere.example.com")
    refusals = [
        (None, 401), ("not-a-jwt", 401), (other_issuer_token, 401),
        (issuer.token(scopes=EVERYTHING_BUT_OPERATE), 403),
    ]
    routes = console_routes(customer_id, outbox_id, letter)
    assert {path.split("?")[0].replace(customer_id, "{customer_id}").replace(letter, "{message_id}")
            .replace(str(outbox_id), "{outbox_id}") for _, path, _ in routes} == {
        path for path in app.routes if path.startswith("/console/api/")}
    capfd.readouterr()
    for token, status in refusals:
        caller = as_caller(console, token)
        for method, path, body in routes:
            headers = {"Authorization": None} if token is None else {"Authorization": f"Bearer {token}"}
            if body is None:
                answer = caller.http.request(method, path, headers=headers)
            else:
                answer = caller.post(path, body, headers=headers)
            assert answer.status_code == status, (method, path, token, answer.body)
            assert "WWW-Authenticate" in answer.headers
    assert outbox_row(db, outbox_id) == (True, False)  # still parked
    assert letter in letters_in(aws, dlq)
    assert backfills(db) == 0
    seen = capfd.readouterr().err
    assert "personal_data_revealed" not in seen and "console_action" not in seen


def test_names_and_emails_are_masked_unless_revealed_by_a_caller_who_may_read_them_and_a_reveal_is_logged(
        application, console, writer, issuer, capfd):
    customer_id = writer.create(name="Grace Hopper", email="grace@example.com").json_body["id"]
    path = f"/console/api/customer/{customer_id}/timeline"

    masked = console.http.get(path)
    assert masked.status_code == 200 and masked.headers["Cache-Control"] == "no-store"
    event = masked.json_body["events"][0]
    assert event["data"] == {"name": "•••", "email": "•••"}
    assert event["state_after"]["name"] == "•••" and masked.json_body["revealed"] is False
    assert "Grace" not in masked.body.decode() and "grace@" not in masked.body.decode()

    operator_only = as_caller(console, issuer.token(subject="no-reader", scopes=OPERATE))
    capfd.readouterr()
    refused = operator_only.http.get(f"{path}?reveal=true")
    assert refused.status_code == 403 and READ in refused.json_body["Message"]
    assert operator_only.http.get(path).status_code == 200  # masked, it may see
    assert log_lines(capfd, "personal_data_revealed") == []

    revealed = console.http.get(f"{path}?reveal=true")
    assert revealed.status_code == 200 and revealed.json_body["revealed"] is True
    assert revealed.json_body["events"][0]["data"] == {"name": "Grace Hopper", "email": "grace@example.com"}
    [logged] = log_lines(capfd, "personal_data_revealed")
    assert logged["subject"] == "operator-olga" and logged["customer_id"] == customer_id

    assert console.http.get(f"{path}?reveal=yes").status_code == 400
    assert console.http.get(f"/console/api/customer/{uuid.uuid4()}/timeline").status_code == 404
    assert console.http.get("/console/api/customer/not-an-id/timeline").status_code == 400


def test_the_timeline_shows_every_event_the_state_after_it_and_where_it_is_now(
        db, topic, kafka_bootstrap, application, console, writer):
    customer_id = writer.create(name="Ada", email="ada@example.com").json_body["id"]
    assert writer.post(f"/customer/{customer_id}/email", {"email": "ada@engine.org"}).status_code == 200
    path = f"/console/api/customer/{customer_id}/timeline?reveal=true"

    waiting = console.http.get(path).json_body
    assert [e["type"] for e in waiting["events"]] == ["CustomerCreated", "CustomerEmailChanged"]
    assert [e["where"]["outbox"] for e in waiting["events"]] == ["waiting", "waiting"]
    assert [e["state_after"]["email"] for e in waiting["events"]] == ["ada@example.com", "ada@engine.org"]
    first = waiting["events"][0]
    assert first["actor"]["subject"] == "writer-wim" and first["correlation_id"] and first["causation_id"]
    assert first["schema_version"] == 1 and waiting["events"][1]["schema_version"] == 2
    assert waiting["differences"] == ["the read model has no row for this customer"]

    application.outbox_relay().run_once()
    records = read_topic(kafka_bootstrap, topic, expected=2)
    application.reproject({uuid.UUID(customer_id)})
    now = console.http.get(path).json_body
    partition = partition_for_key(customer_id.encode(), 3)
    assert {r.partition for r in records} == {partition}
    assert [(e["where"]["outbox"], e["where"]["partition"], e["where"]["offset"], e["where"]["projected"])
            for e in now["events"]] == [("published", r.partition, r.offset, True) for r in records]
    assert now["differences"] == [] and now["read_model"]["version"] == 2

    with psycopg.connect(db) as conn:
        conn.execute("UPDATE customers_view SET email = to_jsonb(%s::text) WHERE id = %s",
                     ("drifted@example.com", customer_id))
    assert console.http.get(path).json_body["differences"] == ["email"]


def test_the_topic_shows_a_customers_messages_from_its_keys_partition_decoded_with_their_signatures_checked(
        signed_messages, topic, kafka_bootstrap, application, console, writer):
    from kafka import KafkaProducer

    ours = writer.create(name="Ada", email="ada@example.com").json_body["id"]
    others = [writer.create(email=f"other{n}@example.com").json_body["id"] for n in range(6)]
    application.outbox_relay().run_once()
    read_topic(kafka_bootstrap, topic, expected=7)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    forged = json.dumps({"specversion": "1.0", "id": "forged", "source": "/elsewhere", "type": "CustomerDeleted",
                         "subject": ours, "time": "2026-12-03T10:00:00+00:00", "streamversion": 2,
                         "data": {}}).encode()
    producer.send(topic, key=ours.encode(), value=forged,
                  headers=[("event-type", b"CustomerDeleted"), ("signature", b"hmac-sha256=" + b"00" * 32)])
    producer.flush()
    producer.close()

    found = console.http.get(f"/console/api/topic/messages?customer={ours}&reveal=true")
    assert found.status_code == 200, found.body
    messages = found.json_body["messages"]
    assert found.json_body["partition"] == partition_for_key(ours.encode(), 3)
    assert [m["key"] for m in messages] == [ours, ours]
    assert messages[0]["signature"] == "valid" and messages[0]["data"] == {"name": "Ada", "email": "ada@example.com"}
    assert messages[0]["attributes"]["type"] == "CustomerCreated" and "data" not in messages[0]["attributes"]
    assert "does not match" in messages[1]["signature"]

    masked = console.http.get(f"/console/api/topic/messages?customer={ours}").json_body["messages"]
    assert masked[0]["data"] == {"name": "•••", "email": "•••"}
    typed = console.http.get(f"/console/api/topic/messages?customer={ours}&type=CustomerDeleted").json_body
    assert [m["attributes"]["id"] for m in typed["messages"]] == ["forged"]
    partitions = console.http.get("/console/api/topic").json_body["partitions"]
    assert sum(p["end"] - p["beginning"] for p in partitions) == 8
    newest = console.http.get("/console/api/topic/messages?from=newest&limit=1&partition="
                              f"{found.json_body['partition']}")
    assert [m["attributes"]["id"] for m in newest.json_body["messages"]] == ["forged"]
    assert set(others)  # the other customers' messages are on the topic, not in the customer's answer

    for bad in ("from=somewhere", "from=offset", "from=time", "from=time&since=yesterday", "partition=99",
                "limit=0", "reveal=true&partition=0", "customer=not-an-id"):
        answer = console.http.get(f"/console/api/topic/messages?{bad}")
        assert answer.status_code == 400, (bad, answer.body)


def test_operator_actions_change_what_they_say_and_are_logged_with_who_did_them(
        db, dlq, aws, application, console, writer, capfd):
    customer_id = writer.create(email="acted-on@example.com").json_body["id"]
    retried, skipped = plant_parked_row(db, customer_id), plant_parked_row(db, customer_id)
    shown = console.http.get("/console/api/operations").json_body
    assert {row["outbox_id"] for row in shown["parked"]} == {retried, skipped}
    assert shown["health"]["status"] == "unhealthy" and shown["shards"][0]["parked"] == 2

    capfd.readouterr()
    assert console.http.post(f"/console/api/outbox/{retried}/retry").status_code == 200
    assert outbox_row(db, retried) == (False, False)  # unparked: the relay tries it again
    assert console.http.post(f"/console/api/outbox/{skipped}/skip").status_code == 200
    assert outbox_row(db, skipped) == (True, True)  # handled, never published
    assert console.http.post(f"/console/api/outbox/{skipped}/retry").status_code == 404
    actions = log_lines(capfd, "console_action")
    assert [(a["action"], a["target"], a["subject"]) for a in actions] == [
        ("retry_parked_outbox_row", f"outbox/{retried}", "operator-olga"),
        ("skip_parked_outbox_row", f"outbox/{skipped}", "operator-olga"),
        ("retry_parked_outbox_row", f"outbox/{skipped}", "operator-olga")]

    replayed, discarded = send_dead_letter(aws, dlq, customer_id), send_dead_letter(aws, dlq, customer_id)
    letters = console.http.get("/console/api/operations").json_body["dead_letters"]
    assert {d["message_id"] for d in letters} == {replayed, discarded}
    assert all("planted" in d["error"] for d in letters)
    with psycopg.connect(db) as conn:
        conn.execute("DELETE FROM customers_view WHERE id = %s", (customer_id,))
    answer = console.http.post(f"/console/api/dead-letters/{replayed}/replay")
    assert answer.status_code == 200 and answer.json_body["deleted"] == 1, answer.body
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT version FROM customers_view WHERE id = %s", (customer_id,)).fetchone() == (1,)
    assert letters_in(aws, dlq) == {discarded}
    assert console.http.post(f"/console/api/dead-letters/{discarded}/discard").status_code == 200
    assert letters_in(aws, dlq) == set()
    assert console.http.post(f"/console/api/dead-letters/{discarded}/discard").status_code == 404
    assert console.http.post("/console/api/dead-letters/not%20an%20id/replay").status_code == 400
    assert [a["action"] for a in log_lines(capfd, "console_action")] == [
        "replay_dead_letter", "discard_dead_letter", "discard_dead_letter"]


def test_a_backfill_is_started_from_the_console_by_its_operator_and_bad_asks_change_nothing(
        db, application, console):
    made = console.post("/console/api/backfills", {"topic": "customer-events-backfill-console", "rate_limit": 100})
    assert made.status_code == 201, made.body
    assert made.json_body["state"] in ("waiting", "running") and made.json_body["requested_by"] == (
        "console (operator-olga)")
    for bad in ({"topic": "customer-events"}, {"topic": ""}, {"topic": "t", "rate_limit": 0},
                {"topic": "t", "event_types": [1]}, {"topic": "t", "customer_id": "no"}, {"topic": "t", "x": 1},
                {"topic": "t", "after_position": -1}, "not json"):
        answer = console.post("/console/api/backfills", bad)
        assert answer.status_code in (400, 415), (bad, answer.body)
    assert backfills(db) == 1
    listed = console.http.get("/console/api/operations").json_body["backfills"]
    assert [b["topic"] for b in listed] == ["customer-events-backfill-console"]


def test_the_page_loads_only_its_own_files_with_a_policy_that_allows_no_inline_script(application, console):
    page = console.http.get("/console", headers={"Authorization": None})
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "frame-ancestors 'none'" in policy
    html = page.body.decode()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all('src="console/assets/' in attributes and not body.strip() for attributes, body in scripts)
    assert not re.search(r"\son[a-z]+=", html)  # no inline handlers
    assert "http://" not in html and "https://" not in html
    for asset, kind in (("console.js", "text/javascript"), ("console.css", "text/css"),
                        ("console.svg", "image/svg+xml")):
        served = console.http.get(f"/console/assets/{asset}", headers={"Authorization": None})
        assert served.status_code == 200 and served.headers["Content-Type"].startswith(kind)
        assert served.headers["Content-Security-Policy"] == policy
    script = console.http.get("/console/assets/console.js").body.decode()
    for unsafe in (r"\.(inner|outer)HTML\b", r"insertAdjacentHTML", r"\blocalStorage\s*[.\[]", r"document\.cookie",
                   r"\beval\(", r"document\.write"):
        assert not re.search(unsafe, script), unsafe  # data as text only; the token in memory only
    assert console.http.get("/console/assets/..%2Fapp.py", headers={"Authorization": None}).status_code == 404
    config = console.http.get("/console/config", headers={"Authorization": None}).json_body
    assert config["client_id"] == "customer-console" and config["token_endpoint"].endswith("/token")
    assert OPERATE in config["scope"].split()
