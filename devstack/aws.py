"""The AWS parts of the service, emulated on loopback by moto in server mode,
and what the template creates on AWS made there: the secrets, the KMS key,
the projection's dead-letter queue and the erasure log's bucket. The functions reach it through the standard
AWS_ENDPOINT_URL, as they reach AWS when deployed."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

SECRET_NAME = "customer-service/database"
EMAIL_HASH_SECRET_NAME = "customer-service/email-hash"
MESSAGE_SIGNING_SECRET_NAME = "customer-service/message-signing"
KMS_ALIAS = "alias/customer-service"
DLQ_NAME = "customer-service-projection-dlq"
ERASURE_LOG_BUCKET = "customer-service-erasure-log"
# moto takes any credentials; these keep a developer's real ones out of it.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}


class EmulatedAws:
    def __init__(self, port: int, region: str, state: Path) -> None:
        self.port = port
        self.region = region
        self.state = state  # where its KMS keys' seed is kept between runs
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": self.region, **CREDENTIALS}

    def start(self, timeout: float = 30) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devstack.moto_server", "-H", "127.0.0.1", "-p", str(self.port)],
            cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "DEVSTACK_KMS_SEED_FILE": str(self.state / "kms-seed")})
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto_server exited with code {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError("the emulated AWS endpoint did not start in time") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def client(service: str, endpoint: str, region: str):
    import boto3

    return boto3.client(service, endpoint_url=endpoint, region_name=region,
                        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])


def provision(endpoint: str, region: str, database: dict[str, str | int], keys: dict[str, str]) -> dict[str, str]:
    """Make (or bring up to date) the secrets, the KMS key and the queue; the
    settings that name them. `database` is the database secret's value, in
    RDS's shape; `keys` the other secrets' values by name."""
    secrets = client("secretsmanager", endpoint, region)
    arn = _secret(secrets, SECRET_NAME, json.dumps(database))
    for name, value in keys.items():
        _secret(secrets, name, value)
    kms = client("kms", endpoint, region)
    if not any(alias["AliasName"] == KMS_ALIAS for alias in kms.list_aliases()["Aliases"]):
        key = kms.create_key(Description="customer-service personal data")["KeyMetadata"]["KeyId"]
        kms.create_alias(AliasName=KMS_ALIAS, TargetKeyId=key)
    # As the template's queue: kept 14 days, the longest SQS keeps a message.
    queue = client("sqs", endpoint, region).create_queue(
        QueueName=DLQ_NAME, Attributes={"MessageRetentionPeriod": str(14 * 24 * 3600)})["QueueUrl"]
    s3 = client("s3", endpoint, region)
    try:
        s3.create_bucket(Bucket=ERASURE_LOG_BUCKET, CreateBucketConfiguration={"LocationConstraint": region})
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    s3.put_bucket_versioning(Bucket=ERASURE_LOG_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return {"DATABASE_SECRET_ARN": arn, "PROJECTION_DLQ_URL": queue, "ERASURE_LOG_BUCKET": ERASURE_LOG_BUCKET}


def new_hmac_key_secret() -> str:
    """The value of a new key secret (email hash, message signing), as the
    template generates one."""
    return json.dumps({"hmacKey": base64.b64encode(os.urandom(32)).decode()})


def key_secrets(state: Path) -> dict[str, str]:
    """The email hash and message signing keys by secret name, the same on
    every run: reservations made by an earlier run must still be found."""
    keys = {}
    for name in (EMAIL_HASH_SECRET_NAME, MESSAGE_SIGNING_SECRET_NAME):
        path = state / f"{name.rsplit('/', 1)[1]}.json"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(new_hmac_key_secret())
            path.chmod(0o600)
        keys[name] = path.read_text()
    return keys


def _secret(secrets, name: str, value: str) -> str:
    try:
        return secrets.create_secret(Name=name, SecretString=value)["ARN"]
    except secrets.exceptions.ResourceExistsException:
        return secrets.put_secret_value(SecretId=name, SecretString=value)["ARN"]
