"""The projection function: MSK-shaped batches in, read table updated, on a
real PostgreSQL; batches duplicated, reordered, with versions missing, racing."""

import random
import threading
import uuid

import pytest

from chalicelib.domain.commands import ChangeEmail, DeleteCustomer
from devstack.kafka_source_events import KafkaRecord
from tests.support.builders import CONTEXT, new_customer
from tests.support.deliveries import delivered_batch, read_model, read_model_from_store, stored_events
from tests.support.waiting import run_in_threads


def project(client, event) -> dict:
    return client.lambda_.invoke("project_customers", event).payload


@pytest.fixture
def history(commands):
    def make(n_customers=3, changes=3, delete_first=False):
        ids = [new_customer(commands, n).id for n in range(n_customers)]
        for round_ in range(changes):
            for n, cid in enumerate(ids):
                commands.change_email(ChangeEmail(cid, f"c{n}.{round_}@example.com"), CONTEXT)
        if delete_first:
            commands.delete(DeleteCustomer(ids[0]), CONTEXT)
        return ids

    return make


expected = read_model_from_store


def test_a_batch_updates_the_read_model(client, db, history):
    history(n_customers=2, changes=2)
    result = project(client, delivered_batch(stored_events(db)))
    assert result["records"] == 6 and result["rows_written"] == 2 and result["poison"] == 0
    assert read_model(db) == expected(db)
    row = read_model(db)[0]
    assert row.version == 3 and row.created_at < row.updated_at


def test_a_batch_delivered_twice_changes_nothing_the_second_time(client, db, history):
    history()
    event = delivered_batch(stored_events(db))
    project(client, event)
    before = read_model(db)
    again = project(client, event)
    assert again["rows_written"] == 0 and again["duplicates"] == again["records"]
    assert read_model(db) == before == expected(db)


def test_out_of_order_across_and_within_customers(client, db, history):
    history(n_customers=4, changes=4, delete_first=True)
    events = stored_events(db)
    random.Random(7).shuffle(events)
    for start in range(0, len(events), 5):  # small shuffled batches
        project(client, delivered_batch(events[start:start + 5]))
    assert read_model(db) == expected(db)


def test_an_older_version_after_a_newer_one_is_a_no_op(client, db, history):
    history(n_customers=1, changes=3)
    events = stored_events(db)
    project(client, delivered_batch(events))
    assert project(client, delivered_batch(events[:2]))["rows_written"] == 0
    assert read_model(db) == expected(db)


def test_missing_versions_are_filled_from_the_event_store(client, db, history):
    history(n_customers=2, changes=3)
    events = stored_events(db)
    # Only each customer's last event arrives: every earlier one is missing.
    last = {}
    for e in events:
        last[e.stream_id] = e
    result = project(client, delivered_batch(list(last.values())))
    assert result["gaps_filled"] == 2
    assert read_model(db) == expected(db)


def test_deleted_customer_is_a_tombstone_that_a_late_duplicate_cannot_revive(client, db, history):
    ids = history(n_customers=2, changes=1, delete_first=True)
    events = stored_events(db)
    project(client, delivered_batch(events))
    created = [e for e in events if e.stream_id == ids[0] and e.version == 1]
    project(client, delivered_batch(created))
    row = next(r for r in read_model(db) if r.id == ids[0])
    assert row.deleted is True and row.version == 3


def test_racing_batches_never_lose_an_update(db, application, pool, history):
    history(n_customers=20, changes=4)
    events = stored_events(db)
    for round_ in range(10):
        with pool.connection() as conn:
            conn.execute("TRUNCATE customers_view")
        # One batch with everything, one with only the older half, at once:
        # whoever commits last must not take a row backwards.
        full = delivered_batch(events)
        old = delivered_batch([e for e in events if e.version <= 2])
        barrier = threading.Barrier(2)

        def deliver(event, barrier):
            barrier.wait()
            application.project_kafka_batch(event)

        run_in_threads(deliver, [(full, barrier), (old, barrier)])
        assert read_model(db) == expected(db), f"round {round_}"


def test_poison_records_are_logged_with_where_they_are_and_skipped(client, db, capfd, history):
    history(n_customers=1, changes=1)
    poison = [
        KafkaRecord("customer-events", 2, 41, 0, b"k", b"this is not json", {}),
        KafkaRecord("customer-events", 2, 42, 0, b"k", b'{"specversion": "1.0", "type": "CustomerCreated"}', {}),
        KafkaRecord("customer-events", 1, 43, 0, b"k", b'{"specversion": "1.0", "type": "SomethingElse",'
                    b' "subject": "' + str(uuid.uuid4()).encode() + b'", "streamversion": 1, "data": {},'
                    b' "time": "2026-01-01T00:00:00+00:00"}', {}),
    ]
    result = project(client, delivered_batch(stored_events(db), extra=poison))
    assert result["poison"] == 3 and result["rows_written"] == 1
    assert read_model(db) == expected(db)
    logged = capfd.readouterr().err
    for where in ('"partition":2,"offset":41', '"partition":2,"offset":42', '"partition":1,"offset":43'):
        assert where in logged
    assert logged.count("projection_poison_record") == 3


def test_a_customer_unknown_to_the_event_store_is_logged_and_skipped(client, db, capfd, history):
    history(n_customers=1, changes=0)
    stranger = uuid.uuid4()
    foreign = KafkaRecord("customer-events", 0, 7, 0, str(stranger).encode(),
                          b'{"specversion": "1.0", "id": "x", "type": "CustomerEmailChanged", "subject": "'
                          + str(stranger).encode() + b'", "streamversion": 2, "data": {"email": "s@example.com"},'
                          b' "time": "2026-01-01T00:00:00+00:00"}', {})
    result = project(client, delivered_batch(stored_events(db), extra=[foreign]))
    assert (result["unprojectable"], result["rows_written"]) == (1, 1)
    assert read_model(db) == expected(db)
    assert str(stranger) in capfd.readouterr().err


def test_not_a_kafka_event_raises(client, db):
    with pytest.raises(Exception, match="not a Kafka event"):
        project(client, {"Records": []})
