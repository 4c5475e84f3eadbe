"""The operator command: see the outbox backlog, publish it by hand."""

import psycopg

from ops.__main__ import main
from tests.support.builders import new_customer
from tests.support.kafka import read_topic
from tests.support.relay import start_relay, stop_relay
from tests.support.waiting import wait_for


def test_outbox_shows_the_backlog_then_publishes_it(db, topic, kafka_bootstrap, capsys, commands):
    for n in range(3):
        new_customer(commands, n)

    assert main(["outbox"]) == 0
    out = capsys.readouterr().out
    assert "unpublished events: 3" in out and "oldest waiting: " in out and "oldest waiting: -" not in out

    assert main(["outbox", "--publish"]) == 0
    assert "published 3 events" in capsys.readouterr().out
    assert len(read_topic(kafka_bootstrap, topic, expected=3)) == 3

    assert main(["outbox"]) == 0
    assert "unpublished events: 0   oldest waiting: -" in capsys.readouterr().out


def test_relay_by_hand_with_the_broker_down_says_so(db, monkeypatch, capsys, commands):
    from devstack.postgres import free_port

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    new_customer(commands)
    assert main(["outbox", "--publish"]) == 1
    assert "failed:" in capsys.readouterr().err
    assert main(["outbox"]) == 0
    assert "unpublished events: 1" in capsys.readouterr().out


def test_relay_by_hand_while_a_relay_runs_wakes_it_and_reports(db, topic, application, commands, capsys):

    from chalicelib.eventstore.relay import RELAY_LOCK_BASE

    stop, running = start_relay(application.outbox_relay())
    try:
        with psycopg.connect(db, autocommit=True) as conn:
            assert wait_for(lambda: conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                                                 " AND objid = %s", (RELAY_LOCK_BASE % 2**32,)).fetchone()[0] == 1)
        for n in range(3):
            new_customer(commands, n)
        assert main(["outbox", "--publish"]) == 0
        out = capsys.readouterr().out
        assert "a relay is running" in out and "unpublished events: 0" in out
        assert "of the events waiting went out" in out
    finally:
        stop_relay(db, stop, running)


def test_skip_refuses_a_row_that_is_not_parked_and_changes_nothing(db, commands, capsys):
    new_customer(commands, 1)
    with psycopg.connect(db) as conn:
        (outbox_id,) = conn.execute("SELECT id FROM outbox").fetchone()
    assert main(["outbox", "--skip", str(outbox_id)]) == 1  # healthy, waiting to be published: a mistyped id
    assert f"outbox row {outbox_id} is not parked" in capsys.readouterr().err
    assert main(["outbox", "--skip", str(outbox_id + 1000)]) == 1  # no such row
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT published_at, parked_at, parked_error FROM outbox").fetchall() == [
            (None, None, None)]
