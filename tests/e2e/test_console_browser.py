"""The console in a real Chromium against `make run`'s stack: signed in at
the development issuer (code flow with PKCE), a customer found and stepped
through, its message on the topic with a valid signature, a parked row
retried, a dead letter replayed and a backfill started, each effect checked
in the database or the queue; names masked until revealed, and a name that
is markup shown as text. Screenshots go to the test's folder, and to
docs/images with UPDATE_SCREENSHOTS=1 (docs/console.md shows them)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
import urllib.request
import uuid
from pathlib import Path

import psycopg
import pytest

from chalicelib.infra.dead_letters import unreadable_record
from chalicelib.infra.kafka_delivery import DeliveredRecord
from tests.support import browser
from tests.support.stack import PROJECT, make_token, running_stack
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(300)

MARKUP_NAME = "<img src=x onerror=alert(1)>"
OPERATE_AND_READ = ("customers:operate", "customers:read")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("console")) as running:
        yield running


@pytest.fixture(scope="module")
def chromium(request):
    from playwright.sync_api import sync_playwright

    executable, which = browser.chromium()
    request.config.pluginmanager.get_plugin("terminalreporter").write_line(f"console tests: {which}")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=browser.ARGS)
        yield launched
        launched.close()


@pytest.fixture
def screenshots(tmp_path):
    taken = []

    def take(page, name: str) -> None:
        path = tmp_path / f"console-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        taken.append(path)

    yield take
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        for path in taken:
            shutil.copy(path, PROJECT / "docs" / "images" / path.name)


class Console:
    """A page of the console, signed in, with every dialog it opens noted
    (and confirmations accepted)."""

    def __init__(self, page, url: str) -> None:
        self.page = page
        self.url = url
        self.dialogs: list[str] = []

        def answer(dialog):
            self.dialogs.append(dialog.message)
            dialog.accept()

        page.on("dialog", answer)

    def open_tab(self, tab: str, shown: str):
        """Its page, on `tab`, once `shown` (a selector) is on it."""
        self.page.click(f"button[data-tab={tab}]")
        self.page.wait_for_selector(shown)
        return self.page


def sign_in(chromium, stack, scopes=OPERATE_AND_READ, subject="olga") -> Console:
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    console = Console(page, f"http://127.0.0.1:{stack.api_port}/console")
    page.goto(console.url)
    page.click("#signin-button")
    page.wait_for_selector("input[name=subject]")  # the issuer's page
    page.fill("input[name=subject]", subject)
    for scope in ("customers:operate", "customers:read", "customers:write", "customers:erase", "customers:feed"):
        page.set_checked(f"input[name='{scope}']", scope in scopes)
    page.click("button[type=submit]")
    page.wait_for_selector("#tabs:not([hidden])")
    assert page.url == console.url  # the code is gone from the address
    assert subject in page.text_content("#who")
    stored = page.evaluate("() => [document.cookie, JSON.stringify(localStorage), JSON.stringify(sessionStorage)]")
    assert stored == ["", "{}", "{}"]  # the token lives in the page's memory only
    return console


def api(stack, method: str, path: str, body=None, scopes: str | None = None) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{stack.api_port}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {make_token(stack.state, scopes)}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read() or b"{}")


def find(console: Console, what: str) -> None:
    console.page.fill("#find-input", what)
    console.page.click("#find button[type=submit]")
    console.page.wait_for_selector("#state-after")


def test_sign_in_find_a_customer_by_email_and_step_through_its_timeline(chromium, stack, screenshots):
    email = f"ada-{uuid.uuid4().hex[:6]}@example.com"
    customer = api(stack, "POST", "/customer", {"name": "Ada Lovelace", "email": email})["id"]
    api(stack, "POST", f"/customer/{customer}/email", {"email": f"new-{email}"})
    console = sign_in(chromium, stack)
    page = console.page

    find(console, f"new-{email}")
    assert customer in page.text_content("#timeline")
    assert page.text_content("#step-label").startswith("event 2 of 2")
    assert "•••" in page.text_content("#state-after") and "Ada" not in page.text_content("#timeline")
    page.click("#reveal")
    page.wait_for_selector("text=personal data revealed")
    assert json.loads(page.text_content("#state-after"))["email"] == f"new-{email}"
    page.click("#previous")
    assert page.text_content("#step-label").startswith("event 1 of 2")
    state = json.loads(page.text_content("#state-after"))
    assert state == {"name": "Ada Lovelace", "email": email, "version": 1, "deleted": False, "erased": False}
    assert "CustomerCreated (schema 1)" in page.text_content("#timeline")
    page.click("#next")
    assert json.loads(page.text_content("#event-data"))["email"] == f"new-{email}"
    # Where each event is now: the stack's relay and projection get there.
    def published_and_projected() -> bool:
        page.click("#find button[type=submit]")
        page.wait_for_selector("#events")
        rows = [page.locator("#events tbody tr").nth(i).text_content() for i in range(2)]
        return all("published" in row and row.endswith("yes") for row in rows)

    assert wait_for(published_and_projected, timeout=60, interval=0.5)
    screenshots(page, "timeline")
    page.close()


def test_names_are_masked_until_revealed_and_a_name_that_is_markup_shows_as_text(chromium, stack):
    customer = api(stack, "POST", "/customer", {"name": MARKUP_NAME, "email": f"x-{uuid.uuid4().hex[:6]}@example.com"})
    operator_only = sign_in(chromium, stack, scopes=("customers:operate",), subject="no-reader")
    find(operator_only, customer["id"])
    assert "names and emails need customers:read" in operator_only.page.text_content("#timeline")
    assert operator_only.page.locator("#reveal").count() == 0
    assert MARKUP_NAME not in operator_only.page.text_content("#timeline")
    operator_only.page.close()

    console = sign_in(chromium, stack)
    find(console, customer["id"])
    console.page.click("#reveal")
    console.page.wait_for_selector("text=personal data revealed")
    assert json.loads(console.page.text_content("#state-after"))["name"] == MARKUP_NAME
    assert MARKUP_NAME in console.page.text_content("#event-data")
    assert console.page.locator("#timeline img").count() == 0  # text, not an element
    time.sleep(0.5)  # an onerror handler would have run by now
    assert console.dialogs == ["Reveal this customer's name and email? The access is logged."]
    console.page.close()


def test_a_customers_message_is_found_on_the_topic_with_its_signature_valid(chromium, stack, screenshots):
    customer = api(stack, "POST", "/customer", {"name": "Grace Hopper",
                                                "email": f"grace-{uuid.uuid4().hex[:6]}@example.com"})["id"]
    console = sign_in(chromium, stack)
    page = console.open_tab("topic", shown="#partitions table")
    page.select_option("#m-from", "beginning")
    page.fill("#m-customer", customer)

    def shown() -> bool:
        page.click("#messages-form button[type=submit]")
        page.wait_for_selector("#messages h2")
        return page.locator("#messages tbody tr").count() == 1

    assert wait_for(shown, timeout=60, interval=0.5)
    row = page.locator("#messages tbody tr")
    assert customer in row.text_content() and "CustomerCreated" in row.text_content()
    assert row.locator(".signature").text_content() == "valid"
    assert "•••" in row.text_content() and "Grace" not in row.text_content()
    with page.expect_download() as exported:
        page.click("#export-json")
    [message] = json.loads(Path(exported.value.path()).read_text())
    assert message["subject"] == customer and message["data"] == {}  # personal data left out
    screenshots(page, "topic")
    page.close()


def test_an_operator_retries_a_parked_row_replays_a_dead_letter_and_starts_a_backfill(chromium, stack, screenshots):
    customer = api(stack, "POST", "/customer", {"name": "Parked", "email": f"p-{uuid.uuid4().hex[:6]}@example.com"})
    customer_id = customer["id"]
    with psycopg.connect(stack.database) as conn:
        position = conn.execute("SELECT global_position FROM events WHERE stream_id = %s",
                                (customer_id,)).fetchone()[0]
        parked = conn.execute("INSERT INTO outbox (global_position, stream_id, parked_at, parked_error)"
                              " VALUES (%s, %s, clock_timestamp(), 'planted: over the size limit') RETURNING id",
                              (position, customer_id)).fetchone()[0]
    env = stack.env
    record = DeliveredRecord({"topic": "customer-events", "partition": 0, "offset": 0,
                              "key": base64.b64encode(customer_id.encode()).decode(), "value": ""})
    letter = stack.aws("sqs").send_message(QueueUrl=env["PROJECTION_DLQ_URL"], MessageBody=json.dumps(
        unreadable_record(record, "planted: not a CloudEvent", "project_customers")))["MessageId"]
    assert wait_for(lambda: _read_model_version(stack, customer_id) == 1, timeout=60)
    with psycopg.connect(stack.database) as conn:
        conn.execute("DELETE FROM customers_view WHERE id = %s", (customer_id,))

    console = sign_in(chromium, stack)
    page = console.open_tab("operations", shown="#health")
    row = page.locator("#ops tr", has_text="planted: over the size limit")
    assert row.count() == 1 and str(parked) in row.text_content()
    assert page.locator("#ops tr", has_text=letter).count() == 1
    screenshots(page, "operations")

    row.locator("button.retry").click()
    assert wait_for(lambda: _parked(stack, parked) is False, timeout=20)
    page.locator("#ops tr", has_text=letter).locator("button.replay").click()
    assert wait_for(lambda: _read_model_version(stack, customer_id) == 1, timeout=20)
    assert wait_for(lambda: letter not in _letters(stack), timeout=20)

    page.fill("#b-topic", "customer-events-backfill-console")
    page.fill("#b-customer", customer_id)
    page.click("#backfill-form button[type=submit]")
    page.wait_for_selector("#ops tr:has-text('customer-events-backfill-console')")
    with psycopg.connect(stack.database) as conn:
        asked = conn.execute("SELECT stream_id::text, requested_by FROM backfills WHERE topic = %s",
                             ("customer-events-backfill-console",)).fetchall()
    assert asked == [(customer_id, "console (olga)")]
    assert [d for d in console.dialogs if d.startswith(("Retry", "Replay", "Start"))] == [
        f"Retry outbox row {parked}?",
        f"Replay dead letter {letter}? Its customers are projected again from the store.",
        "Start a backfill to customer-events-backfill-console?"]
    actions = [line for line in stack.output.json_lines() if line.get("message") == "console_action"]
    assert [(a["action"], a["subject"]) for a in actions][-3:] == [
        ("retry_parked_outbox_row", "olga"), ("replay_dead_letter", "olga"), ("start_backfill", "olga")]
    page.close()


def _parked(stack, outbox_id) -> bool:
    with psycopg.connect(stack.database) as conn:
        return conn.execute("SELECT parked_at IS NOT NULL FROM outbox WHERE id = %s", (outbox_id,)).fetchone()[0]


def _read_model_version(stack, customer_id) -> int | None:
    with psycopg.connect(stack.database) as conn:
        row = conn.execute("SELECT version FROM customers_view WHERE id = %s", (customer_id,)).fetchone()
    return row[0] if row else None


def _letters(stack) -> set[str]:
    answer = stack.aws("sqs").receive_message(QueueUrl=stack.env["PROJECTION_DLQ_URL"], MaxNumberOfMessages=10,
                                              VisibilityTimeout=0)
    return {m["MessageId"] for m in answer.get("Messages", [])}
