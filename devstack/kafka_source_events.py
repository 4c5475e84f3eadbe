"""Events in the shape a Kafka event source mapping delivers, built from
records: for the local mapping, the tests and the benchmarks (not deployed)."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime


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


def _iso(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def failure_record(event: dict, function_arn: str, invocations: int) -> dict:
    """The invocation record a Kafka mapping sends to its on-failure
    destination when a batch failed past the retry limit: it names the
    batch's offsets per partition, not its records."""
    records_info, size, count = {}, 0, 0
    for name, records in event["records"].items():
        count += len(records)
        size += sum(len(r.get("value") or "") for r in records)
        records_info[name] = {
            "firstRecordOffset": str(records[0]["offset"]), "lastRecordOffset": str(records[-1]["offset"]),
            "firstRecordTimestamp": _iso(records[0]["timestamp"]),
            "lastRecordTimestamp": _iso(records[-1]["timestamp"]),
        }
    return {
        "requestContext": {"requestId": str(uuid.uuid4()), "functionArn": function_arn,
                           "condition": "RetryAttemptsExhausted", "approximateInvokeCount": invocations},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "KafkaBatchInfo": {"batchSize": count, "bootstrapServers": event.get("bootstrapServers", ""),
                           "payloadSize": size, "recordsInfo": records_info},
    }
