"""One customer's outbox row that cannot become a message is parked: that
customer's later events wait behind it, in order; everyone else's go on."""

import json
import uuid

import psycopg

from chalicelib.auth import OPERATE
from chalicelib.domain.commands import ChangeEmail
from ops.__main__ import main as ops
from tests.support.builders import CONTEXT, new_customer
from tests.support.kafka import cloudevent, read_topic


def insert_by_hand_without_metadata(db, stream_id) -> int:
    """What an operator's manual insert might leave: no event_id, no occurred_at."""
    with psycopg.connect(db) as conn:
        version = conn.execute("SELECT coalesce(max(version), 0) + 1 FROM events WHERE stream_id = %s",
                               (stream_id,)).fetchone()[0]
        (position,) = conn.execute(
            "INSERT INTO events (stream_id, stream_type, version, event_type, schema_version, data, metadata)"
            " VALUES (%s, 'Customer', %s, 'CustomerEmailChanged', 2, %s, '{}') RETURNING global_position",
            (stream_id, version, json.dumps({"email": "by-hand@example.com", "previous_email": None}))).fetchone()
        return conn.execute("INSERT INTO outbox (global_position, stream_id) VALUES (%s, %s) RETURNING id",
                            (position, stream_id)).fetchone()[0]


def operator(issuer) -> dict:
    return {"Authorization": f"Bearer {issuer.token(scopes=OPERATE)}"}


def unpublished_versions(db, stream_id) -> list[tuple[int, bool]]:
    with psycopg.connect(db) as conn:
        return conn.execute(
            "SELECT e.version, o.parked_at IS NOT NULL FROM outbox o JOIN events e USING (global_position)"
            " WHERE o.stream_id = %s AND o.published_at IS NULL ORDER BY o.id", (stream_id,)).fetchall()


def test_a_bad_row_holds_back_only_its_own_customer_until_resolved(db, topic, kafka_bootstrap, application, commands,
                                                                    client, capfd, issuer):
    stuck = new_customer(commands, 0)
    bad_row = insert_by_hand_without_metadata(db, stuck.id)
    commands.change_email(ChangeEmail(stuck.id, "after@example.com"), CONTEXT)  # version 3, behind the bad row
    others = [new_customer(commands, n) for n in range(1, 6)]

    result = application.outbox_relay().run_once()
    assert result.published == 1 + 5  # stuck's version 1, and every other customer's event
    assert unpublished_versions(db, stuck.id) == [(2, True), (3, False)]  # parked, then held back in order
    records = read_topic(kafka_bootstrap, topic, expected=6)
    assert sorted(cloudevent(r)["subject"] for r in records) == sorted(map(str, [stuck.id, *(o.id for o in others)]))
    assert [cloudevent(r)["streamversion"] for r in records if cloudevent(r)["subject"] == str(stuck.id)] == [1]

    logged = capfd.readouterr().err
    assert "outbox_row_parked" in logged and f'"outbox_id":{bad_row}' in logged and "event_id" in logged

    assert ops(["outbox"]) == 0
    assert "parked: 1" in capfd.readouterr().out
    assert client.get("/health").json_body["status"] == "unhealthy"
    health = client.get("/health/details", headers=operator(issuer)).json_body
    assert health["status"] == "unhealthy" and any("parked" in reason for reason in health["reasons"])
    assert ops(["outbox", "--parked"]) == 0
    listing = capfd.readouterr().out
    assert str(bad_row) in listing and str(stuck.id) in listing and "event_id" in listing

    # Retrying a row that is still bad parks it again; nothing moves.
    assert ops(["outbox", "--retry", str(bad_row)]) == 0
    application.outbox_relay().run_once()
    assert unpublished_versions(db, stuck.id) == [(2, True), (3, False)]

    # The operator decides: this row is skipped, the customer's events flow again.
    assert ops(["outbox", "--skip", str(bad_row)]) == 0
    assert application.outbox_relay().run_once().published == 1
    assert unpublished_versions(db, stuck.id) == []
    records = read_topic(kafka_bootstrap, topic, expected=7)
    assert [cloudevent(r)["streamversion"] for r in records if cloudevent(r)["subject"] == str(stuck.id)] == [1, 3]
    reasons = client.get("/health/details", headers=operator(issuer)).json_body.get("reasons", [])
    assert not any("parked" in r for r in reasons)


def test_a_repaired_row_is_published_on_retry(db, topic, application, commands):
    stuck = new_customer(commands, 0)
    application.outbox_relay().run_once()
    bad_row = insert_by_hand_without_metadata(db, stuck.id)
    application.outbox_relay().run_once()
    assert unpublished_versions(db, stuck.id) == [(2, True)]
    with psycopg.connect(db) as conn:  # the operator repairs what was inserted by hand
        conn.execute("UPDATE events SET metadata = %s WHERE global_position = (SELECT global_position FROM outbox"
                     " WHERE id = %s)", (json.dumps({"event_id": str(uuid.uuid4()),
                                                     "occurred_at": "2026-11-27T10:00:00+00:00",
                                                     "correlation_id": "repair", "causation_id": None}), bad_row))
    assert ops(["outbox", "--retry", "all"]) == 0
    assert application.outbox_relay().run_once().published == 1
    assert unpublished_versions(db, stuck.id) == []


def test_an_event_newer_than_the_code_is_parked_not_guessed(db, topic, application, commands):
    stuck = new_customer(commands, 0)
    other = new_customer(commands, 1)
    with psycopg.connect(db) as conn:  # as a newer release, since rolled back, wrote it
        conn.execute("UPDATE events SET schema_version = 99 WHERE stream_id = %s", (stuck.id,))
    assert application.outbox_relay().run_once().published == 1
    assert unpublished_versions(db, stuck.id) == [(1, True)]
    assert unpublished_versions(db, other.id) == []


def test_a_message_over_the_size_limit_is_parked(db, topic, application, commands, monkeypatch):
    import dataclasses

    from chalicelib.application import CustomerApplication

    small = CustomerApplication(dataclasses.replace(application.settings, kafka_max_message_bytes=100))
    try:
        customer = new_customer(commands, 0)
        assert small.outbox_relay().run_once().published == 0
        assert unpublished_versions(db, customer.id) == [(1, True)]
        with psycopg.connect(db) as conn:
            assert "bytes" in conn.execute("SELECT parked_error FROM outbox").fetchone()[0]
    finally:
        small.close()
