"""Credentials kept in AWS Secrets Manager: the database's (the JSON shape
RDS and its rotation functions use: username, password, host, port, dbname)
and the Kafka SASL user's (username, password).

A secret is read on first use and cached for the container's lifetime; it is
read again only when the credentials it gave are refused, which is what
happens after a rotation.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import psycopg

# What the database secret's keys are in a libpq connection string.
_DATABASE_KEYS = {"username": "user", "password": "password", "host": "host", "port": "port", "dbname": "dbname"}


class CredentialsUnavailable(psycopg.OperationalError):
    """The secret could not be read. A psycopg OperationalError, so that it is
    handled like a database that cannot be reached: retried with backoff."""


class Secret:
    def __init__(self, secret_arn: str, client: Callable[[str], Any]) -> None:
        self.secret_arn = secret_arn
        self._client = client
        self._value: dict[str, Any] | None = None
        self.reads = 0  # which reading of the secret `value()` gives
        self._lock = threading.Lock()

    def value(self) -> dict[str, Any]:
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    self._read()
                value = self._value
        if value is None:
            raise CredentialsUnavailable(f"the secret {self.secret_arn} was not read")
        return value

    def refresh(self, refused: int) -> None:
        """Read the secret again because the credentials of reading `refused`
        were refused; once for all the connections that found so at the same
        time."""
        with self._lock:
            if self.reads == refused:
                self._read()

    def _read(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = self._client("secretsmanager").get_secret_value(SecretId=self.secret_arn)
        except (BotoCoreError, ClientError) as error:
            raise CredentialsUnavailable(f"cannot read the secret {self.secret_arn}: {error}") from error
        try:
            value = json.loads(answer["SecretString"])
        except (KeyError, ValueError) as error:
            raise CredentialsUnavailable(f"the secret {self.secret_arn} is not a JSON object") from error
        if not isinstance(value, dict):
            raise CredentialsUnavailable(f"the secret {self.secret_arn} is not a JSON object")
        self._value = value
        self.reads += 1


def database_parameters(secret: Secret) -> dict[str, str]:
    """libpq connection parameters from a database secret. A secret without
    a password is a login the server trusts (a laptop's PostgreSQL on
    loopback), or one that signs an RDS IAM token instead."""
    value = secret.value()
    if not value.get("username"):
        raise CredentialsUnavailable(f"the secret {secret.secret_arn} has no username")
    return {libpq: str(value[key]) for key, libpq in _DATABASE_KEYS.items() if value.get(key) not in (None, "")}


def sasl_user(secret: Secret) -> tuple[str, str]:
    value = secret.value()
    if not value.get("username") or not value.get("password"):
        raise CredentialsUnavailable(f"the secret {secret.secret_arn} has no username and password")
    return str(value["username"]), str(value["password"])
