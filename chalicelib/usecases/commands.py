"""Commands: load the customer, let it decide, append what it recorded;
each at most once per Idempotency-Key.

A write that lost the race for its stream reloads and decides again, a
bounded number of times, so no update is ever lost and none is applied to a
state it was not decided on. Under an Idempotency-Key, the key's row, the
events and the answer commit in one transaction (the unit of work's).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chalicelib import idempotency
from chalicelib.domain.commands import ChangeEmail, CreateCustomer, DeleteCustomer
from chalicelib.domain.customer import Customer
from chalicelib.domain.errors import CustomerAlreadyExists, DomainError, StaleVersion
from chalicelib.eventstore.errors import ConcurrencyError, ReservationTaken, RetriesExhausted
from chalicelib.eventstore.events import CommandContext
from chalicelib.eventstore.store import Repository, retry_on_conflict
from chalicelib.infra import metrics
from chalicelib.infra.logs import log
from chalicelib.usecases.unit_of_work import UnitOfWork, UnitsOfWork

Command = CreateCustomer | ChangeEmail | DeleteCustomer


class CustomerCommands:
    """The Customer's command handlers, on the customers of one unit of work."""

    def __init__(self, customers: Repository[Customer], max_retries: int = 5,
                 on_retry: Callable[[], None] = lambda: None) -> None:
        self._customers = customers
        self._max_retries = max_retries
        self._on_retry = on_retry

    def get(self, customer_id: uuid.UUID) -> Customer:
        customer = self._customers.get(customer_id)
        customer.ensure_exists()
        return customer

    def create(self, command: CreateCustomer, context: CommandContext) -> Customer:
        customer = Customer()
        customer.create(command.customer_id, command.name, command.email)
        try:
            self._customers.save(customer, context)
        except ConcurrencyError:
            # A fresh id cannot race: the id was used before, which retrying would not cure.
            raise CustomerAlreadyExists(f"customer {command.customer_id} already exists") from None
        return customer

    def change_email(self, command: ChangeEmail, context: CommandContext) -> Customer:
        return self._update(command.customer_id, command.expected_version, lambda c: c.change_email(command.email),
                            context)

    def delete(self, command: DeleteCustomer, context: CommandContext) -> Customer:
        return self._update(command.customer_id, command.expected_version, Customer.delete, context)

    def erase_personal_data(self, customer_id: uuid.UUID, context: CommandContext) -> tuple[Customer, bool]:
        """The customer after erasure, and whether this call erased anything."""
        def attempt() -> tuple[Customer, bool]:
            customer = self._customers.get(customer_id)
            erased = customer.erase_personal_data()
            self._customers.save(customer, context)
            return customer, erased

        return retry_on_conflict(attempt, self._max_retries, self._on_retry)

    def _update(self, customer_id: uuid.UUID, expected_version: int | None, decide: Callable[[Customer], None],
                context: CommandContext) -> Customer:
        def attempt() -> Customer:
            customer = self._customers.get(customer_id)
            customer.ensure_exists()
            if expected_version is not None and customer.version != expected_version:
                raise StaleVersion(expected_version, customer.version)
            decide(customer)
            self._customers.save(customer, context)
            return customer

        return retry_on_conflict(attempt, self._max_retries, self._on_retry)


@dataclass(frozen=True)
class CommandResult:
    """What a command left: the customer's state at its new version.
    `replayed` when an Idempotency-Key's earlier answer is given again."""

    customer: dict[str, Any]
    replayed: bool = False

    @property
    def customer_id(self) -> str:
        id_: str = self.customer["id"]
        return id_

    @property
    def version(self) -> int:
        version: int = self.customer["version"]
        return version


def _decide(commands: CustomerCommands, command: Command, context: CommandContext) -> Customer:
    match command:
        case CreateCustomer():
            return commands.create(command, context)
        case ChangeEmail():
            return commands.change_email(command, context)
        case DeleteCustomer():
            return commands.delete(command, context)


# For each command: what an Idempotency-Key's fingerprint names (its label
# and fields; changing them would let a retry under a key stored before run
# the command again) and its log line.
_COMMANDS: dict[type, tuple[str, tuple[str, ...], str]] = {
    CreateCustomer: ("create", ("name", "email"), "customer_created"),
    ChangeEmail: ("change_email", ("customer_id", "email", "expected_version"), "customer_email_changed"),
    DeleteCustomer: ("delete", ("customer_id", "expected_version"), "customer_deleted"),
}


def execute(command: Command, context: CommandContext, idempotency_key: str | None = None, *,
            units: UnitsOfWork, max_retries: int) -> CommandResult:
    """Run the command in a unit of work of its own (once per
    Idempotency-Key), count its outcome, log it."""
    try:
        with units.begin(transaction=idempotency_key is not None) as unit:
            result = _run(unit, command, context, idempotency_key, max_retries)
    except (RetriesExhausted, ConcurrencyError, CustomerAlreadyExists):
        metrics.count("CommandConflicts")
        raise
    except (DomainError, ReservationTaken, idempotency.KeyReused):
        metrics.count("CommandsRejected")
        raise
    metrics.count("CommandsSucceeded")
    if result.replayed:
        metrics.count("IdempotentReplays")
    log(_COMMANDS[type(command)][2], customer_id=result.customer_id, version=result.version,
        replayed=result.replayed)
    return result


def _run(unit: UnitOfWork, command: Command, context: CommandContext, idempotency_key: str | None,
         max_retries: int) -> CommandResult:
    key = None
    if idempotency_key is not None:
        # Keys are the caller's own: two callers using the same key do not meet.
        actor = context.actor or {}
        key = json.dumps([actor.get("subject"), actor.get("client_id"), idempotency_key])
        label, fields, _ = _COMMANDS[type(command)]
        stored = unit.answered(key, idempotency.request_hash([label, *(getattr(command, name) for name in fields)]))
        if stored is not None:
            return CommandResult(stored, replayed=True)
    commands = CustomerCommands(unit.customers, max_retries, lambda: metrics.count("CommandRetries"))
    answer = _decide(commands, command, context).to_dict()
    if key is not None:
        unit.keep_answer(key, answer)
    return CommandResult(answer)
