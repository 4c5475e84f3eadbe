"""Command handlers against the in-memory store (a fake, not a mock)."""

import uuid

import pytest

from chalicelib.domain.commands import ChangeEmail, CreateCustomer, DeleteCustomer
from chalicelib.domain.errors import CustomerNotFound, InvalidValue, StaleVersion
from chalicelib.eventstore.events import CommandContext
from chalicelib.eventstore.store import InMemoryEventStore, RetriesExhausted
from tests.support.fakes import RacingStore, commands_on

CTX = CommandContext(correlation_id="corr-1", causation_id="req-1")


def create(commands, email="ada@example.com"):
    return commands.create(CreateCustomer(name="Ada", email=email, customer_id=uuid.uuid4()), CTX)


def with_a_customer(max_retries: int = 5, races: int = 0):
    """A store with a customer, then another writer getting in first on it
    `races` times; the handlers on it."""
    store = RacingStore(races=0)
    commands = commands_on(store, max_retries=max_retries)
    customer = create(commands)
    store.races = races
    return store, commands, customer


def test_create_then_get():
    commands = commands_on(InMemoryEventStore())
    customer = create(commands)
    loaded = commands.get(customer.id)
    assert loaded.to_dict() == {"id": str(customer.id), "name": "Ada", "email": "ada@example.com", "version": 1}


def test_events_carry_correlation_and_causation():
    store = InMemoryEventStore()
    customer = create(commands_on(store))
    metadata = store.load(customer.id)[0].metadata
    assert metadata["correlation_id"] == "corr-1" and metadata["causation_id"] == "req-1"
    assert uuid.UUID(metadata["event_id"]) and metadata["occurred_at"].endswith("+00:00")


def test_lost_race_is_retried_on_the_new_state():
    store, commands, customer = with_a_customer(max_retries=3, races=2)
    changed = commands.change_email(ChangeEmail(customer_id=customer.id, email="mine@example.com"), CTX)
    versions = [(e.version, e.data.get("email")) for e in store.load(customer.id)]
    assert versions == [(1, "ada@example.com"), (2, "rival1@example.com"),
                        (3, "rival0@example.com"), (4, "mine@example.com")]
    assert changed.version == 4


def test_retries_are_bounded():
    store, commands, customer = with_a_customer(max_retries=2, races=3)
    with pytest.raises(RetriesExhausted):
        commands.change_email(ChangeEmail(customer_id=customer.id, email="mine@example.com"), CTX)
    assert "mine@example.com" not in [e.data.get("email") for e in store.load(customer.id)]


def test_if_match_on_an_old_version_is_stale():
    store, commands, customer = with_a_customer()
    commands.change_email(ChangeEmail(customer_id=customer.id, email="b@example.com", expected_version=1), CTX)
    with pytest.raises(StaleVersion) as error:
        commands.delete(DeleteCustomer(customer_id=customer.id, expected_version=1), CTX)
    assert (error.value.expected, error.value.current) == (1, 2)
    assert len(store.load(customer.id)) == 2


def test_a_race_turns_an_if_match_command_into_stale_not_a_blind_retry():
    store, commands, customer = with_a_customer(max_retries=5, races=1)
    with pytest.raises(StaleVersion):
        commands.change_email(ChangeEmail(customer_id=customer.id, email="c@example.com", expected_version=1), CTX)


def test_delete_then_everything_is_not_found():
    store, commands, customer = with_a_customer()
    deleted = commands.delete(DeleteCustomer(customer_id=customer.id), CTX)
    assert deleted.version == 2
    for call in (
        lambda: commands.get(customer.id),
        lambda: commands.delete(DeleteCustomer(customer_id=customer.id), CTX),
        lambda: commands.change_email(ChangeEmail(customer_id=customer.id, email="x@example.com"), CTX),
    ):
        with pytest.raises(CustomerNotFound):
            call()
    assert len(store.load(customer.id)) == 2


def test_invalid_input_stores_nothing():
    store = InMemoryEventStore()
    commands = commands_on(store)
    with pytest.raises(InvalidValue):
        create(commands, email="not-an-email")
    assert store.events == [] and store.outbox == []


def test_creating_a_customer_with_an_id_in_use_says_it_exists_and_stores_nothing():
    from chalicelib.domain.errors import CustomerAlreadyExists

    store = InMemoryEventStore()
    commands = commands_on(store)
    customer_id = uuid.uuid4()
    commands.create(CreateCustomer(name="Ada", email="ada@example.com", customer_id=customer_id), CTX)
    with pytest.raises(CustomerAlreadyExists, match=f"customer {customer_id} already exists"):
        commands.create(CreateCustomer(name="Eve", email="eve@example.com", customer_id=customer_id), CTX)
    assert len(store.events) == 1
