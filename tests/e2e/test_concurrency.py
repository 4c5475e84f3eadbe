"""Many callers at once, on a cold process: `make run`'s API serves each
request on a thread of its own, so the very first requests race to make
what the container makes once (logger, metrics, application, pool, token
verifier, keys)."""

import http.client
import json
import threading
import uuid
from collections import Counter, defaultdict

from devstack.postgres import free_port
from tests.support.stack import Output, interrupt, make_token, start_stack, wait_until_ready
from tests.support.waiting import run_in_threads


def call(port: int, method: str, path: str, headers: dict, body: dict | None = None) -> tuple[int, dict, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        connection.request(method, path, body=payload,
                           headers={**headers, **({"Content-Type": "application/json"} if payload else {})})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def total(value) -> float:
    """An EMF metric's value: one number, or the list of those recorded."""
    return sum(value) if isinstance(value, list) else value


def test_a_burst_of_concurrent_first_requests_is_answered_as_each_would_be_alone(tmp_path):
    state = tmp_path / "stack"
    api_port = free_port()
    stack = start_stack(state, api_port, free_port(), free_port())
    output = Output(stack)
    try:
        wait_until_ready(output, api_port, stack)
        bearer = {"Authorization": f"Bearer {make_token(state)}"}
        key = f"burst-{uuid.uuid4()}"
        unknown = str(uuid.uuid4())
        # (method, path, headers, body, what it answers alone)
        requests = [
            *[("POST", "/customer", bearer, {"name": f"Burst {n}", "email": f"burst{n}@example.com"}, 201)
              for n in range(4)],
            ("POST", "/customer", bearer, {"name": "Twin", "email": "twin@example.com"}, "twin"),
            ("POST", "/customer", bearer, {"name": "Twin", "email": "twin@example.com"}, "twin"),
            ("POST", "/customer", {**bearer, "Idempotency-Key": key}, {"name": "Kay", "email": "kay@example.com"}, 201),
            ("POST", "/customer", {**bearer, "Idempotency-Key": key}, {"name": "Kay", "email": "kay@example.com"}, 201),
            ("POST", "/customer", {**bearer, "Idempotency-Key": key + "-2"},
             {"name": "Lee", "email": "lee@example.com"}, 201),
            ("GET", f"/customer/{unknown}", bearer, None, 404),
            ("GET", f"/customer/{unknown}/events", bearer, None, 404),
            ("GET", "/customers?email=nobody@example.com", bearer, None, 200),
            ("GET", "/health", {}, None, 200),
            ("GET", "/health", {}, None, 200),
            ("GET", "/openapi.json", {}, None, 200),
            ("GET", "/openapi.json", {}, None, 200),
            ("GET", f"/customer/{unknown}", {}, None, 401),
            ("POST", "/customer", bearer, {"name": "No email"}, 400),
        ]
        correlation_ids = [f"burst-{n}-{uuid.uuid4().hex[:8]}" for n in range(len(requests))]
        start = threading.Barrier(len(requests))
        answers: list = [None] * len(requests)

        def send(n: int) -> None:
            method, path, headers, body, _ = requests[n]
            start.wait()
            try:
                answers[n] = call(api_port, method, path, {**headers, "X-Correlation-Id": correlation_ids[n]}, body)
            except OSError as error:
                answers[n] = (None, {}, repr(error).encode())

        run_in_threads(send, [(n,) for n in range(len(requests))], timeout=90)

        statuses = [answer[0] for answer in answers]
        failed = [(request[:2], answer) for request, answer in zip(requests, answers, strict=True)
                  if answer[0] is None or answer[0] >= 500]
        assert failed == []
        for (method, path, _, body, alone), (status, _headers, raw) in zip(requests, answers, strict=True):
            if alone == "twin":
                continue
            assert status == alone, (method, path, status, raw)
            if status == 201:
                created = json.loads(raw)
                assert (created["name"], created["email"], created["version"]) == (body["name"], body["email"], 1)
        twins = sorted(status for (*_, alone), status in zip(requests, statuses, strict=True) if alone == "twin")
        assert twins == [201, 409]  # one takes the email, the other is told it is taken
        kay = [json.loads(answers[n][2]) for n in (6, 7)]
        assert kay[0]["id"] == kay[1]["id"]  # one key, one customer
        assert sorted(answers[n][1].get("Idempotent-Replayed", "") for n in (6, 7)) == ["", "true"]
        assert json.loads(answers[11][2]) == {"customers": []}
        assert json.loads(answers[14][2])["openapi"].startswith("3.")
        assert all(answers[n][1]["X-Correlation-Id"] == correlation_ids[n] for n in range(len(requests)))
    finally:
        interrupt(stack, output)

    # Every log line and metric line of an invocation carries that
    # invocation's request id, and no other request's correlation id.
    lines = [line for line in output.json_lines() if line.get("correlation_id") in correlation_ids]
    request_ids = defaultdict(set)
    for line in lines:
        request_ids[line["correlation_id"]].add(line.get("function_request_id"))
    silent = [requests[n][:2] for n, cid in enumerate(correlation_ids) if cid not in request_ids]
    assert silent == [], "each request leaves at least one line"
    assert all(len(ids) == 1 and None not in ids for ids in request_ids.values()), request_ids
    assert len({next(iter(ids)) for ids in request_ids.values()}) == len(correlation_ids)
    # Each request's metric line counts that request's command, not its neighbours'.
    metrics = {line["correlation_id"]: line for line in lines if "_aws" in line}
    commands = Counter()
    for n, (method, *_rest) in enumerate(requests):
        line = metrics.get(correlation_ids[n], {})
        outcome = [name for name in ("CommandsSucceeded", "CommandsRejected", "CommandConflicts") if name in line]
        if method == "POST" and statuses[n] in (201, 409):
            assert len(outcome) == 1 and total(line[outcome[0]]) == 1, (requests[n], line)
            commands[outcome[0]] += 1
        else:
            assert outcome == [], (requests[n], line)
    assert commands == Counter(CommandsSucceeded=8, CommandsRejected=1)
    assert sum(1 for line in metrics.values() if line.get("ColdStart")) == 1  # one container, one cold start
