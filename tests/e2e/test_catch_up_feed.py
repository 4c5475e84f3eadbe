"""The catch-up feed (GET /events): a consumer that cannot reach Kafka pages
through the whole store, being written to, and gets every event once, in
each customer's order, as the messages on Kafka are; full pages never
change and say so."""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict

import psycopg
import pytest
from chalice.test import Client

from app import app
from chalicelib.auth import FEED
from chalicelib.eventstore.events import CommandContext
from tests.integration.test_outbox_relay import append_uncommitted
from tests.support.api import Api
from tests.support.builders import stored_events

pytestmark = pytest.mark.usefixtures("encryption")


@pytest.fixture
def reader(application, issuer):
    """A consumer of the feed: only the feed's scope."""
    with Client(app) as http:
        yield Api(http, token=issuer.token(subject="catch-up", scopes=FEED))


def page(reader, after: str | None = None, limit: int = 20):
    answer = reader.get("/events" + (f"?after={after}&limit={limit}" if after else f"?limit={limit}"))
    assert answer.status_code == 200, answer.body
    return answer


def read_all(reader, after: str | None = None, limit: int = 20) -> tuple[list[dict], str | None]:
    """Every page until one that is not full; the events, and where to go on from."""
    events = []
    while True:
        body = page(reader, after, limit).json_body
        events += body["events"]
        after = body["next"].split("after=")[1].split("&")[0]
        if not body["complete"]:
            return events, after


def test_paging_through_a_store_being_written_gives_every_event_once_in_each_customers_order(
        application, reader, db):
    context = CommandContext("feed-writer")
    stop, written = threading.Event(), []

    def write() -> None:
        n = 0
        while not stop.is_set():
            created = application.create_customer("Feed", f"feed{n}.{uuid.uuid4().hex[:6]}@example.com", context)
            application.change_email(uuid.UUID(created.customer_id), f"feed{n}.later@example.com", context)
            written.append(created.customer_id)
            n += 1

    writer = threading.Thread(target=write)
    writer.start()
    seen, after = [], None
    try:
        while len(seen) < 120:
            events, after = read_all(reader, after, limit=7)
            seen += events
    finally:
        stop.set()
        writer.join(timeout=30)
    events, _ = read_all(reader, after, limit=7)  # what was written since
    seen += events
    stored = stored_events(db)
    assert sorted((e["subject"], e["streamversion"]) for e in seen) == sorted(
        (str(e.stream_id), e.version) for e in stored)  # each once
    versions = defaultdict(list)
    for event in seen:
        versions[event["subject"]].append(event["streamversion"])
    assert all(v == sorted(v) for v in versions.values())
    assert {e["data"]["name"] for e in seen if e["type"] == "CustomerCreated"} == {"Feed"}  # opened, as on Kafka


def test_an_event_whose_transaction_commits_after_a_later_one_is_served_before_the_feed_passes_it(
        application, client, reader, db):
    late = psycopg.connect(db)
    early = append_uncommitted(late, "Early")
    later = client.create_id("later@example.com")  # commits first
    try:
        events, after = read_all(reader)
        assert events == []  # nothing past the open transaction is served yet
        late.commit()
    finally:
        late.close()
    events, _ = read_all(reader, after)
    assert [e["subject"] for e in events] == [str(early), later]


def test_a_full_page_never_changes_and_says_so(application, client, reader, eraser):
    ids = [client.create_id(f"page{n}@example.com", f"Paged {n}") for n in range(4)]
    full = page(reader, limit=3)
    assert full.json_body["complete"] and full.headers["Cache-Control"] == "private, max-age=300, immutable"
    client.create_id("more@example.com")
    assert page(reader, limit=3).json_body == full.json_body
    last = page(reader, full.json_body["next"].split("after=")[1].split("&")[0], limit=3)
    assert not last.json_body["complete"] and last.headers["Cache-Control"] == "no-cache"
    assert eraser.http.delete(f"/customer/{ids[0]}/personal-data").status_code == 204
    erased = page(reader, limit=3).json_body["events"][0]
    assert erased["subject"] == ids[0] and erased["data"] == {"name": None, "email": None}


@pytest.mark.parametrize("query", ["?after=x", "?after=1", "?after=1.-2", "?after=99999999999999999999.1",
                                   "?limit=0", "?limit=1001", "?limit=x"])
def test_a_malformed_position_or_limit_is_400(reader, query):
    answer = reader.get(f"/events{query}")
    assert answer.status_code == 400 and answer.json_body["Code"] == "BadRequestError"


def test_the_feed_refuses_a_missing_or_under_scoped_token(client, issuer):
    client.create_id("private@example.com")
    assert client.http.get("/events", headers={"Authorization": None}).status_code == 401
    assert client.http.get("/events", headers={"Authorization": "Bearer not-a-jwt"}).status_code == 401
    reader_of_customers = f"Bearer {issuer.token(scopes='customers:read customers:write')}"
    refused = client.http.get("/events", headers={"Authorization": reader_of_customers})
    assert refused.status_code == 403 and FEED in refused.json_body["Message"]


def test_the_feed_is_in_the_openapi_document(client):
    operation = client.get("/openapi.json").json_body["paths"]["/events"]["get"]
    assert operation["security"] == [{"bearer": [FEED]}]
    assert {p["name"] for p in operation["parameters"]} >= {"after", "limit"}
