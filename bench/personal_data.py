"""What encrypting personal data costs, in the same run: creations through
the handler path with and without encryption (1 writer, alternating
rounds), loading a 1,000-event customer with and without, and the KMS calls
a warm container makes per 1,000 commands. KMS is moto, in each writer's
process: one GenerateDataKey per container is all the hot path asks of it."""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import Callable

from bench.write_side import CONTEXT, ours, rate
from chalicelib.domain.commands import ChangeEmail, CreateCustomer
from chalicelib.domain.customer import Customer, registry
from chalicelib.eventstore.postgres import PostgresEventStore
from chalicelib.infra import db
from chalicelib.personal.email_hash import EmailHash
from chalicelib.personal.keyring import KeyRing
from chalicelib.personal.sealing import Declared, PersonalData, SealedEventStore
from chalicelib.usecases.commands import CustomerCommands


def _kms():
    """moto's KMS in this process, and a key in it."""
    from moto import mock_aws

    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="eu-west-1")
    os.environ.pop("AWS_ENDPOINT_URL", None)
    mock_aws().start()
    import boto3

    kms = boto3.client("kms")
    return kms, kms.create_key()["KeyMetadata"]["KeyId"]


def _encrypted_store(url: str) -> tuple[SealedEventStore, KeyRing]:
    import psycopg

    kms, key_id = _kms()
    pool = db.Database(url).connections(1)
    keys = KeyRing(lambda: psycopg.connect(url, autocommit=True), lambda: kms, key_id)
    email_hash = EmailHash(lambda: b"bench-email-hash-key-of-32-bytes!")
    personal = PersonalData(keys, email_hash, Declared.of(registry, Customer))
    # As the application builds it for commands.
    return SealedEventStore(PostgresEventStore(pool), personal, pool.connection, for_state=True), keys


def ours_encrypted(url: str, writers: int) -> Callable[[int], None]:
    store, _ = _encrypted_store(url)
    service = CustomerCommands(store)

    def work(n: int) -> None:
        customer_id = uuid.uuid4()
        service.create(CreateCustomer(name="Ada", email=f"{customer_id.hex}@example.com", customer_id=customer_id),
                       CONTEXT)
    return work


def _customer_of(service: CustomerCommands, events: int) -> uuid.UUID:
    customer_id = uuid.uuid4()
    service.create(CreateCustomer(name="Ada", email=f"{customer_id.hex}@example.com", customer_id=customer_id),
                   CONTEXT)
    for n in range(events - 1):
        service.change_email(ChangeEmail(customer_id, f"{customer_id.hex}.{n}@example.com"), CONTEXT)
    return customer_id


def _load_times(services: dict[str, CustomerCommands], events: int, repeats: int = 40) -> dict[str, float]:
    """Median time to load a customer of `events` events through each
    service, the loads taking turns: this machine's speed drifts by half
    within seconds, and one service measured after the other would carry it."""
    customers = {name: _customer_of(service, events) for name, service in services.items()}
    timings: dict[str, list[float]] = {name: [] for name in services}
    for _ in range(repeats):
        for name, service in services.items():
            began = time.perf_counter()
            service.get(customers[name])
            timings[name].append(time.perf_counter() - began)
    return {name: statistics.median(times) * 1000 for name, times in timings.items()}


def _read_rates(url: str, key_id: str, rounds: int, customers: int = 200, requests: int = 1000) -> dict:
    """GET /customer/{id} from the read model, in process, rows sealed (opened
    on the way out) against rows in clear, alternating rounds."""
    import dataclasses

    import boto3
    from chalice.test import Client

    from app import app
    from bench.http_api import LetEveryoneIn
    from chalicelib import application as application_module
    from chalicelib.application import CustomerApplication
    from chalicelib.infra.settings import Settings
    from devstack.aws import new_hmac_key_secret

    os.environ["DATABASE_URL"] = url
    secret = boto3.client("secretsmanager").create_secret(Name=f"bench-email-hash-{uuid.uuid4().hex[:8]}",
                                                          SecretString=new_hmac_key_secret())["ARN"]
    settings = Settings.from_env()
    apps = {"clear": CustomerApplication(settings, verifier=LetEveryoneIn()),
            "encrypted": CustomerApplication(dataclasses.replace(settings, kms_key_id=key_id,
                                                                 email_hash_secret_arn=secret),
                                             verifier=LetEveryoneIn())}
    ids = {}
    for name, application in apps.items():
        made = [uuid.UUID(str(application.create_customer("Ada", f"read.{uuid.uuid4().hex}@example.com",
                                                          CONTEXT).customer["id"])) for _ in range(customers)]
        application.reproject(set(made))
        ids[name] = [str(customer_id) for customer_id in made]
    rates: dict[str, list[float]] = {"clear": [], "encrypted": []}
    previous = application_module.current() if application_module._current else None
    try:
        with Client(app) as client:
            for round_ in range(rounds):
                for name in (("clear", "encrypted") if round_ % 2 == 0 else ("encrypted", "clear")):
                    application_module.serve(apps[name])
                    began = time.perf_counter()
                    for n in range(requests):
                        response = client.http.get(f"/customer/{ids[name][n % customers]}",
                                                   headers={"Authorization": "Bearer bench"})
                        assert response.status_code == 200 and response.json_body["name"] == "Ada", response.body
                    rates[name].append(requests / (time.perf_counter() - began))
    finally:
        application_module.serve(previous)
        for application in apps.values():
            application.close()
    return {name: statistics.median(values) for name, values in rates.items()}


def run(url: str, seconds: float, rounds: int) -> dict:
    plain, sealed = [], []
    for _ in range(rounds):
        plain.append(rate(ours, url, 1, seconds))
        sealed.append(rate(ours_encrypted, url, 1, seconds))
    store, keys = _encrypted_store(url)
    encrypted = CustomerCommands(store)
    clear = CustomerCommands(PostgresEventStore(db.Database(url).connections(1)))
    loads = _load_times({"clear": clear, "encrypted": encrypted}, 1000)
    # A warm container: its key-encryption key made already (by the load above).
    before = keys.kms_calls
    for _ in range(500):
        customer_id = uuid.uuid4()
        encrypted.create(CreateCustomer(name="Ada", email=f"{customer_id.hex}@example.com",
                                        customer_id=customer_id), CONTEXT)
        encrypted.change_email(ChangeEmail(customer_id, f"{customer_id.hex}.2@example.com"), CONTEXT)
    reads = _read_rates(url, keys.kms_key_id, max(rounds, 4))
    return {
        "creations_per_second": {"clear": statistics.median(plain), "encrypted": statistics.median(sealed)},
        "reads_per_second": reads,
        "load_1000_events_ms": loads,
        "kms_calls_per_1000_commands": keys.kms_calls - before,
    }
