import uuid

import pytest

from chalicelib.api import parse


def test_json_object_accepts_exact_fields():
    assert parse.json_object(b'{"name": "Ada", "email": "a@b.io"}', {"name": str, "email": str}) == {
        "name": "Ada", "email": "a@b.io"}


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "must be a JSON object"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[]", "not an array"),
        (b'{"name": "Ada"}', "missing field(s): email"),
        (b'{"name": "Ada", "email": "a@b.io", "age": 3}', "unknown field(s): age"),
        (b'{"name": 5, "email": "a@b.io"}', "name must be a string, not a number"),
        (b'{"name": null, "email": "a@b.io"}', "name must be a string, not null"),
    ],
)
def test_json_object_says_what_is_wrong(body, message):
    with pytest.raises(parse.BadRequest) as error:
        parse.json_object(body, {"name": str, "email": str})
    assert message in str(error.value)


def test_customer_id_must_be_a_canonical_uuid():
    value = uuid.uuid4()
    assert parse.customer_id(str(value)) == value
    for bad in ("42", "not-a-uuid", value.hex, "{" + str(value) + "}"):
        with pytest.raises(parse.BadRequest):
            parse.customer_id(bad)


@pytest.mark.parametrize("header, version", [(None, None), ("*", None), ('"3"', 3), ("3", 3)])
def test_if_match(header, version):
    assert parse.if_match(header) == version


@pytest.mark.parametrize("header", ['"abc"', 'W/"3"', '"-1"', '""'])
def test_bad_if_match(header):
    with pytest.raises(parse.BadRequest):
        parse.if_match(header)


def test_correlation_id_is_kept_or_generated():
    assert parse.correlation_id("abc-123") == "abc-123"
    assert uuid.UUID(parse.correlation_id(None))
    with pytest.raises(parse.BadRequest):
        parse.correlation_id("has spaces")
    with pytest.raises(parse.BadRequest):
        parse.correlation_id("x" * 129)
