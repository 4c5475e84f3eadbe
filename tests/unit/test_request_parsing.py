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


# Any input gives a value or BadRequest, never another exception.

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)


def parses_or_refuses(parse_function, *args, **kwargs):
    try:
        parse_function(*args, **kwargs)
    except parse.BadRequest as error:
        assert len(str(error)) < 600  # what it echoes stays short


@settings(max_examples=300)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_body_bytes(raw):
    parses_or_refuses(parse.json_object, raw, {"name": str, "email": str})


@settings(max_examples=300)
@given(json_values | st.fixed_dictionaries({"name": st.text(), "email": st.text()}))
def test_any_json_body(value):
    import json

    raw = json.dumps(value).encode()
    try:
        body = parse.json_object(raw, {"name": str, "email": str})
    except parse.BadRequest:
        return
    for text in body.values():  # what passes can be stored by PostgreSQL
        assert "\x00" not in text and not any(0xD800 <= ord(c) <= 0xDFFF for c in text)


@settings(max_examples=300)
@given(st.text(max_size=60))
def test_any_text_in_each_header_and_parameter(raw):
    parses_or_refuses(parse.customer_id, raw)
    parses_or_refuses(parse.if_match, raw)
    parses_or_refuses(parse.version, raw)
    parses_or_refuses(parse.whole_number, raw, "after", minimum=0)
    parses_or_refuses(parse.as_of, raw)
    parses_or_refuses(parse.strong, raw)
    parses_or_refuses(parse.idempotency_key, raw)
    parses_or_refuses(parse.correlation_id, raw)


@given(st.uuids())
def test_every_canonical_uuid_is_an_id(value):
    assert parse.customer_id(str(value)) == value
    assert parse.customer_id(str(value).upper()) == value
