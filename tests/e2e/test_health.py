"""GET /health for load balancers: public, cheap, cached per container, and
nothing but ok or not. GET /health/details for operators (a token with
customers:operate): database, outbox backlog and projection lag, with the
reasons; 200 when healthy, 503 when not; never any customer data."""

import dataclasses
import json
import time

import psycopg

from chalicelib.application import CustomerApplication
from chalicelib.auth import OPERATE
from chalicelib.usecases.health import HealthCheck, Limits
from tests.support.api import serving
from tests.support.deliveries import delivered_batch, stored_events
from tests.support.waiting import run_in_threads


def project_everything(client, db):
    client.lambda_.invoke("project_customers", delivered_batch(stored_events(db)))


def publish_everything(db):
    with psycopg.connect(db) as conn:
        conn.execute("UPDATE outbox SET published_at = clock_timestamp()")


def details(client, issuer):
    return client.get("/health/details", headers={"Authorization": f"Bearer {issuer.token(scopes=OPERATE)}"})


def test_healthy_when_caught_up(client, db, issuer):
    customer_id = client.create_id()
    publish_everything(db)
    project_everything(client, db)
    public = client.get("/health")
    assert public.status_code == 200 and public.json_body == {"status": "ok", "database": "reachable"}
    response = details(client, issuer)
    assert response.status_code == 200, response.body
    body = response.json_body
    assert body["status"] == "ok" and body["database"] == "reachable"
    assert body["outbox"] == {"unpublished": 0, "oldest_age_seconds": None, "parked": 0}
    assert body["projection"] == {"events_behind": 0, "lag_seconds": None}
    for answer in (public, response):
        assert customer_id not in answer.body.decode() and "ada@example.com" not in answer.body.decode()


def test_the_details_need_a_token_with_the_operator_scope(client, db, issuer):
    client.create_id()
    assert client.get("/health/details", headers={"Authorization": None}).status_code == 401
    refused = client.get("/health/details")  # read and write, not operate
    assert refused.status_code == 403 and "customers:operate" in refused.headers["WWW-Authenticate"]
    assert "outbox" not in refused.body.decode()
    assert details(client, issuer).status_code == 200


def test_a_fresh_backlog_and_a_read_model_just_behind_are_still_healthy(client, db, issuer):
    client.create_id()
    body = details(client, issuer).json_body
    assert body["status"] == "ok"
    assert body["outbox"]["unpublished"] == 1 and body["projection"]["events_behind"] == 1
    assert client.get("/health").status_code == 200


def test_an_old_outbox_backlog_is_503_with_the_reason(client, db, issuer):
    client.create_id()
    project_everything(client, db)
    with psycopg.connect(db) as conn:
        conn.execute("UPDATE outbox SET created_at = created_at - interval '10 minutes'")
    assert client.get("/health").json_body == {"status": "unhealthy", "database": "reachable"}
    response = details(client, issuer)
    assert response.status_code == 503
    body = response.json_body
    assert body["status"] == "unhealthy" and body["outbox"]["oldest_age_seconds"] >= 600
    assert [r for r in body["reasons"] if "outbox" in r]


def test_a_read_model_far_behind_the_store_is_503(client, db, issuer):
    client.create_id()
    publish_everything(db)
    with psycopg.connect(db) as conn:  # the event is long committed, and not projected
        conn.execute("UPDATE events SET recorded_at = recorded_at - interval '10 minutes'")
    assert client.get("/health").status_code == 503
    body = details(client, issuer).json_body
    assert body["status"] == "unhealthy"
    assert body["projection"]["events_behind"] == 1 and body["projection"]["lag_seconds"] >= 600
    assert [r for r in body["reasons"] if "read model" in r]


def test_an_unreachable_database_is_503_without_its_address(client, application):
    settings = dataclasses.replace(application.settings,
                                   database_url="postgresql://service:s3cret@127.0.0.1:1/customers")
    with serving(CustomerApplication(settings)):
        response = client.get("/health")
    assert response.status_code == 503
    body = json.loads(response.body)
    assert body == {"status": "unhealthy", "database": "unreachable"}
    assert "s3cret" not in response.body.decode() and "127.0.0.1" not in response.body.decode()


def test_health_is_never_cached_by_clients(client):
    assert client.get("/health").headers["Cache-Control"] == "no-store"


def test_the_public_answer_is_kept_by_the_container_for_a_few_seconds(client, db, application):
    client.create_id()
    publish_everything(db)
    project_everything(client, db)
    with serving(CustomerApplication(dataclasses.replace(application.settings, health_cache_seconds=1.0))):
        assert client.get("/health").status_code == 200
        with psycopg.connect(db) as conn:
            conn.execute("UPDATE outbox SET created_at = created_at - interval '10 minutes', published_at = NULL")
        assert client.get("/health").status_code == 200  # the answer of a moment ago
        time.sleep(1.1)
        assert client.get("/health").status_code == 503


class CountingConnection:
    """A connection that records what it was asked."""

    def __init__(self, answer) -> None:
        self.statements: list[str] = []
        self.answer = answer

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, statement, params=None):
        self.statements.append(str(statement))
        time.sleep(0.01)  # others arrive while it runs
        return self

    def fetchone(self):
        return self.answer


def test_many_anonymous_checks_at_once_cost_the_database_one_query():
    conn = CountingConnection((None, False, None))
    opened = []
    check = HealthCheck(lambda: opened.append(1) or conn, Limits(120, 120), cache_seconds=60)
    answers = []
    run_in_threads(lambda: answers.extend(check.public() for _ in range(5)), [()] * 8)
    assert len(answers) == 40 and all(answer.healthy for answer in answers)
    assert len(opened) == 1 and len(conn.statements) == 1


def test_the_public_check_is_cheap_with_no_setting_at_all(monkeypatch):
    """As the composition root makes it from a default environment: many
    anonymous calls within its cache window cost the database one query."""
    import contextlib

    from chalicelib.bootstrap import Bootstrap
    from chalicelib.infra.settings import Settings

    monkeypatch.delenv("HEALTH_CACHE_SECONDS", raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/nowhere")
    conn = CountingConnection((None, False, None))

    class Connections:
        def connection(self):
            return contextlib.nullcontext(conn)

        def close(self):
            pass

    class Parts(Bootstrap):
        def connections(self):
            return Connections()

    check = Parts(Settings.from_env()).health_check()
    assert all(check.public().healthy for _ in range(50))
    assert len(conn.statements) == 1
