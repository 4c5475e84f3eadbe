"""The event a Kafka event source mapping (Amazon MSK or self-managed Kafka)
hands to a Lambda function, read into records. (The local mapping builds
such events in devstack/kafka_source_events.py.)"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class DeliveredRecord:
    """A record as the mapping delivers it (base64 key and value); each part is
    decoded when it is asked for, so a record that is skipped costs nothing."""

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

    @cached_property
    def value(self) -> bytes | None:
        return _b64(self.raw.get("value"))

    @property
    def key(self) -> bytes | None:
        return _b64(self.raw.get("key"))

    @property
    def headers(self) -> dict[str, bytes]:
        return {k: bytes(v) for header in self.raw.get("headers") or [] for k, v in header.items()}

    def header(self, name: str) -> bytes | None:
        """The first header of that name (the mapping gives each as a list of byte values)."""
        for header in self.raw.get("headers") or ():
            if name in header:
                return bytes(header[name])
        return None


class NotAKafkaEvent(ValueError):
    pass


def records(event: dict) -> Iterator[DeliveredRecord]:
    """The records in delivery order (partition by partition, by offset)."""
    if not isinstance(event, dict) or not isinstance(event.get("records"), dict):
        raise NotAKafkaEvent("not a Kafka event source mapping event: no 'records' object")
    for batch in event["records"].values():
        for raw in batch:
            yield DeliveredRecord(raw)


def _b64(value: str | None) -> bytes | None:
    return base64.b64decode(value) if value is not None else None
