"""One contract, run against every store: the fake must behave like the real one."""

import threading
import uuid

import psycopg
import pytest

from chalicelib.eventstore.events import NewEvent
from chalicelib.eventstore.store import ConcurrencyError
from tests.support.stores import PooledStore, stores
from tests.support.waiting import run_in_threads


def event(n: int) -> NewEvent:
    return NewEvent("Happened", 1, {"n": n}, {"event_id": str(uuid.uuid4()), "correlation_id": "c"})


@pytest.fixture(params=["memory", "postgres"])
def store(request):
    return stores[request.param](request)


def test_append_then_load_in_version_order(store):
    stream = uuid.uuid4()
    store.append(stream, "Thing", 0, [event(1), event(2)])
    store.append(stream, "Thing", 2, [event(3)])
    loaded = store.load(stream)
    assert [(e.version, e.data["n"], e.stream_type) for e in loaded] == [
        (1, 1, "Thing"), (2, 2, "Thing"), (3, 3, "Thing")]
    assert [e.global_position for e in loaded] == sorted(e.global_position for e in loaded)
    assert loaded[0].metadata["correlation_id"] == "c"


def test_load_after_a_version(store):
    stream = uuid.uuid4()
    store.append(stream, "Thing", 0, [event(1), event(2), event(3)])
    assert [e.version for e in store.load(stream, after_version=1)] == [2, 3]
    assert store.load(stream, after_version=3) == []
    assert [e.version for e in store.load(stream, after_version=1, limit=1)] == [2]


def test_unknown_stream_loads_empty(store):
    assert store.load(uuid.uuid4()) == []


def test_append_at_a_stale_version_is_refused_and_changes_nothing(store):
    stream = uuid.uuid4()
    store.append(stream, "Thing", 0, [event(1)])
    with pytest.raises(ConcurrencyError):
        store.append(stream, "Thing", 0, [event(99), event(100)])
    for expected, events in ((0, [event(99)]), (5, [event(99)]), (5, [event(99), event(100)]),
                             (2, [event(99), event(100)])):
        with pytest.raises(ConcurrencyError):
            store.append(stream, "Thing", expected, events)
    assert [e.data["n"] for e in store.load(stream)] == [1]


def test_appending_nothing_stores_nothing(store):
    stream = uuid.uuid4()
    assert store.append(stream, "Thing", 0, []) == []
    assert store.load(stream) == []


def test_streams_are_independent(store):
    a, b = uuid.uuid4(), uuid.uuid4()
    store.append(a, "Thing", 0, [event(1)])
    store.append(b, "Thing", 0, [event(2)])
    assert [e.data["n"] for e in store.load(a)] == [1]
    assert [e.data["n"] for e in store.load(b)] == [2]


def test_each_event_gets_one_outbox_row_in_order(db, pool):
    store = PooledStore(pool)
    stream = uuid.uuid4()
    positions = store.append(stream, "Thing", 0, [event(1), event(2), event(3)])
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT global_position, stream_id, published_at FROM outbox ORDER BY id").fetchall()
    assert rows == [(p, stream, None) for p in positions]


def test_events_and_outbox_rows_commit_together_or_not_at_all(db, pool):
    """If writing the outbox row fails, the event must not be stored either."""
    store = PooledStore(pool)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("""
            CREATE FUNCTION refuse_outbox() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION 'outbox unavailable'; END $$;
            CREATE TRIGGER refuse_outbox BEFORE INSERT ON outbox
            FOR EACH ROW EXECUTE FUNCTION refuse_outbox();
        """)
    try:
        with pytest.raises(psycopg.errors.RaiseException):
            store.append(uuid.uuid4(), "Thing", 0, [event(1)])
        with psycopg.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM events").fetchone() == (0,)
    finally:
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("DROP TRIGGER refuse_outbox ON outbox; DROP FUNCTION refuse_outbox()")


def test_concurrent_appends_at_one_version_exactly_one_wins(db, pool):
    store = PooledStore(pool)
    stream = uuid.uuid4()
    store.append(stream, "Thing", 0, [event(0)])
    barrier = threading.Barrier(8)
    outcomes = []

    def writer(n):
        barrier.wait()
        try:
            store.append(stream, "Thing", 1, [event(n)])
            outcomes.append("won")
        except ConcurrencyError:
            outcomes.append("lost")

    run_in_threads(writer, [(n,) for n in range(8)])
    assert sorted(outcomes) == ["lost"] * 7 + ["won"]
    assert [e.version for e in store.load(stream)] == [1, 2]


def test_rows_are_read_by_column_name_not_position(db):
    from chalicelib.eventstore.events import RecordedEvent
    from chalicelib.eventstore.postgres import dataclass_row

    with psycopg.connect(db) as conn:
        swapped = "SELECT 1 AS version, 2 AS global_position"
        with pytest.raises(TypeError, match="need the columns"):
            conn.cursor(row_factory=dataclass_row(RecordedEvent)).execute(swapped).fetchall()
