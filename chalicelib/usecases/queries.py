"""Queries: a customer as the read model has it, or built from the event
store when the caller needs more than the read model has (read-your-writes,
strong consistency, a customer it does not know yet); the time machine; the
history; lookup by email."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from chalicelib.domain.customer import EMAIL_SCOPE, registry
from chalicelib.domain.errors import CustomerNotFound
from chalicelib.eventstore import postgres
from chalicelib.eventstore.events import RecordedEvent, Reservation
from chalicelib.readmodel import queries
from chalicelib.readmodel.rows import CustomerRow
from chalicelib.usecases.unit_of_work import PostgresUnitOfWork, PostgresUnitsOfWork


@dataclass(frozen=True)
class CustomerRead:
    row: CustomerRow
    source: str  # "read-model" or "event-store"


@dataclass(frozen=True)
class HistoryPage:
    events: list[RecordedEvent]  # in today's shape of each event type
    more: bool


def customer(customer_id: uuid.UUID, *, min_version: int | None = None, strong: bool = False,
             units: PostgresUnitsOfWork) -> CustomerRead:
    """From the read model; from the event store when the caller asks for a
    version the read model has not reached yet, or for strong consistency,
    or the read model does not know the customer yet."""
    with units.reading() as unit:
        if not strong:
            row = queries.from_read_model(unit.conn, customer_id)
            if row is not None and row.deleted:
                raise CustomerNotFound(f"customer {customer_id} not found")
            if row is not None and row.version >= (min_version or 0):
                return CustomerRead(unit.open_row(row), "read-model")
        return CustomerRead(_from_store(unit, customer_id), "event-store")


def _from_store(unit: PostgresUnitOfWork, customer_id: uuid.UUID) -> CustomerRow:
    row = queries.from_event_store(unit.events, customer_id)
    if row is None or row.deleted:
        raise CustomerNotFound(f"customer {customer_id} not found")
    return row


def customer_at(customer_id: uuid.UUID, *, version: int | None = None, as_of: datetime | None = None,
                units: PostgresUnitsOfWork) -> CustomerRow:
    """The time machine: the state at a version or a moment, deleted
    customers included (their history stays readable)."""
    with units.reading() as unit:
        row = queries.state_at(unit.events, customer_id, version=version, as_of=as_of)
    if row is None:
        raise CustomerNotFound(f"customer {customer_id} did not exist then")
    if version is not None and row.version < version:
        raise CustomerNotFound(f"customer {customer_id} has no version {version}; its latest is {row.version}")
    return row


def history(customer_id: uuid.UUID, *, after: int = 0, limit: int = 50, units: PostgresUnitsOfWork) -> HistoryPage:
    with units.reading() as unit:
        events = unit.events.load(customer_id, after_version=after, limit=limit + 1)
    if not events and after == 0:
        raise CustomerNotFound(f"customer {customer_id} not found")
    return HistoryPage([registry.upcast_recorded(e) for e in events[:limit]], more=len(events) > limit)


def find_by_email(email: str, *, strong: bool = False, units: PostgresUnitsOfWork) -> list[CustomerRow]:
    """The live customers with this email (one at most: an email is unique
    among them). `strong`: by the email's reservation, which commits with
    the write that takes or gives it up, and the customer as the event store
    has it; else from the read model, which may be a moment behind."""
    personal = units.personal
    email_hash = personal.email_hash(email) if personal is not None else None
    with units.reading() as unit:
        if not strong:
            return unit.open_rows(queries.find_by_email(unit.conn, email, email_hash))
        owner = postgres.reservation_owner(unit.conn, Reservation(EMAIL_SCOPE, email_hash or email))
        row = queries.from_event_store(unit.events, owner) if owner is not None else None
        return [row] if row is not None and not row.deleted else []
