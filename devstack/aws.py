"""The AWS parts of the service, emulated on loopback by moto in server mode,
and what the template creates on AWS made there: the database secret and the
projection's dead-letter queue. The functions reach it through the standard
AWS_ENDPOINT_URL, as they reach AWS when deployed."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

SECRET_NAME = "customer-service/database"
DLQ_NAME = "customer-service-projection-dlq"
# moto takes any credentials; these keep a developer's real ones out of it.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}


class EmulatedAws:
    def __init__(self, port: int, region: str) -> None:
        self.port = port
        self.region = region
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": self.region, **CREDENTIALS}

    def start(self, timeout: float = 30) -> None:
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


def provision(endpoint: str, region: str, database: dict[str, str | int]) -> dict[str, str]:
    """Make (or bring up to date) the secret and the queue; the settings that
    name them. `database` is the secret's value, in RDS's shape."""
    secrets = client("secretsmanager", endpoint, region)
    try:
        arn = secrets.create_secret(Name=SECRET_NAME, SecretString=json.dumps(database))["ARN"]
    except secrets.exceptions.ResourceExistsException:
        arn = secrets.put_secret_value(SecretId=SECRET_NAME, SecretString=json.dumps(database))["ARN"]
    # As the template's queue: kept 14 days, the longest SQS keeps a message.
    queue = client("sqs", endpoint, region).create_queue(
        QueueName=DLQ_NAME, Attributes={"MessageRetentionPeriod": str(14 * 24 * 3600)})["QueueUrl"]
    return {"DATABASE_SECRET_ARN": arn, "PROJECTION_DLQ_URL": queue}
