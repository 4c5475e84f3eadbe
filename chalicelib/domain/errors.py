"""What the Customer's rules refuse: one root, DomainError. Kept apart
from the aggregate so that the API maps them to answers without loading it."""

from __future__ import annotations


class DomainError(Exception):
    """A command that the rules refuse."""


class InvalidValue(DomainError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class CustomerNotFound(DomainError):
    pass


class CustomerAlreadyExists(DomainError):
    pass


class StaleVersion(DomainError):
    """The caller decided on a version (If-Match) the customer has moved past."""

    def __init__(self, expected: int, current: int) -> None:
        super().__init__(f"expected version {expected}, but the customer is at version {current}")
        self.expected = expected
        self.current = current
