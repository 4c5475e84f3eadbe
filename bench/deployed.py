"""The service as it is deployed, for the benchmarks to measure: each
function's environment as the template sets it on AWS (the database's
credentials in a secret, personal data sealed under a KMS key, messages
signed with a key from a secret, tokens checked against an issuer's keys),
with AWS emulated by moto in server mode and a development issuer, as `make
run` has them, on the benchmark's database and broker.

A benchmark process becomes a function's container by taking `env` into
its environment and asking `chalicelib.application.current()`, as Lambda's
runtime does; `clear()` and `unsigned()` are the comparisons.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from devstack import aws
from devstack.issuer import DevIssuer
from devstack.postgres import free_port

REGION = "eu-west-1"
# What the template does not set, and a benchmark does not want: a log line
# per batch, an EMF line per invocation.
_QUIET = {"LOG_LEVEL": "warning", "POWERTOOLS_METRICS_DISABLED": "true"}
_PERSONAL_DATA = ("KMS_KEY_ID", "EMAIL_HASH_SECRET_ARN")


@dataclass(frozen=True)
class Deployment:
    env: dict[str, str]
    issuer: DevIssuer
    aws_endpoint: str

    def clear(self) -> dict[str, str]:
        """The same, personal data stored in clear (no KMS key)."""
        return {k: v for k, v in self.env.items() if k not in _PERSONAL_DATA}

    def unsigned(self) -> dict[str, str]:
        """The same, messages neither signed nor checked."""
        return {k: v for k, v in self.env.items() if k != "MESSAGE_SIGNING_SECRET_ARN"}

    def plain(self) -> dict[str, str]:
        """Neither: in clear, unsigned."""
        return {k: v for k, v in self.clear().items() if k != "MESSAGE_SIGNING_SECRET_ARN"}

    def token(self, scopes: str = "customers:read customers:write") -> str:
        return self.issuer.token(subject="bench", scopes=scopes)

    def client(self, service: str) -> Any:
        return aws.client(service, self.aws_endpoint, REGION)


@contextlib.contextmanager
def deployment(database_url: str, bootstrap: str, topic: str = "customer-events") -> Iterator[Deployment]:
    state = Path(tempfile.mkdtemp(prefix="bench-deployed-"))
    emulated = aws.EmulatedAws(free_port(), REGION, state)
    emulated.start()
    issuer = DevIssuer(state / "issuer", free_port())
    issuer.serve()
    try:
        given = conninfo_to_dict(database_url)
        secret: dict[str, str | int] = {"engine": "postgres", "username": str(given.get("user") or "postgres"),
                                        "host": str(given.get("host") or "127.0.0.1"),
                                        "port": int(given.get("port") or 5432),
                                        "dbname": str(given.get("dbname") or "postgres")}
        if given.get("password"):
            secret["password"] = str(given["password"])
        made = aws.provision(emulated.endpoint, REGION, secret, aws.key_secrets(state))
        env = {
            "DATABASE_SECRET_ARN": made["DATABASE_SECRET_ARN"], "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_TOPIC": topic, "PROJECTION_DLQ_URL": made["PROJECTION_DLQ_URL"],
            "ERASURE_LOG_BUCKET": made["ERASURE_LOG_BUCKET"], "KMS_KEY_ID": aws.KMS_ALIAS,
            "EMAIL_HASH_SECRET_ARN": aws.EMAIL_HASH_SECRET_NAME,
            "MESSAGE_SIGNING_SECRET_ARN": aws.MESSAGE_SIGNING_SECRET_NAME,
            **emulated.environment(), **issuer.environment(), **_QUIET,
        }
        yield Deployment(env, issuer, emulated.endpoint)
    finally:
        issuer.stop()
        emulated.stop()


_SETTINGS = ("DATABASE_URL", "DATABASE_SECRET_ARN", "KMS_KEY_ID", "EMAIL_HASH_SECRET_ARN",
             "MESSAGE_SIGNING_SECRET_ARN", "KAFKA_TOPIC", "RELAY_SHARDS")


def _take(env: dict[str, str]) -> None:
    for name in _SETTINGS:
        os.environ.pop(name, None)
    os.environ.update(env)


def become_container(env: dict[str, str], **more: str) -> None:
    """This process, as a function's container with `env`: the settings it
    reads, and no part made yet."""
    from chalicelib import application

    _take({**env, **more})
    previous = application.serve(None)
    if previous is not None:
        previous.close()


def settings_of(env: dict[str, str]) -> Any:
    """The Settings a container with `env` reads (for a second application in one process)."""
    from chalicelib.infra.settings import Settings

    saved = dict(os.environ)
    try:
        _take(env)
        return Settings.from_env()
    finally:
        os.environ.clear()
        os.environ.update(saved)
