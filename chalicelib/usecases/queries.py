"""Queries: a customer as the read model has it, or built from the event
store when the caller needs more than the read model has (read-your-writes,
strong consistency, a customer it does not know yet); the time machine; the
history; lookup by email."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from chalicelib.domain.errors import CustomerNotFound
from chalicelib.readmodel import queries, sealed

if TYPE_CHECKING:
    from chalicelib.bootstrap import Bootstrap
    from chalicelib.eventstore.events import RecordedEvent
    from chalicelib.readmodel.rows import CustomerRow


@dataclass(frozen=True)
class CustomerRead:
    row: CustomerRow
    source: str  # "read-model" or "event-store"


@dataclass(frozen=True)
class HistoryPage:
    events: list[RecordedEvent]  # in today's shape of each event type
    more: bool


def customer(parts: Bootstrap, customer_id: uuid.UUID, *, min_version: int | None = None,
             strong: bool = False) -> CustomerRead:
    """From the read model; from the event store when the caller asks for a
    version the read model has not reached yet, or for strong consistency,
    or the read model does not know the customer yet."""
    if not strong:
        with parts.connections().connection() as conn:
            row = queries.from_read_model(conn, customer_id)
        if row is not None and row.deleted:
            raise CustomerNotFound(f"customer {customer_id} not found")
        if row is not None and row.version >= (min_version or 0):
            return CustomerRead(_opened(parts, row), "read-model")
    row = queries.from_event_store(parts.store(), customer_id)
    if row is None or row.deleted:
        raise CustomerNotFound(f"customer {customer_id} not found")
    return CustomerRead(row, "event-store")


def customer_at(parts: Bootstrap, customer_id: uuid.UUID, *, version: int | None = None,
                as_of: datetime | None = None) -> CustomerRow:
    """The time machine: the state at a version or a moment, deleted
    customers included (their history stays readable)."""
    row = queries.state_at(parts.store(), customer_id, version=version, as_of=as_of)
    if row is None:
        raise CustomerNotFound(f"customer {customer_id} did not exist then")
    if version is not None and row.version < version:
        raise CustomerNotFound(f"customer {customer_id} has no version {version}; its latest is {row.version}")
    return row


def history(parts: Bootstrap, customer_id: uuid.UUID, *, after: int = 0, limit: int = 50) -> HistoryPage:
    from chalicelib.domain.customer import registry

    events = parts.store().load(customer_id, after_version=after, limit=limit + 1)
    if not events and after == 0:
        raise CustomerNotFound(f"customer {customer_id} not found")
    return HistoryPage([registry.upcast_recorded(e) for e in events[:limit]], more=len(events) > limit)


def find_by_email(parts: Bootstrap, email: str) -> list[CustomerRow]:
    email_hash = parts.email_hash()
    with parts.connections().connection() as conn:
        rows = queries.find_by_email(conn, email, email_hash(email) if email_hash else None)
    return [_opened(parts, row) for row in rows]


def _opened(parts: Bootstrap, row: CustomerRow) -> CustomerRow:
    connections = parts.connections()
    return sealed.opened(parts.personal_data(), row, connections.connection)
