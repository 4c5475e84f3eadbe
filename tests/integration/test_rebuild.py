"""Rebuilding the read model aside and swapping it in, reads staying online."""

import uuid

import psycopg
import pytest
from chalice.test import Client

from app import app
from chalicelib.domain.commands import ChangeEmail, CreateCustomer, DeleteCustomer
from chalicelib.eventstore.events import CommandContext
from chalicelib.infra.db import Database
from chalicelib.readmodel.rebuild import rebuild
from ops.__main__ import main as ops
from tests.support.deliveries import delivered_batch, read_model, read_model_from_store, stored_events
from tests.support.stores import PooledStore

CTX = CommandContext("rebuild-test")


pytestmark = pytest.mark.usefixtures("application")


def history(commands, customers=30):
    ids = [commands.create(CreateCustomer(f"C{n}", f"c{n}@example.com", uuid.uuid4()), CTX).id
           for n in range(customers)]
    for n, cid in enumerate(ids):
        commands.change_email(ChangeEmail(cid, f"c{n}.new@example.com"), CTX)
    commands.delete(DeleteCustomer(ids[0]), CTX)
    return ids


def project(events):
    with Client(app) as client:
        client.lambda_.invoke("project_customers", delivered_batch(events))


def index_names(db):
    with psycopg.connect(db) as conn:
        return sorted(r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'customers_view'"))


def test_rebuild_leaves_the_read_model_as_the_live_one(db, capsys, commands):
    history(commands)
    project(stored_events(db))
    live, indexes = read_model(db), index_names(db)

    assert ops(["rebuild"]) == 0
    out = capsys.readouterr()
    assert "rebuilt customers_view: 30 customers from 61 events" in out.out
    assert "100%" in out.err and "61/61 events" in out.err  # the progress bar, at its end
    assert read_model(db) == live
    assert index_names(db) == indexes
    with psycopg.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'customers_view%'")}
    assert tables == {"customers_view"}


def test_rebuild_from_an_empty_or_wrong_read_model(db, commands):
    ids = history(commands, customers=5)
    project(stored_events(db))
    expected = read_model(db)
    with psycopg.connect(db) as conn:
        conn.execute("DELETE FROM customers_view WHERE id = %s", (ids[1],))
        conn.execute("UPDATE customers_view SET email = to_jsonb('corrupt@example.com'::text) WHERE id = %s", (ids[2],))
    rebuild(Database(db).connect)
    assert read_model(db) == expected


def test_reads_go_on_and_late_events_are_caught_up(db, commands, client):
    ids = history(commands, customers=5)
    project(stored_events(db))
    seen_during = []

    def during(done, total):
        if done == total and not seen_during:
            # While the rebuild reads its snapshot: the API still answers, and
            # a new event commits and reaches the live read model.
            seen_during.append(client.get(f"/customer/{ids[3]}").headers["X-Read-Source"])
            commands.change_email(ChangeEmail(ids[3], "late@example.com"), CTX)
            project([e for e in stored_events(db) if e.stream_id == ids[3]])

    result = rebuild(Database(db).connect, progress=during)
    assert seen_during == ["read-model"]
    assert result.caught_up == 1
    row = next(r for r in read_model(db) if r.id == ids[3])
    assert (row.email, row.version) == ("late@example.com", 3)


def test_the_projection_keeps_working_on_the_swapped_table(db, commands):
    ids = history(commands, customers=3)
    project(stored_events(db))
    rebuild(Database(db).connect)
    commands.change_email(ChangeEmail(ids[1], "after@example.com"), CTX)
    project(stored_events(db))
    row = next(r for r in read_model(db) if r.id == ids[1])
    assert (row.email, row.version) == ("after@example.com", 3)


def test_a_projection_batch_in_flight_at_the_swap_neither_deadlocks_nor_is_lost(db, commands, pool):
    """The batch has read the live table and is about to write when the swap
    starts: both must finish, and the batch's row must be in the new table."""
    import threading
    import time

    from chalicelib.readmodel.projection import ProjectedEvent, project_kafka_batch
    from tests.support.waiting import run_in_threads

    ids = history(commands, customers=3)
    project(stored_events(db))
    commands.change_email(ChangeEmail(ids[1], "v3@example.com"), CTX)
    commands.change_email(ChangeEmail(ids[1], "v4@example.com"), CTX)
    only_v4 = delivered_batch([e for e in stored_events(db) if e.stream_id == ids[1] and e.version == 4])
    in_flight, swap_starting = threading.Event(), threading.Event()
    errors = []

    def load_after(customer_id, version):
        # Called between the batch's read and its write (v3 is missing).
        in_flight.set()
        swap_starting.wait(30)
        time.sleep(0.5)  # the swap now holds or waits for its locks
        return [ProjectedEvent.from_recorded(r) for r in PooledStore(pool).load(customer_id, version)]

    def deliver_batch():
        try:
            with pool.connection() as conn:
                project_kafka_batch(only_v4, conn, load_after)
        except Exception as error:  # noqa: BLE001 - asserted below
            errors.append(error)

    def run_rebuild():
        in_flight.wait(30)
        try:
            rebuild(Database(db).connect, progress=lambda done, total: swap_starting.set() if done == total else None)
        except Exception as error:  # noqa: BLE001 - asserted below
            errors.append(error)

    run_in_threads(lambda job: job(), [(deliver_batch,), (run_rebuild,)])
    assert errors == []
    row = next(r for r in read_model(db) if r.id == ids[1])
    assert (row.email, row.version) == ("v4@example.com", 4)


def test_customers_created_while_the_rebuild_copies_are_in_the_read_model_after_the_swap(db, commands):
    history(commands, customers=3)
    project(stored_events(db))
    created = []

    def during(done, total):
        if done == total and not created:
            # After the copy read its snapshot, before the swap: a creation
            # commits and reaches the live read model only.
            created.append(commands.create(CreateCustomer("Late Comer", "late.comer@example.com", uuid.uuid4()),
                                           CTX).id)
            project([e for e in stored_events(db) if e.stream_id == created[0]])

    result = rebuild(Database(db).connect, progress=during)
    assert result.caught_up == 1
    assert created[0] in {row.id for row in read_model(db)}
    assert read_model(db) == read_model_from_store(db)
