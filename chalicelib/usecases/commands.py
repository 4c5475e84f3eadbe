"""Commands: load the customer, let it decide, append what it recorded;
each at most once per Idempotency-Key.

A write that lost the race for its stream reloads and decides again, a
bounded number of times, so no update is ever lost and none is applied to a
state it was not decided on. Under an Idempotency-Key, the key's row, the
events and the result commit in one transaction (chalicelib.idempotency):
a retry with the same key and request gets the first result again.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chalicelib import idempotency
from chalicelib.domain.commands import ChangeEmail, CreateCustomer, DeleteCustomer
from chalicelib.domain.customer import Customer, registry
from chalicelib.domain.errors import CustomerAlreadyExists, DomainError, StaleVersion
from chalicelib.eventstore.errors import ConcurrencyError, ReservationTaken, RetriesExhausted
from chalicelib.eventstore.events import CommandContext
from chalicelib.eventstore.store import EventStore, Repository, retry_on_conflict
from chalicelib.infra import metrics
from chalicelib.infra.db import TransactionConnection
from chalicelib.infra.logs import log

if TYPE_CHECKING:
    import psycopg

    from chalicelib.bootstrap import Bootstrap

Command = CreateCustomer | ChangeEmail | DeleteCustomer


class CustomerCommands:
    """The Customer's command handlers, on one event store (the container's,
    or one inside a transaction)."""

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
    `replayed` when an Idempotency-Key's earlier result is given again."""

    customer: dict[str, Any]
    replayed: bool = False

    @property
    def customer_id(self) -> str:
        return self.customer["id"]

    @property
    def version(self) -> int:
        return self.customer["version"]


# For each command: what an Idempotency-Key's fingerprint names (its label and
# fields, as stored by earlier releases), its handler and its log line.
_COMMANDS: dict[type, tuple[str, tuple[str, ...], Callable, str]] = {
    CreateCustomer: ("create", ("name", "email"), CustomerCommands.create, "customer_created"),
    ChangeEmail: ("change_email", ("customer_id", "email", "expected_version"), CustomerCommands.change_email,
                  "customer_email_changed"),
    DeleteCustomer: ("delete", ("customer_id", "expected_version"), CustomerCommands.delete, "customer_deleted"),
}


def execute(parts: Bootstrap, command: Command, context: CommandContext,
            idempotency_key: str | None = None) -> CommandResult:
    """Run the command (once per Idempotency-Key), count its outcome, log it."""
    label, fields, handle, logged = _COMMANDS[type(command)]
    fingerprint = [label, *(getattr(command, name) for name in fields)]
    try:
        result = _once(parts, lambda commands: handle(commands, command, context), context, idempotency_key,
                       fingerprint)
    except (RetriesExhausted, ConcurrencyError, CustomerAlreadyExists):
        metrics.count("CommandConflicts")
        raise
    except (DomainError, ReservationTaken, idempotency.KeyReused):
        metrics.count("CommandsRejected")
        raise
    metrics.count("CommandsSucceeded")
    if result.replayed:
        metrics.count("IdempotentReplays")
    log(logged, customer_id=result.customer_id, version=result.version, replayed=result.replayed)
    return result


def _once(parts: Bootstrap, run: Callable[[CustomerCommands], Customer], context: CommandContext,
          idempotency_key: str | None, fingerprint: list) -> CommandResult:
    if idempotency_key is None:
        return CommandResult(run(parts.commands()).to_dict())

    def in_the_keys_transaction(conn: psycopg.Connection) -> dict:
        # The command's events join the key's transaction.
        return run(parts.commands(parts.store_in(conn))).to_dict()

    # Keys are the caller's own: two callers using the same key do not meet.
    actor = context.actor or {}
    scoped_key = json.dumps([actor.get("subject"), actor.get("client_id"), idempotency_key])
    personal = parts.personal_data()
    sealing = {} if personal is None else {  # the stored answer holds the customer's personal data
        "seal": lambda conn, answer: personal.seal_answer(answer, TransactionConnection(conn).connection),
        "open_stored": lambda conn, answer: personal.open_answer(answer, TransactionConnection(conn).connection)}
    stored, replayed = idempotency.run_once(parts.connections(), scoped_key, idempotency.request_hash(fingerprint),
                                            parts.settings.idempotency_ttl_hours * 3600, in_the_keys_transaction,
                                            **sealing)
    return CommandResult(stored, replayed)
