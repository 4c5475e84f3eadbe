"""History (the audit log) and the time machine."""

import time
import uuid
from datetime import UTC, datetime

import pytest


def create(client):
    return client.create("Ada", headers={"X-Correlation-Id": "hist-1"}).json_body


def change_email(client, cid, email):
    return client.change_email(cid, email, {"X-Correlation-Id": "hist-" + email.split("@")[0]})


def created_changed_and_deleted(client) -> str:
    """A customer of three events: created, its email changed, deleted."""
    cid = create(client)["id"]
    change_email(client, cid, "b@example.com")
    client.http.delete(f"/customer/{cid}")
    return cid


def test_history_lists_every_event_with_its_metadata(client):
    cid = created_changed_and_deleted(client)
    history = client.http.get(f"/customer/{cid}/events").json_body
    assert history["next"] is None
    assert [(e["version"], e["type"]) for e in history["events"]] == [
        (1, "CustomerCreated"), (2, "CustomerEmailChanged"), (3, "CustomerDeleted")]
    first = history["events"][0]
    assert first["data"] == {"name": "Ada", "email": "ada@example.com"}
    assert first["correlation_id"] == "hist-1" and first["causation_id"] and uuid.UUID(first["event_id"])
    assert datetime.fromisoformat(first["time"]) <= datetime.fromisoformat(first["recorded_at"])
    assert history["events"][1]["correlation_id"] == "hist-b"


def test_history_is_paged(client):
    cid = create(client)["id"]
    for n in range(4):
        change_email(client, cid, f"e{n}@example.com")
    page = client.http.get(f"/customer/{cid}/events?limit=2").json_body
    versions = [e["version"] for e in page["events"]]
    while page["next"]:
        page = client.http.get(page["next"]).json_body
        versions += [e["version"] for e in page["events"]]
    assert versions == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("path", ["/events?limit=0", "/events?limit=501", "/events?limit=x", "/events?after=-1",
                                  "?version=0", "?version=x", "?as_of=yesterday", "?as_of=2026-01-01T00:00:00"])
def test_bad_paging_and_time_machine_options_are_400(client, path):
    cid = create(client)["id"]
    assert client.http.get(f"/customer/{cid}{path}").status_code == 400


def test_history_of_an_unknown_customer_is_404(client):
    assert client.http.get(f"/customer/{uuid.uuid4()}/events").status_code == 404


def test_state_at_a_version_including_after_deletion(client):
    cid = created_changed_and_deleted(client)
    v1 = client.http.get(f"/customer/{cid}?version=1")
    assert v1.status_code == 200 and v1.json_body["email"] == "ada@example.com"
    assert v1.json_body["deleted"] is False and v1.headers["ETag"] == '"1"'
    v3 = client.http.get(f"/customer/{cid}?version=3").json_body
    assert (v3["email"], v3["deleted"]) == ("b@example.com", True)
    missing = client.http.get(f"/customer/{cid}?version=4")
    assert missing.status_code == 404 and "latest is 3" in missing.json_body["Message"]
    assert client.http.get(f"/customer/{cid}").status_code == 404  # deleted now


def test_state_as_of_a_moment(client):
    before = datetime.now(UTC)
    time.sleep(0.01)
    cid = create(client)["id"]
    time.sleep(0.01)
    between = datetime.now(UTC)
    time.sleep(0.01)
    change_email(client, cid, "b@example.com")

    def at(moment):
        return client.http.get(f"/customer/{cid}?as_of={moment.isoformat().replace('+00:00', 'Z')}")

    assert at(before).status_code == 404
    assert at(between).json_body["email"] == "ada@example.com"
    assert at(datetime.now(UTC)).json_body["email"] == "b@example.com"


def test_as_of_the_exact_moment_an_event_was_recorded_includes_it(client, db):
    import psycopg

    cid = create(client)["id"]
    change_email(client, cid, "b@example.com")
    with psycopg.connect(db) as conn:
        first, second = [r[0] for r in conn.execute(
            "SELECT recorded_at FROM events WHERE stream_id = %s ORDER BY version", (cid,))]
    assert first < second
    for moment, email in ((first, "ada@example.com"), (second, "b@example.com")):
        response = client.get(f"/customer/{cid}?as_of={moment.isoformat().replace('+00:00', 'Z')}")
        assert response.status_code == 200 and response.json_body["email"] == email
