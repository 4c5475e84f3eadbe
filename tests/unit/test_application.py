"""The application facade built with fakes through its constructor: its
commands on units of work over an in-memory store; no database, no broker
(DATABASE_URL points nowhere, so any use of a connection fails the test)."""

import uuid

import pytest

from chalicelib.application import CustomerApplication
from chalicelib.domain.errors import StaleVersion
from chalicelib.eventstore.events import CommandContext
from chalicelib.eventstore.store import InMemoryEventStore
from chalicelib.idempotency import KeyReused
from chalicelib.infra.settings import Settings
from tests.support.fakes import FakeUnitsOfWork

CONTEXT = CommandContext(correlation_id="unit", causation_id="unit")


@pytest.fixture
def store():
    return InMemoryEventStore()


@pytest.fixture
def units(store):
    return FakeUnitsOfWork(store)


@pytest.fixture
def application(units, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/nowhere")
    application = CustomerApplication(Settings.from_env(), command_units=units)
    yield application
    application.close()


def test_commands_run_on_the_injected_units_of_work_one_each(application, store, units):
    created = application.create_customer("Ada", "ada@example.com", CONTEXT)
    customer_id = uuid.UUID(created.customer_id)
    changed = application.change_email(customer_id, "ada@engine.org", CONTEXT, expected_version=1)
    deleted = application.delete_customer(customer_id, CONTEXT)
    assert (created.version, changed.version, deleted.version) == (1, 2, 3)
    assert not created.replayed
    assert [e.event_type for e in store.load(customer_id)] == [
        "CustomerCreated", "CustomerEmailChanged", "CustomerDeleted"]
    assert store.load(customer_id)[0].metadata["correlation_id"] == "unit"
    assert units.begun == 3


def test_a_stale_if_match_is_refused_and_stores_nothing(application, store):
    customer_id = uuid.UUID(application.create_customer("Ada", "ada@example.com", CONTEXT).customer_id)
    application.change_email(customer_id, "b@example.com", CONTEXT)
    with pytest.raises(StaleVersion):
        application.delete_customer(customer_id, CONTEXT, expected_version=1)
    assert len(store.load(customer_id)) == 2


def test_an_idempotency_key_gives_the_first_answer_again_and_refuses_another_request(application, store):
    first = application.create_customer("Ada", "ada@example.com", CONTEXT, idempotency_key="k1")
    again = application.create_customer("Ada", "ada@example.com", CONTEXT, idempotency_key="k1")
    assert again.replayed and again.customer == first.customer
    assert len(store.events) == 1
    with pytest.raises(KeyReused):
        application.create_customer("Eve", "eve@example.com", CONTEXT, idempotency_key="k1")
    assert len(store.events) == 1
