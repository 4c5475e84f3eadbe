"""Requests per second through the app's HTTP layer (chalice.test.Client, in
process: no sockets, so the figure is the function's own work) as deployed
(tokens checked against the issuer's keys, personal data sealed), and with
a verifier that lets everyone in, in the same run: what checking bearer
tokens costs."""

from __future__ import annotations

import statistics
import time
import uuid

from bench.deployed import Deployment, become_container, settings_of
from chalicelib.auth import Caller


class LetEveryoneIn:
    """The baseline: no token checked at all."""

    caller = Caller(subject="bench", client_id=None, scopes=frozenset({"customers:read", "customers:write"}))

    def verify(self, authorization):
        return self.caller


def _rate(client, token: str, requests: int, customer_ids: list[str]) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {token}"}
    rates = {}
    began = time.perf_counter()
    for n in range(requests):
        response = client.http.get(f"/customer/{customer_ids[n % len(customer_ids)]}", headers=headers)
        assert response.status_code == 200, response.body
    rates["read"] = requests / (time.perf_counter() - began)
    began = time.perf_counter()
    for n in range(requests // 4):
        response = client.http.post("/customer", headers={**headers, "Content-Type": "application/json"},
                                    body=f'{{"name": "B", "email": "b{time.time_ns()}.{n}@example.com"}}')
        assert response.status_code == 201, response.body
    rates["create"] = (requests // 4) / (time.perf_counter() - began)
    return rates


def throughput(deployment: Deployment, requests: int = 200, rounds: int = 20) -> dict:
    from chalice.test import Client

    from app import app
    from chalicelib import application as application_module
    from chalicelib.application import CustomerApplication

    become_container(deployment.env)
    checked = CustomerApplication(settings_of(deployment.env))
    unchecked = CustomerApplication(settings_of(deployment.env), verifier=LetEveryoneIn())
    token = deployment.token()
    figures: dict[str, dict[str, list[float]]] = {"checked": {}, "unchecked": {}}
    ratios: dict[str, list[float]] = {"read": [], "create": []}
    try:
        with Client(app) as client:
            application_module.serve(checked)
            ids = [client.http.post("/customer", headers={"Authorization": f"Bearer {token}",
                                                          "Content-Type": "application/json"},
                                    body=f'{{"name": "R", "email": "r{n}.{time.time_ns()}@example.com"}}'
                                    ).json_body["id"] for n in range(50)]
            checked.reproject({uuid.UUID(customer_id) for customer_id in ids})  # read from the read model
            pair = [("unchecked", unchecked), ("checked", checked)]
            for round_ in range(rounds):
                # Each goes first in every other round: drift (a growing
                # table, background work left by earlier benchmarks) then
                # hits both alike.
                this_round = {}
                for name, application in (pair if round_ % 2 == 0 else pair[::-1]):
                    application_module.serve(application)
                    this_round[name] = _rate(client, token, requests, ids)
                    for kind, rate in this_round[name].items():
                        figures[name].setdefault(kind, []).append(rate)
                for kind in ratios:
                    ratios[kind].append(this_round["checked"][kind] / this_round["unchecked"][kind])
    finally:
        application_module.serve(None)
        checked.close()
        unchecked.close()
    result: dict = {"requests": requests}
    for kind in ("read", "create"):
        with_checks = statistics.median(figures["checked"][kind])
        without = statistics.median(figures["unchecked"][kind])
        result[kind] = {"with_token_checks": with_checks, "without": without,
                        "ratio": statistics.median(ratios[kind])}
    return result
