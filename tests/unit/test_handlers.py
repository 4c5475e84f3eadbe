"""Command handlers against the in-memory store (a fake, not a mock)."""

import uuid

import pytest

from chalicelib.domain.commands import ChangeEmail, CreateCustomer, DeleteCustomer
from chalicelib.domain.customer import CustomerNotFound, InvalidValue
from chalicelib.eventstore.events import CommandContext
from chalicelib.eventstore.store import InMemoryEventStore, RetriesExhausted
from chalicelib.handlers import CustomerService, StaleVersion

CTX = CommandContext(correlation_id="corr-1", causation_id="req-1")


class RacingStore(InMemoryEventStore):
    """Another writer appends to the stream just before each of our appends."""

    def __init__(self, races: int) -> None:
        super().__init__()
        self.races = races

    def append(self, stream_id, stream_type, expected_version, events, snapshot=None, reserve=(), release=()):
        if self.races > 0:
            self.races -= 1
            theirs = [e.__class__(e.event_type, e.schema_version, {**e.data, "email": f"rival{self.races}@example.com"},
                                  e.metadata) for e in events]
            super().append(stream_id, stream_type, expected_version, theirs)
        return super().append(stream_id, stream_type, expected_version, events, snapshot, reserve, release)


def create(service, email="ada@example.com"):
    return service.create(CreateCustomer(name="Ada", email=email, customer_id=uuid.uuid4()), CTX)


def test_create_then_get():
    service = CustomerService(InMemoryEventStore())
    customer = create(service)
    loaded = service.get(customer.id)
    assert loaded.to_dict() == {"id": str(customer.id), "name": "Ada", "email": "ada@example.com", "version": 1}


def test_events_carry_correlation_and_causation():
    store = InMemoryEventStore()
    customer = create(CustomerService(store))
    metadata = store.load(customer.id)[0].metadata
    assert metadata["correlation_id"] == "corr-1" and metadata["causation_id"] == "req-1"
    assert uuid.UUID(metadata["event_id"]) and metadata["occurred_at"].endswith("+00:00")


def test_lost_race_is_retried_on_the_new_state():
    store = RacingStore(races=0)
    service = CustomerService(store, max_retries=3)
    customer = create(service)
    store.races = 2
    changed = service.change_email(ChangeEmail(customer_id=customer.id, email="mine@example.com"), CTX)
    versions = [(e.version, e.data.get("email")) for e in store.load(customer.id)]
    assert versions == [(1, "ada@example.com"), (2, "rival1@example.com"),
                        (3, "rival0@example.com"), (4, "mine@example.com")]
    assert changed.version == 4


def test_retries_are_bounded():
    store = RacingStore(races=0)
    service = CustomerService(store, max_retries=2)
    customer = create(service)
    store.races = 3
    with pytest.raises(RetriesExhausted):
        service.change_email(ChangeEmail(customer_id=customer.id, email="mine@example.com"), CTX)
    assert "mine@example.com" not in [e.data.get("email") for e in store.load(customer.id)]


def test_if_match_on_an_old_version_is_stale():
    store = InMemoryEventStore()
    service = CustomerService(store)
    customer = create(service)
    service.change_email(ChangeEmail(customer_id=customer.id, email="b@example.com", expected_version=1), CTX)
    with pytest.raises(StaleVersion) as error:
        service.delete(DeleteCustomer(customer_id=customer.id, expected_version=1), CTX)
    assert (error.value.expected, error.value.current) == (1, 2)
    assert len(store.load(customer.id)) == 2


def test_a_race_turns_an_if_match_command_into_stale_not_a_blind_retry():
    store = RacingStore(races=0)
    service = CustomerService(store, max_retries=5)
    customer = create(service)
    store.races = 1
    with pytest.raises(StaleVersion):
        service.change_email(ChangeEmail(customer_id=customer.id, email="c@example.com", expected_version=1), CTX)


def test_delete_then_everything_is_not_found():
    store = InMemoryEventStore()
    service = CustomerService(store)
    customer = create(service)
    deleted = service.delete(DeleteCustomer(customer_id=customer.id), CTX)
    assert deleted.version == 2
    for call in (
        lambda: service.get(customer.id),
        lambda: service.delete(DeleteCustomer(customer_id=customer.id), CTX),
        lambda: service.change_email(ChangeEmail(customer_id=customer.id, email="x@example.com"), CTX),
    ):
        with pytest.raises(CustomerNotFound):
            call()
    assert len(store.load(customer.id)) == 2


def test_invalid_input_stores_nothing():
    store = InMemoryEventStore()
    service = CustomerService(store)
    with pytest.raises(InvalidValue):
        create(service, email="not-an-email")
    assert store.events == [] and store.outbox == []
