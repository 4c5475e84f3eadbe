"""The application facade under many callers at once, from its very first
call: what a container makes once (connection, token verifier and the
issuer's keys, key ring and key-encryption key, health check) is made once,
and a part that failed to be made is made again by the next caller."""

import json
import threading
import uuid

from chalicelib import application as application_module
from chalicelib.application import CustomerApplication
from chalicelib.eventstore.events import CommandContext
from chalicelib.infra import logs
from chalicelib.infra.settings import ConfigurationError, Settings
from tests.integration.test_connection_pool import client_connections
from tests.support.waiting import run_in_threads

CALLERS = 16


def run_together(work, callers: int = CALLERS) -> list:
    start = threading.Barrier(callers)
    results: list = [None] * callers

    def run(n: int) -> None:
        start.wait()
        try:
            results[n] = work(n)
        except Exception as error:  # noqa: BLE001 - reported by the test
            results[n] = error

    run_in_threads(run, [(n,) for n in range(callers)], timeout=120)
    return results


class Context:
    """A Lambda context: what an invocation knows about itself."""

    def __init__(self, n: int) -> None:
        self.function_name = "api_handler"
        self.aws_request_id = f"request-{n}"


def test_first_calls_from_many_threads_make_each_part_once_and_keep_their_own_logs_and_metrics(
        db, issuer, encryption, aws, monkeypatch, capfd):
    for name, value in issuer.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(logs, "_cold_start", True)
    application = CustomerApplication(Settings.from_env(), aws=aws)
    token = issuer.token(subject="many")
    fetched_before = issuer.jwks_requests
    try:
        def first_call(n: int):
            # What each function invocation does: its context, its correlation id.
            with logs.invocation(Context(n)):
                logs.correlation_id.set(f"correlation-{n}")
                caller = application.authenticate(f"Bearer {token}")
                context = CommandContext(correlation_id=f"correlation-{n}", causation_id=f"request-{n}",
                                         actor=caller.to_metadata())
                created = application.create_customer(f"Caller {n}", f"caller{n}@example.com", context)
                read = application.customer(uuid.UUID(created.customer_id), strong=True)
                return created.customer_id, read.row.email, application.health().healthy

        capfd.readouterr()
        results = run_together(first_call)
        out, err = capfd.readouterr()
        assert [r for r in results if isinstance(r, Exception)] == []
        assert sorted(email for _, email, _ in results) == sorted(f"caller{n}@example.com" for n in range(CALLERS))
        assert len({customer_id for customer_id, _, _ in results}) == CALLERS
        assert issuer.jwks_requests - fetched_before == 1  # one verifier, one fetch of the issuer's keys
        assert application.parts.personal_data().keys.kms_calls == 1  # one key-encryption key for the container
        assert client_connections(db) == 1  # one connection, shared in turn
        assert application.parts.database() is application.parts.database()
        assert application.parts.health_check() is application.parts.health_check()
    finally:
        application.close()

    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    created = [line for line in lines if line["message"] == "customer_created"]
    assert len(created) == CALLERS
    for line in created:  # each line carries its own invocation's request id, and its own cold-start flag
        assert line["function_request_id"] == line["correlation_id"].replace("correlation", "request")
    assert sum(1 for line in created if line["cold_start"]) == 1
    emf = [json.loads(line) for line in out.splitlines() if '"_aws"' in line]
    assert len(emf) == CALLERS
    for line in emf:  # each metric line counts its own invocation's command
        assert line["function_request_id"] == line["correlation_id"].replace("correlation", "request")
        assert line["CommandsSucceeded"] == [1.0]
    assert sum(1 for line in emf if "ColdStart" in line) == 1


def test_a_part_that_failed_to_be_made_is_made_by_the_next_caller(db, monkeypatch):
    served = application_module.serve(None)
    try:
        monkeypatch.delenv("DATABASE_URL")
        failures = run_together(lambda n: application_module.current(), callers=4)
        assert all(isinstance(f, ConfigurationError) for f in failures)
        monkeypatch.setenv("DATABASE_URL", db)
        made = run_together(lambda n: application_module.current(), callers=4)
        assert len({id(a) for a in made}) == 1 and isinstance(made[0], CustomerApplication)
        made[0].close()
    finally:
        application_module.serve(served)
