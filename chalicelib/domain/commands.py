"""Commands: what a caller asks the Customer service to do."""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class CreateCustomer:
    name: str
    email: str
    customer_id: uuid.UUID


@dataclass(frozen=True)
class ChangeEmail:
    customer_id: uuid.UUID
    email: str
    expected_version: int | None = None


@dataclass(frozen=True)
class DeleteCustomer:
    customer_id: uuid.UUID
    expected_version: int | None = None
