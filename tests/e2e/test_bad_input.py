"""Inputs that once answered 500: each gets a 400 with a reason, and nothing
is stored."""

import json

import pytest

from tests.support.builders import count


@pytest.fixture
def customer_id(client):
    return client.create_id()


@pytest.mark.parametrize("path", ["/customer/{id}?min_version=%C2%B2", "/customer/{id}?version=%C2%B9",
                                  "/customer/{id}/events?limit=%C2%B2", "/customer/{id}/events?after=%C2%B2"])
def test_unicode_digits_in_numbers_are_400(client, customer_id, path):
    response = client.get(path.format(id=customer_id))
    assert response.status_code == 400, response.body
    assert response.json_body["Code"] == "BadRequestError"


def test_unicode_digits_in_if_match_are_400_and_change_nothing(client, db, customer_id):
    response = client.change_email(customer_id, "new@example.com", {"If-Match": '"²"'})
    assert response.status_code == 400 and "If-Match" in response.json_body["Message"]
    assert client.delete(f"/customer/{customer_id}", {"If-Match": "¹"}).status_code == 400
    assert count(db) == 1


@pytest.mark.parametrize("name", ["A\u0000B", "\ud800", "A\udfffB"])
def test_text_postgresql_cannot_store_is_400(client, db, name):
    raw = json.dumps({"name": name, "email": "ada@example.com"})  # \u escapes, as a client would send
    response = client.post("/customer", raw)
    assert response.status_code == 400, response.body
    assert "name" in response.json_body["Message"]
    assert count(db) == 0


def test_nul_in_an_email_change_is_400(client, db, customer_id):
    response = client.post(f"/customer/{customer_id}/email", json.dumps({"email": "a\u0000@example.com"}))
    assert response.status_code == 400
    assert count(db) == 1


def test_deeply_nested_json_is_400(client, db):
    raw = '{"name": ' + "[" * 100_000 + "]" * 100_000 + ', "email": "ada@example.com"}'
    response = client.post("/customer", raw)
    assert response.status_code == 400 and "nested" in response.json_body["Message"]
    assert count(db) == 0


def test_an_id_uuid_reads_differently_is_400_not_404(client, customer_id):
    # 36 characters that uuid.UUID() would read as another id after
    # dropping the punctuation: not the canonical form the README promises.
    mangled = customer_id[:7] + "_-" + customer_id[9:]
    assert len(mangled) == 36
    for response in (client.get(f"/customer/{mangled}"), client.get(f"/customer/{mangled}/events"),
                     client.delete(f"/customer/{mangled}")):
        assert response.status_code == 400, response.body
        assert "not a customer id" in response.json_body["Message"]


@pytest.mark.parametrize("mangled", ["{{{id}}}", "urn:uuid:{id}", "{hex}"])
def test_other_spellings_of_a_uuid_are_400(client, customer_id, mangled):
    raw = mangled.format(id=customer_id, hex=customer_id.replace("-", ""))
    assert client.get(f"/customer/{raw}").status_code == 400


def test_a_huge_body_of_unknown_keys_gets_a_short_message(client, db):
    body = json.dumps({f"unknown-key-{n:06d}-" + "x" * 20: 1 for n in range(30_000)})
    assert len(body) > 1_000_000
    response = client.post("/customer", body)
    assert response.status_code == 400
    assert "unknown field(s)" in response.json_body["Message"]
    assert len(response.body) < 1_000
    assert count(db) == 0


def test_a_long_bad_value_is_not_echoed_whole(client):
    response = client.get("/customer/" + "x" * 5000)
    assert response.status_code == 400 and len(response.body) < 1_000
