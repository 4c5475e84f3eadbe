"""A Kafka-protocol broker for a benchmark run: KAFKA_BOOTSTRAP_SERVERS when
set, else an embedded Tansu broker."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def bench_broker() -> Iterator[str]:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    from devstack.kafka import EmbeddedKafka
    from devstack.postgres import free_port

    broker = EmbeddedKafka(free_port())
    try:
        yield broker.start()
    finally:
        broker.stop()
