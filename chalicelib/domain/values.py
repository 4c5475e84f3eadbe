"""A customer's values as the rules accept them: a name, an email."""

from __future__ import annotations

import re

from chalicelib.domain.errors import InvalidValue

MAX_NAME_LENGTH = 200
MAX_EMAIL_LENGTH = 254  # RFC 5321 path limit, less the angle brackets
MAX_LOCAL_PART_LENGTH = 64

# Pragmatic syntax check: what mail systems accept in practice (dot-atom
# local part, dotted domain of letters, digits and hyphens), not the full
# RFC 5322 grammar with quoted strings and comments.
_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"^({_LOCAL})@({_LABEL}(?:\.{_LABEL})+)$")


def valid_name(name: str) -> str:
    stripped = name.strip()
    if not stripped:
        raise InvalidValue("name", "must not be empty")
    if len(stripped) > MAX_NAME_LENGTH:
        raise InvalidValue("name", f"must be at most {MAX_NAME_LENGTH} characters")
    return stripped


def valid_email(email: str) -> str:
    """The email as stored: domain in lower case (domains are case-insensitive,
    local parts are not), surrounding blanks refused rather than guessed at."""
    if len(email) > MAX_EMAIL_LENGTH:
        raise InvalidValue("email", f"must be at most {MAX_EMAIL_LENGTH} characters")
    match = _EMAIL.match(email)
    if not match:
        raise InvalidValue("email", f"{email!r} is not a valid email address")
    local, domain = match.groups()
    if len(local) > MAX_LOCAL_PART_LENGTH:
        raise InvalidValue("email", f"the part before @ must be at most {MAX_LOCAL_PART_LENGTH} characters")
    return f"{local}@{domain.lower()}"
