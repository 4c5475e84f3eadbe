"""Kafka event source mapping events built from stored events, as the relay
would have published them."""

from __future__ import annotations

from chalicelib.eventstore import cloudevents
from chalicelib.eventstore.events import RecordedEvent
from chalicelib.readmodel.projection import COLUMNS, CustomerRow, ProjectedEvent, customer_row, fold
from devstack.kafka_source_events import KafkaRecord, event_from
from tests.support.builders import rows, stored_events

__all__ = ["delivered_batch", "read_model", "read_model_from_store", "stored_events"]


def delivered_batch(events: list[RecordedEvent], topic: str = "customer-events", extra: list[KafkaRecord] = ()) -> dict:
    records = [
        KafkaRecord(topic, hash(e.stream_id) % 3, e.global_position, 0, str(e.stream_id).encode(),
                    cloudevents.encode(e, "/customer-service"), {"event-type": e.event_type.encode()})
        for e in events
    ]
    return event_from(records + list(extra), source="aws:kafka")


def read_model(db: str) -> list[CustomerRow]:
    return rows(db, customer_row, f"SELECT {COLUMNS} FROM customers_view ORDER BY id")


def read_model_from_store(db: str) -> list[CustomerRow]:
    """The read model as it must be: every stream of the store folded."""
    by_stream = {}
    for event in stored_events(db):
        by_stream.setdefault(event.stream_id, []).append(ProjectedEvent.from_recorded(event))
    return sorted((fold(events) for events in by_stream.values()), key=lambda row: row.id)
