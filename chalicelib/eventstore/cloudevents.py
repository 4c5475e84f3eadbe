"""Recorded events as CloudEvents 1.0 in structured JSON mode: the message
format other services read from Kafka (documented in the README)."""

from __future__ import annotations

import json

from .events import RecordedEvent

CONTENT_TYPE = "application/cloudevents+json; charset=UTF-8"


def to_cloudevent(event: RecordedEvent, source: str) -> dict:
    metadata = event.metadata
    actor = metadata.get("actor") or {}
    message = {
        "specversion": "1.0",
        "id": metadata["event_id"],
        "source": source,
        "type": event.event_type,
        "subject": str(event.stream_id),
        "time": metadata["occurred_at"],
        "datacontenttype": "application/json",
        "data": event.data,
        # Extensions (lower-case letters and digits only, as the spec asks).
        "schemaversion": event.schema_version,
        "streamtype": event.stream_type,
        "streamversion": event.version,
        "position": event.global_position,
        "correlationid": metadata.get("correlation_id"),
        "causationid": metadata.get("causation_id"),
    }
    # Who caused it, for consumers' audit trails; absent on events recorded
    # before callers were known (CloudEvents has no null attributes).
    if actor.get("subject"):
        message["actor"] = actor["subject"]
    if actor.get("client_id"):
        message["actorclientid"] = actor["client_id"]
    return message


def encode(event: RecordedEvent, source: str) -> bytes:
    return json.dumps(to_cloudevent(event, source), separators=(",", ":")).encode()
