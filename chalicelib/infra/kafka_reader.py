"""Reading records back from Kafka by their offsets (the dead-letter
replay names a failed batch by offsets, not by records)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any


def keys_at(bootstrap_servers: str, ranges: Sequence[Any], security: dict[str, Any] | None = None,
            timeout: float = 10.0) -> tuple[list[bytes | None], bool]:
    """The keys of the records in these offset ranges (topic, partition,
    first, last), and whether every record was still on the topic."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers.split(","), group_id=None,
                             enable_auto_commit=False, client_id="customer-service-dead-letters",
                             **(security or {}))
    try:
        wanted = {TopicPartition(r.topic, r.partition): r for r in ranges}
        consumer.assign(list(wanted))
        for tp, r in wanted.items():
            consumer.seek(tp, r.first)
        keys, found, deadline = [], 0, time.monotonic() + timeout
        expected = sum(r.last - r.first + 1 for r in ranges)
        pending = set(wanted)
        while pending and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=200).items():
                for record in records:
                    if record.offset <= wanted[tp].last:
                        keys.append(record.key)
                        found += 1
                if consumer.position(tp) > wanted[tp].last:
                    pending.discard(tp)
        return keys, found == expected
    finally:
        consumer.close(autocommit=False)
