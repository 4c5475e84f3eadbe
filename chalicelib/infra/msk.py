"""The event a Kafka event source mapping (Amazon MSK or self-managed Kafka)
hands to a Lambda function, read into plain records."""

from __future__ import annotations

import base64
from collections.abc import Iterator
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


@dataclass(frozen=True)
class RawRecord:
    """A record as delivered; its parts are decoded only when asked for."""

    raw: dict

    @property
    def topic(self) -> str:
        return self.raw["topic"]

    @property
    def partition(self) -> int:
        return int(self.raw["partition"])

    @property
    def offset(self) -> int:
        return int(self.raw["offset"])

    @property
    def value(self) -> bytes | None:
        return _b64(self.raw.get("value"))

    @property
    def key(self) -> bytes | None:
        return _b64(self.raw.get("key"))

    @property
    def headers(self) -> dict[str, bytes]:
        return {k: bytes(v) for header in self.raw.get("headers") or [] for k, v in header.items()}


class NotAKafkaEvent(ValueError):
    pass


def records(event: dict) -> Iterator[RawRecord]:
    """The records in delivery order (partition by partition, by offset)."""
    if not isinstance(event, dict) or not isinstance(event.get("records"), dict):
        raise NotAKafkaEvent("not a Kafka event source mapping event: no 'records' object")
    for batch in event["records"].values():
        for raw in batch:
            yield RawRecord(raw)


def _b64(value: str | None) -> bytes | None:
    return base64.b64decode(value) if value is not None else None


def event_from(batch: list[KafkaRecord], source: str = "SelfManagedKafka",
               bootstrap_servers: str = "") -> dict:
    """The inverse: the event a mapping would deliver for these records (used
    by the local event source and the tests)."""
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
