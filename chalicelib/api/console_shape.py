"""The console's answers: its use cases' dataclasses as JSON (times in ISO
8601, ids as text), and its page's security headers."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from typing import Any

from chalice import Response


def plain(value: Any) -> Any:
    """`value` with every dataclass, time and id made JSON."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def answer(value: Any, status_code: int = 200) -> Response:
    """Never cached: it shows the state of the moment, personal data maybe."""
    return Response(body=plain(value), status_code=status_code, headers={"Cache-Control": "no-store"})


def policy(token_url: str | None) -> str:
    """Script, style and data from the API itself only, no inline script; the
    token is fetched from the issuer's token endpoint."""
    issuer = ""
    if token_url:
        scheme, _, rest = token_url.partition("://")
        issuer = f" {scheme}://{rest.split('/', 1)[0]}"
    return ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
            f"connect-src 'self'{issuer}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def page(content: str, content_type: str, token_url: str | None, max_age: int) -> Response:
    return Response(body=content, headers={
        "Content-Type": content_type, "Cache-Control": f"max-age={max_age}",
        "Content-Security-Policy": policy(token_url), "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"})
