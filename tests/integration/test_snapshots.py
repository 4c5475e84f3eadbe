"""Snapshots: written with the events, used when their shape is current,
ignored (never misread) when it is not."""

import json
import uuid

import psycopg
import pytest

from chalicelib.domain.commands import ChangeEmail, CreateCustomer
from chalicelib.domain.customer import Customer, CustomerEmailChanged, registry
from chalicelib.eventstore.events import CommandContext, Metadata
from chalicelib.eventstore.store import ConcurrencyError
from tests.support.fakes import commands_on
from tests.support.stores import PooledStore, stores

CTX = CommandContext("snapshots")


@pytest.fixture(params=["memory", "postgres"])
def store(request):
    return stores[request.param](request)


class CountingStore:
    """Wraps a store and remembers how many events each load returned."""

    def __init__(self, inner):
        self.inner = inner
        self.loaded = []

    def load(self, stream_id, after_version=0, limit=None):
        events = self.inner.load(stream_id, after_version, limit)
        self.loaded.append(len(events))
        return events

    def __getattr__(self, name):
        return getattr(self.inner, name)


def customer_with_changes(service, changes):
    customer = service.create(CreateCustomer("Ada", "ada@example.com", uuid.uuid4()), CTX)
    for n in range(changes):
        service.change_email(ChangeEmail(customer.id, f"e{n}@example.com"), CTX)
    return customer.id


def test_a_snapshot_is_taken_every_n_events_and_used_to_load(store):
    counting = CountingStore(store)
    service = commands_on(counting, snapshot_every=10)
    cid = customer_with_changes(service, 24)  # versions 1..25
    snapshot = store.load_snapshot(cid)
    assert (snapshot.version, snapshot.schema_version) == (20, Customer.state_schema_version)
    assert snapshot.state == {"name": "Ada", "email": "e18@example.com", "deleted": False, "erased": False}

    counting.loaded.clear()
    customer = service.get(cid)
    assert counting.loaded == [5]  # the snapshot, then versions 21..25 only
    assert (customer.version, customer.email) == (25, "e23@example.com")
    without = commands_on(store).get(cid)  # no snapshots: every event
    assert without.to_dict() == customer.to_dict()


def test_a_snapshot_of_an_older_state_shape_is_ignored_not_misread(store, monkeypatch):
    service = commands_on(store, snapshot_every=5)
    cid = customer_with_changes(service, 6)
    # Today's code reads a newer shape.
    monkeypatch.setattr(Customer, "state_schema_version", Customer.state_schema_version + 1)
    monkeypatch.setattr(Customer, "restore_state", lambda self, state: pytest.fail("misread an old snapshot"))
    customer = service.get(cid)
    assert (customer.version, customer.email) == (7, "e5@example.com")


def test_no_snapshot_when_the_append_is_refused(pool):
    from chalicelib.eventstore.events import Snapshot

    store = PooledStore(pool)
    cid = uuid.uuid4()
    with pytest.raises(ConcurrencyError):
        store.append(cid, "Customer", 3, [registry.serialize(CustomerEmailChanged("x@example.com", None),
                                                             Metadata.new("c", None))],
                     Snapshot(4, 1, {"name": "N", "email": "x@example.com", "deleted": False}))
    assert store.load_snapshot(cid) is None


def test_a_snapshot_row_in_a_shape_this_code_does_not_read_is_ignored(db, pool):
    service = commands_on(PooledStore(pool), snapshot_every=100)
    cid = customer_with_changes(service, 2)
    with psycopg.connect(db) as conn:
        conn.execute("INSERT INTO snapshots (stream_id, stream_type, version, schema_version, state)"
                     " VALUES (%s, 'Customer', 3, 99, %s)", (cid, json.dumps({"nom": "Ada", "courriel": "?"})))
    customer = service.get(cid)
    assert (customer.name, customer.email, customer.version) == ("Ada", "e1@example.com", 3)
