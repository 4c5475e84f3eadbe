"""The read model's rows with their personal data (the Customer's declared
personal state) sealed under the customer's key on the way into the table,
opened on the way out. Bound to the customer and the field, not to a
version: a value the projection did not change is kept as it is stored.
The email's keyed hash, which lookups compare, is taken before sealing."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from chalicelib.infra.db import TransactionConnection
from chalicelib.personal.sealing import PersonalData
from chalicelib.readmodel.rows import CustomerRow

# Seals a row about to be written; `before` is the row it replaces, if any.
SealRow = Callable[[psycopg.Connection, CustomerRow, CustomerRow | None], CustomerRow]


def sealer(personal: PersonalData) -> SealRow:
    fields = personal.declared.state

    def seal_row(conn: psycopg.Connection, row: CustomerRow, before: CustomerRow | None) -> CustomerRow:
        email_hash = (personal.email_hash(row.email) if isinstance(row.email, str)
                      else before.email_hash if before is not None else None)
        values = {field: getattr(row, field) for field in fields}
        if any(isinstance(value, str) for value in values.values()):
            key = personal.keys.key_for(row.id, TransactionConnection(conn).connection)
            if key is not None:  # a customer from before encryption has none: `ops encrypt-events`
                values = personal.seal(key, "read-model", row.id, None, values, fields)
        return _with(row, values, email_hash)

    return seal_row


def plain(conn: psycopg.Connection, row: CustomerRow, before: CustomerRow | None) -> CustomerRow:
    """Where personal data is not encrypted: as it is, no hash."""
    return row


def opened(personal: PersonalData | None, row: CustomerRow, connect) -> CustomerRow:
    """The row with its personal data readable (None once erased)."""
    if personal is None:
        return row
    fields = personal.declared.state
    values, _ = personal.open("read-model", row.id, None, {field: getattr(row, field) for field in fields}, fields,
                              connect)
    return _with(row, values, row.email_hash)


def _with(row: CustomerRow, values: dict, email_hash: str | None) -> CustomerRow:
    return CustomerRow(row.id, values.get("name", row.name), values.get("email", row.email), row.version, row.deleted,
                       row.created_at, row.updated_at, email_hash, row.erased)
