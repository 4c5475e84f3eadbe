"""Kafka event source mapping events built from stored events, as the relay
would have published them."""

from __future__ import annotations

import psycopg

from chalicelib.eventstore import cloudevents
from chalicelib.eventstore.events import RecordedEvent
from devstack.msk_events import KafkaRecord, event_from


def stored_events(db: str) -> list[RecordedEvent]:
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT global_position, stream_id, stream_type, version, event_type, schema_version, data,"
            " metadata, recorded_at FROM events ORDER BY global_position").fetchall()
    return [RecordedEvent(*row) for row in rows]


def msk_event(events: list[RecordedEvent], topic: str = "customer-events", extra: list[KafkaRecord] = ()) -> dict:
    records = [
        KafkaRecord(topic, hash(e.stream_id) % 3, e.global_position, 0, str(e.stream_id).encode(),
                    cloudevents.encode(e, "/customer-service"), {"event-type": e.event_type.encode()})
        for e in events
    ]
    return event_from(records + list(extra), source="aws:kafka")


def read_model(db: str) -> list[tuple]:
    with psycopg.connect(db) as conn:
        return conn.execute(
            "SELECT id, name, email, version, deleted, created_at, updated_at FROM customers_view ORDER BY id"
        ).fetchall()
