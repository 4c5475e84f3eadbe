"""Turning HTTP requests into command inputs, with messages a person can act on.

Everything here raises BadRequest with the exact reason; nothing is stored
before a request has passed through these checks.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from typing import Any

_CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class BadRequest(ValueError):
    pass


def json_object(raw_body: bytes | None, fields: dict[str, type]) -> dict[str, Any]:
    """The body as a JSON object with exactly these fields of these types."""
    if not raw_body:
        raise BadRequest(f"the request body must be a JSON object with {_list(fields)}")
    try:
        body = json.loads(raw_body.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest("the request body is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise BadRequest(f"the request body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"the request body must be a JSON object, not {_json_type(body)}")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}; expected {_list(fields)}")
    missing = [name for name in fields if name not in body]
    if missing:
        raise BadRequest(f"missing field(s): {', '.join(missing)}")
    for name, expected in fields.items():
        if not isinstance(body[name], expected):
            raise BadRequest(
                f"{name} must be a {_json_type_name(expected)}, not {_json_type(body[name])}"
            )
    return body


def customer_id(raw: str) -> uuid.UUID:
    """A customer id in its canonical form (36 characters, with hyphens)."""
    try:
        parsed = uuid.UUID(raw)
    except ValueError:
        parsed = None
    if parsed is None or len(raw) != 36:
        raise BadRequest(f"{raw!r} is not a customer id (a UUID such as 123e4567-e89b-12d3-a456-426614174000)")
    return parsed


def if_match(header: str | None) -> int | None:
    """The version named by If-Match ("3", or * for any), None when absent."""
    if header is None or header.strip() == "*":
        return None
    value = header.strip()
    if value.startswith('"') and value.endswith('"') and len(value) >= 2:
        value = value[1:-1]
    if not value.isdigit() or len(value) > 9:
        raise BadRequest(f'If-Match must be a version in quotes, such as "3", not {header!r}')
    return int(value)


def whole_number(raw: str | None, name: str, *, minimum: int, maximum: int = 999_999_999) -> int | None:
    """A query parameter that is a whole number within bounds; None when absent."""
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 9 or not minimum <= int(raw) <= maximum:
        raise BadRequest(f"{name} must be a whole number from {minimum} to {maximum}, not {raw!r}")
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
        raise BadRequest(f"as_of must be an RFC 3339 time with an offset, such as 2026-11-26T22:00:00Z, not {raw!r}")
    return moment


def consistency(raw: str | None) -> str:
    if raw is None or raw == "eventual":
        return "eventual"
    if raw == "strong":
        return "strong"
    raise BadRequest(f"consistency must be 'strong' or 'eventual', not {raw!r}")


def idempotency_key(header: str) -> str:
    key = header.strip()
    if not 1 <= len(key) <= 255 or not key.isprintable():
        raise BadRequest("Idempotency-Key must be 1 to 255 printable characters, such as a UUID")
    return key


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
