"""The application facade built with fakes through its constructor: no
database, no broker (DATABASE_URL points nowhere, so any use of the pool
would fail the test)."""

import uuid

import pytest

from chalicelib.application import CustomerApplication
from chalicelib.domain.errors import CustomerNotFound, StaleVersion
from chalicelib.eventstore.events import CommandContext
from chalicelib.eventstore.store import InMemoryEventStore
from chalicelib.infra.settings import Settings

CONTEXT = CommandContext(correlation_id="unit", causation_id="unit")


@pytest.fixture
def store():
    return InMemoryEventStore()


@pytest.fixture
def application(store, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/nowhere")
    application = CustomerApplication(Settings.from_env(), store=store)
    yield application
    application.close()


def test_commands_run_on_the_injected_store(application, store):
    created = application.create_customer("Ada", "ada@example.com", CONTEXT)
    customer_id = uuid.UUID(created.customer_id)
    changed = application.change_email(customer_id, "ada@engine.org", CONTEXT, expected_version=1)
    deleted = application.delete_customer(customer_id, CONTEXT)
    assert (created.version, changed.version, deleted.version) == (1, 2, 3)
    assert not created.replayed
    assert [e.event_type for e in store.load(customer_id)] == [
        "CustomerCreated", "CustomerEmailChanged", "CustomerDeleted"]
    assert store.load(customer_id)[0].metadata["correlation_id"] == "unit"


def test_a_stale_if_match_is_refused_and_stores_nothing(application, store):
    customer_id = uuid.UUID(application.create_customer("Ada", "ada@example.com", CONTEXT).customer_id)
    application.change_email(customer_id, "b@example.com", CONTEXT)
    with pytest.raises(StaleVersion):
        application.delete_customer(customer_id, CONTEXT, expected_version=1)
    assert len(store.load(customer_id)) == 2


def test_strong_reads_history_and_time_machine_come_from_the_store(application):
    customer_id = uuid.UUID(application.create_customer("Ada", "ada@example.com", CONTEXT).customer_id)
    application.change_email(customer_id, "b@example.com", CONTEXT)
    read = application.customer(customer_id, strong=True)
    assert (read.source, read.row.email, read.row.version) == ("event-store", "b@example.com", 2)
    assert application.customer_at(customer_id, version=1).email == "ada@example.com"
    page = application.history(customer_id, limit=1)
    assert [e.version for e in page.events] == [1] and page.more
    with pytest.raises(CustomerNotFound):
        application.history(uuid.uuid4())

