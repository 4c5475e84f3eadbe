"""boto3 clients, made on first use and kept by warm invocations.

Region, credentials and endpoint come from the standard AWS environment
variables: on Lambda from the function's role, locally from the stack, whose
AWS_ENDPOINT_URL points every client at the emulated AWS endpoint (moto).
boto3 is imported on first use, not at import: it costs about 200 ms of cold
start, which only the functions that talk to AWS pay.
"""

from __future__ import annotations

import threading
from typing import Any


class AwsClients:
    def __init__(self) -> None:
        self._clients: dict[str, Any] = {}
        # boto3's default session is not safe to make clients from in parallel.
        self._lock = threading.Lock()

    def __call__(self, service: str) -> Any:
        client = self._clients.get(service)
        if client is None:
            with self._lock:
                client = self._clients.get(service)
                if client is None:
                    import boto3
                    from botocore.config import Config

                    client = boto3.client(service, config=Config(connect_timeout=3, read_timeout=10,
                                                                  retries={"mode": "standard", "max_attempts": 3}))
                    self._clients[service] = client
        return client
