"""Turning HTTP requests into command inputs, with messages a person can act on.

Everything here raises BadRequest with the exact reason; nothing is stored
before a request has passed through these checks.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chalicelib.eventstore.feed import Position

_CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# ASCII digits only: str.isdigit() also accepts "²" and other digits that
# int() then refuses.
_DIGITS = re.compile(r"[0-9]{1,9}")
_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# PostgreSQL's text and jsonb refuse NUL, and UTF-8 has no lone surrogates.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# What an error message echoes of the input, at most.
_ECHO_LIMIT = 60
_NAMES_LISTED = 5


class BadRequest(ValueError):
    pass


def quoted(raw: object) -> str:
    """The input as an error message shows it: repr, cut to a readable length."""
    text = repr(raw)
    return text if len(text) <= _ECHO_LIMIT else text[:_ECHO_LIMIT - 4] + "...'"


def json_object(raw_body: bytes | str | None, fields: dict[str, type],
                optional: dict[str, type] | None = None) -> dict[str, Any]:
    """The body as a JSON object with exactly these fields of these types,
    and perhaps some of the `optional` ones."""
    optional = optional or {}
    if not raw_body:
        raise BadRequest(f"the request body must be a JSON object with {_list(fields)}")
    try:
        body = json.loads(raw_body.decode("utf-8") if isinstance(raw_body, bytes) else raw_body)
    except UnicodeDecodeError:
        raise BadRequest("the request body is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise BadRequest(f"the request body is not valid JSON: {error}") from None
    except RecursionError:
        raise BadRequest("the request body is nested too deeply to be the JSON object asked for") from None
    if not isinstance(body, dict):
        raise BadRequest(f"the request body must be a JSON object, not {_json_type(body)}")
    unknown = sorted(set(body) - set(fields) - set(optional))
    if unknown:
        listed = ", ".join(name if len(name) <= _ECHO_LIMIT else name[:_ECHO_LIMIT - 3] + "..."
                           for name in unknown[:_NAMES_LISTED])
        more = f" and {len(unknown) - _NAMES_LISTED} more" if len(unknown) > _NAMES_LISTED else ""
        expected_too = f", and perhaps {_list(optional)}" if optional else ""
        raise BadRequest(f"unknown field(s): {listed}{more}; expected {_list(fields)}{expected_too}")
    missing = [name for name in fields if name not in body]
    if missing:
        raise BadRequest(f"missing field(s): {', '.join(missing)}")
    for name, expected in {**fields, **{k: t for k, t in optional.items() if k in body}}.items():
        if not isinstance(body[name], expected):
            raise BadRequest(
                f"{name} must be a {_json_type_name(expected)}, not {_json_type(body[name])}"
            )
        if expected is str and _UNSTORABLE.search(body[name]):
            raise BadRequest(f"{name} must not contain NUL characters or unpaired surrogates (\\u0000, \\ud800)")
    return body


def customer_id(raw: str) -> uuid.UUID:
    """A customer id in its canonical form (36 characters, with hyphens)."""
    if not _CANONICAL_UUID.fullmatch(raw):
        raise BadRequest(f"{quoted(raw)} is not a customer id (a UUID such as 123e4567-e89b-12d3-a456-426614174000)")
    return uuid.UUID(raw)


def if_match(header: str | None) -> int | None:
    """The version named by If-Match ("3", or * for any), None when absent."""
    if header is None or header.strip() == "*":
        return None
    value = header.strip()
    if value.startswith('"') and value.endswith('"') and len(value) >= 2:
        value = value[1:-1]
    if not _DIGITS.fullmatch(value):
        raise BadRequest(f'If-Match must be a version in quotes, such as "3", not {quoted(header)}')
    return int(value)


def whole_number(raw: str | None, name: str, *, minimum: int, maximum: int = 999_999_999) -> int | None:
    """A query parameter that is a whole number within bounds; None when absent."""
    if raw is None:
        return None
    if not _DIGITS.fullmatch(raw) or not minimum <= int(raw) <= maximum:
        raise BadRequest(f"{name} must be a whole number from {minimum} to {maximum}, not {quoted(raw)}")
    return int(raw)


def version(raw: str | None, name: str = "version") -> int | None:
    return whole_number(raw, name, minimum=1)


def as_of(raw: str | None) -> datetime | None:
    """An RFC 3339 time with its offset, e.g. 2026-11-26T22:00:00Z."""
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise BadRequest(
            f"as_of must be an RFC 3339 time with an offset, such as 2026-11-26T22:00:00Z, not {quoted(raw)}")
    return moment


def strong(consistency: str | None) -> bool:
    """Whether `consistency` ('strong' or 'eventual', the default) asks for strong."""
    if consistency is None or consistency == "eventual":
        return False
    if consistency == "strong":
        return True
    raise BadRequest(f"consistency must be 'strong' or 'eventual', not {quoted(consistency)}")


def idempotency_key(header: str) -> str:
    key = header.strip()
    if not 1 <= len(key) <= 255 or not key.isprintable():
        raise BadRequest("Idempotency-Key must be 1 to 255 printable characters, such as a UUID")
    return key


def feed_position(raw: str | None) -> Position:
    """Where the catch-up feed goes on from: a position a page gave (the start without one)."""
    from chalicelib.eventstore.feed import START, BadPosition, Position

    if raw is None:
        return START
    try:
        return Position.parse(raw)
    except BadPosition as error:
        raise BadRequest(f"after: {error}") from None


def message_id(raw: str) -> str:
    """An SQS message id (a dead letter's)."""
    if not re.fullmatch(r"[A-Za-z0-9-]{1,100}", raw or ""):
        raise BadRequest(f"not a dead letter's message id: {quoted(raw)}")
    return raw


def correlation_id(header: str | None) -> str:
    if header is None or header == "":
        return str(uuid.uuid4())
    if not _CORRELATION_ID.match(header):
        raise BadRequest(
            "X-Correlation-Id must be 1 to 128 characters of letters, digits and . _ : -"
        )
    return header


def _list(fields: dict[str, type]) -> str:
    return ", ".join(f"{name} ({_json_type_name(t)})" for name, t in fields.items())


def _json_type_name(t: type) -> str:
    return {str: "string", int: "number", bool: "boolean", dict: "object", list: "array"}.get(t, t.__name__)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
