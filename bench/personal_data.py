"""What sealing personal data costs where it is opened: GET /customer/{id}
from the read model, rows sealed (opened on the way out) against rows in
clear, in process, alternating rounds; and the KMS calls a warm container
makes per 1,000 commands. (Creations and loads, sealed and in clear, are in
write_side.py.)"""

from __future__ import annotations

import statistics
import time
import uuid

from bench.deployed import Deployment, become_container, settings_of
from bench.write_side import CONTEXT


def _read_rates(deployment: Deployment, rounds: int, customers: int, requests: int) -> dict[str, float]:
    from chalice.test import Client

    from app import app
    from bench.http_api import LetEveryoneIn
    from chalicelib import application as application_module
    from chalicelib.application import CustomerApplication

    become_container(deployment.env)
    apps = {"sealed": CustomerApplication(settings_of(deployment.env), verifier=LetEveryoneIn()),
            "clear": CustomerApplication(settings_of(deployment.clear()), verifier=LetEveryoneIn())}
    ids = {}
    for name, facade in apps.items():
        made = [uuid.UUID(facade.create_customer("Ada", f"read.{uuid.uuid4().hex}@example.com",
                                                 CONTEXT).customer_id) for _ in range(customers)]
        facade.reproject(set(made))
        ids[name] = [str(customer_id) for customer_id in made]
    rates: dict[str, list[float]] = {"sealed": [], "clear": []}
    try:
        with Client(app) as client:
            for round_ in range(rounds):
                for name in (("clear", "sealed") if round_ % 2 == 0 else ("sealed", "clear")):
                    application_module.serve(apps[name])
                    began = time.perf_counter()
                    for n in range(requests):
                        response = client.http.get(f"/customer/{ids[name][n % customers]}",
                                                   headers={"Authorization": "Bearer bench"})
                        assert response.status_code == 200 and response.json_body["name"] == "Ada", response.body
                        assert response.headers["X-Read-Source"] == "read-model"
                    rates[name].append(requests / (time.perf_counter() - began))
    finally:
        application_module.serve(None)
        for facade in apps.values():
            facade.close()
    return {name: statistics.median(values) for name, values in rates.items()}


def _kms_calls_per_1000_commands(deployment: Deployment, commands: int = 1000) -> float:
    become_container(deployment.env)
    from chalicelib import application

    facade = application.current()
    facade.create_customer("Warm", f"warm.{uuid.uuid4().hex}@example.com", CONTEXT)  # its key-encryption key made
    personal = facade.parts.personal_data()
    assert personal is not None
    before = personal.keys.kms_calls
    for _ in range(commands // 2):
        created = facade.create_customer("Ada", f"{uuid.uuid4().hex}@example.com", CONTEXT)
        facade.change_email(uuid.UUID(created.customer_id), f"{uuid.uuid4().hex}.2@example.com", CONTEXT)
    calls = personal.keys.kms_calls - before
    facade.close()
    return calls * 1000 / commands


def run(deployment: Deployment, rounds: int, quick: bool = False) -> dict:
    return {
        "reads_per_second": _read_rates(deployment, max(rounds, 2 if quick else 4), customers=50 if quick else 200,
                                        requests=100 if quick else 1000),
        "kms_calls_per_1000_commands": _kms_calls_per_1000_commands(deployment, 100 if quick else 1000),
    }
