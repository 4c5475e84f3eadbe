"""The customer read model's table and its rows."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import datetime

from chalicelib.eventstore.rows import dataclass_row

TABLE = "customers_view"


# A personal value as the table holds it: sealed (a JSON object), or text
# where personal data is not encrypted; None once erased.
Personal = str | dict[str, str] | None


@dataclass(frozen=True)
class CustomerRow:
    id: uuid.UUID
    name: Personal
    email: Personal
    version: int
    deleted: bool
    created_at: datetime
    updated_at: datetime
    email_hash: str | None = None  # what lookup by email compares, with personal data encrypted
    erased: bool = False  # its personal data erased (it is deleted too)


COLUMNS = ", ".join(field.name for field in dataclasses.fields(CustomerRow))
customer_row = dataclass_row(CustomerRow)
