"""Recorded events as CloudEvents 1.0 in structured JSON mode: the message
format other services read from Kafka, written by the relay and read back
by the projection (documented in docs/messages.md)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

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


class NotOurMessage(ValueError):
    """Not a CloudEvent of the shape this service publishes."""


@dataclass(frozen=True)
class Message:
    """What a consumer reads of one of our messages."""

    stream_id: uuid.UUID
    stream_version: int
    event_type: str
    schema_version: int  # of `data`; messages published before it was said are of the first shape
    data: dict[str, Any]
    time: datetime


def decode(raw: bytes) -> Message:
    import orjson  # the projection's only: JSON is a large share of a batch's work

    try:
        event = orjson.loads(raw)
        if not isinstance(event, dict) or event.get("specversion") != "1.0":
            raise NotOurMessage("not a CloudEvents 1.0 JSON object")
        data = event["data"]
        if not isinstance(data, dict):
            raise NotOurMessage("data is not an object")
        version = event["streamversion"]
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise NotOurMessage("streamversion is not a positive integer")
        schema_version = event.get("schemaversion", 1)
        if not isinstance(event["type"], str) or not isinstance(schema_version, int):
            raise NotOurMessage("type or schemaversion of the wrong kind")
        return Message(uuid.UUID(event["subject"]), version, event["type"], schema_version, data,
                       datetime.fromisoformat(event["time"]))
    except NotOurMessage:
        raise
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as error:
        raise NotOurMessage(f"{type(error).__name__}: {error}") from None
