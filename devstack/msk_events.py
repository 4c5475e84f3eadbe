"""Events in the shape a Kafka event source mapping delivers, built from
records: for the local mapping, the tests and the benchmarks (not deployed)."""

from __future__ import annotations

import base64
from dataclasses import dataclass


@dataclass(frozen=True)
class KafkaRecord:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


def event_from(batch: list[KafkaRecord], source: str = "SelfManagedKafka",
               bootstrap_servers: str = "") -> dict:
    """The event a mapping would deliver for these records."""
    grouped: dict[str, list[dict]] = {}
    for r in batch:
        grouped.setdefault(f"{r.topic}-{r.partition}", []).append({
            "topic": r.topic,
            "partition": r.partition,
            "offset": r.offset,
            "timestamp": r.timestamp,
            "timestampType": "CREATE_TIME",
            "key": base64.b64encode(r.key).decode() if r.key is not None else None,
            "value": base64.b64encode(r.value).decode() if r.value is not None else None,
            "headers": [{k: list(v)} for k, v in r.headers.items()],
        })
    event = {"eventSource": source, "bootstrapServers": bootstrap_servers, "records": grouped}
    if source == "aws:kafka":
        event["eventSourceArn"] = "arn:aws:kafka:local:000000000000:cluster/local/0"
    return event
