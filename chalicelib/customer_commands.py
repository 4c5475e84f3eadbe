"""The Customer's command handlers: load the customer, let it decide, append
what it recorded.

Each write retries a bounded number of times when another writer appended to
the same stream first; each retry reloads and decides again, so no update is
ever lost and none is applied to a state it was not decided on.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from chalicelib.domain.commands import ChangeEmail, CreateCustomer, DeleteCustomer
from chalicelib.domain.customer import Customer, registry
from chalicelib.domain.errors import StaleVersion
from chalicelib.eventstore.events import CommandContext
from chalicelib.eventstore.store import EventStore, Repository, retry_on_conflict


class CustomerCommands:
    """Runs commands against one event store (a pool, or one transaction)."""

    def __init__(self, store: EventStore, max_retries: int = 5, snapshot_every: int | None = None,
                 on_retry: Callable[[], None] = lambda: None) -> None:
        self._customers = Repository(store, registry, Customer, snapshot_every=snapshot_every)
        self._max_retries = max_retries
        self._on_retry = on_retry

    def get(self, customer_id: uuid.UUID) -> Customer:
        customer = self._customers.get(customer_id)
        customer.ensure_exists()
        return customer

    def create(self, command: CreateCustomer, context: CommandContext) -> Customer:
        customer = Customer()
        customer.create(command.customer_id, command.name, command.email)
        # A fresh id cannot race; a ConcurrencyError here means the id was
        # reused, which retrying would not cure.
        self._customers.save(customer, context)
        return customer

    def change_email(self, command: ChangeEmail, context: CommandContext) -> Customer:
        def attempt() -> Customer:
            customer = self._load_for_update(command.customer_id, command.expected_version)
            customer.change_email(command.email)
            self._customers.save(customer, context)
            return customer

        return retry_on_conflict(attempt, self._max_retries, self._on_retry)

    def delete(self, command: DeleteCustomer, context: CommandContext) -> Customer:
        def attempt() -> Customer:
            customer = self._load_for_update(command.customer_id, command.expected_version)
            customer.delete()
            self._customers.save(customer, context)
            return customer

        return retry_on_conflict(attempt, self._max_retries, self._on_retry)

    def erase_personal_data(self, customer_id: uuid.UUID, context: CommandContext) -> tuple[Customer, bool]:
        """The customer after erasure, and whether this call erased anything."""
        def attempt() -> tuple[Customer, bool]:
            customer = self._customers.get(customer_id)
            erased = customer.erase_personal_data()
            self._customers.save(customer, context)
            return customer, erased

        return retry_on_conflict(attempt, self._max_retries, self._on_retry)

    def _load_for_update(self, customer_id: uuid.UUID, expected_version: int | None) -> Customer:
        customer = self._customers.get(customer_id)
        customer.ensure_exists()
        if expected_version is not None and customer.version != expected_version:
            raise StaleVersion(expected_version, customer.version)
        return customer

