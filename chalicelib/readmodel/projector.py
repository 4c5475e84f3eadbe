"""The projection function's work: a Kafka batch in, read tables updated."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg_pool import ConnectionPool

from chalicelib.eventstore.store import EventStore
from chalicelib.infra import msk
from chalicelib.infra.logs import log
from chalicelib.readmodel import customers


@dataclass
class BatchResult:
    records: int
    poison: int
    rows_written: int
    duplicates: int
    gaps_filled: int
    unprojectable: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def handle_kafka_event(event: dict, pool: ConnectionPool, store: EventStore) -> BatchResult:
    changes, records, poison = [], 0, 0
    for record in msk.records(event):
        records += 1
        try:
            changes.append(customers.change_from_cloudevent(record.value or b""))
        except customers.NotACustomerEvent as error:
            # Retrying cannot make it readable: log where it is, go on.
            poison += 1
            log("projection_poison_record", level="error", topic=record.topic, partition=record.partition,
                offset=record.offset, error=str(error))

    def load_after(customer_id, version):
        return [customers.Change.from_recorded(r) for r in store.load(customer_id, version)]

    with pool.connection() as conn:
        result = customers.project(conn, changes, load_after)
    return BatchResult(records, poison, result.rows_written, result.duplicates, result.gaps_filled,
                       result.unprojectable)
