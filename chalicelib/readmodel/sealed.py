"""The read model's rows with their personal data (the Customer's declared
personal state) sealed under the customer's key on the way into the table,
opened on the way out. Bound to the customer and the field, not to a
version: a value the projection did not change is kept as it is stored.
The email's keyed hash, which lookups compare, is taken before sealing."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from chalicelib.personal.sealing import PersonalData, StreamKeys
from chalicelib.readmodel.rows import CustomerRow

# Seals a row about to be written; the second argument is the row it replaces, if any.
SealRow = Callable[[CustomerRow, CustomerRow | None], CustomerRow]
# Opens a row read from the table.
OpenRow = Callable[[CustomerRow], CustomerRow]
# Looks up, in one statement, what sealing these customers' rows needs
# (their keys); run in the round trip that reads the rows.
Prefetch = Callable[[list[uuid.UUID]], None]


def no_prefetch(customer_ids: list[uuid.UUID]) -> None:
    """Where rows are not sealed: nothing to look up."""


def sealer(personal: PersonalData, keys: StreamKeys) -> SealRow:
    fields = personal.declared.state

    def seal_row(row: CustomerRow, before: CustomerRow | None) -> CustomerRow:
        email_hash = (personal.email_hash(row.email) if isinstance(row.email, str)
                      else before.email_hash if before is not None else None)
        values: dict[str, Any] = {field: getattr(row, field) for field in fields}
        if any(isinstance(value, str) for value in values.values()):
            key = keys.key_for(row.id)
            if key is not None:  # none: stored in clear until `python -m ops encrypt-events`
                values = personal.seal(key, "read-model", row.id, None, values, fields)
        return _with(row, values, email_hash)

    return seal_row


def opener(personal: PersonalData, keys: StreamKeys) -> OpenRow:
    fields = personal.declared.state

    def open_row(row: CustomerRow) -> CustomerRow:
        """The row with its personal data readable (None once erased)."""
        values, _ = personal.open(keys.key_for(row.id), "read-model", row.id, None,
                                  {field: getattr(row, field) for field in fields}, fields)
        return _with(row, values, row.email_hash)

    return open_row


def plain(row: CustomerRow, before: CustomerRow | None = None) -> CustomerRow:
    """Where personal data is not encrypted: as it is, no hash."""
    return row


def _with(row: CustomerRow, values: dict[str, Any], email_hash: str | None) -> CustomerRow:
    return CustomerRow(row.id, values.get("name", row.name), values.get("email", row.email), row.version, row.deleted,
                       row.created_at, row.updated_at, email_hash, row.erased)
