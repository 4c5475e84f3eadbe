"""The right to erasure, and its re-application after a restore.

Erasure is first recorded in the erasure log, outside the database
(chalicelib.personal.erasure_log); then, in one transaction, it appends the
erasure event (published, so that consumers delete their copies) and
deletes the customer's data key, which makes every stored copy of its
personal data unreadable; it seals what was stored in clear (so that
deleting the key reaches it too), releases the email, and drops what holds
the data apart from the events: snapshots, stored Idempotency-Key answers,
the read-model row. A backup taken before holds the key; restored, the
erasures the log holds are made again (`reapply_erasures`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from chalicelib import idempotency
from chalicelib.domain.errors import CustomerNotFound
from chalicelib.eventstore import postgres
from chalicelib.eventstore.errors import ConcurrencyError, RetriesExhausted
from chalicelib.eventstore.events import CommandContext
from chalicelib.infra import metrics
from chalicelib.infra.logs import log
from chalicelib.infra.settings import ConfigurationError
from chalicelib.personal.erasure_log import ErasureLog
from chalicelib.personal.keyring import delete_key
from chalicelib.readmodel import projection
from chalicelib.usecases.commands import CustomerCommands
from chalicelib.usecases.plaintext import seal_stream
from chalicelib.usecases.unit_of_work import PostgresUnitsOfWork


def erase_personal_data(customer_id: uuid.UUID, context: CommandContext, *, units: PostgresUnitsOfWork,
                        erasure_log: ErasureLog, max_retries: int, record: bool = True) -> bool:
    """Erase the customer's personal data, wherever this service keeps it,
    in one transaction, once the erasure log holds it (ErasureNotRecorded
    when it cannot: nothing is erased then). False when it was erased
    already."""
    if units.personal is None:
        raise ConfigurationError("KMS_KEY_ID is not set: personal data is stored in clear, so it cannot be"
                                 " erased; `make run` and the template set it")
    if record:
        with units.reading() as unit:
            if not unit.events.load(customer_id, limit=1):
                raise CustomerNotFound(f"customer {customer_id} not found")  # nothing to record
        erasure_log.record(customer_id, context.correlation_id)
    with units.begin(transaction=True) as unit:
        try:
            customer, erased = CustomerCommands(unit.customers, max_retries).erase_personal_data(customer_id, context)
        except (RetriesExhausted, ConcurrencyError):
            metrics.count("CommandConflicts")
            raise
        personal, keys = unit.sealing()
        seal_stream(unit.conn, personal, keys, customer_id)
        delete_key(unit.conn, customer_id)
        postgres.release_reservations(unit.conn, customer_id)
        postgres.delete_snapshots(unit.conn, customer_id)
        idempotency.forget_results_of(unit.conn, customer_id)
        projection.erase(unit.conn, customer_id, customer.version)
    personal.keys.forget(customer_id)
    metrics.count("CommandsSucceeded")
    log("customer_personal_data_erased", customer_id=str(customer_id), version=customer.version, already=not erased)
    return erased


@dataclass
class ReapplyResult:
    erased: list[uuid.UUID] = field(default_factory=list)  # their erasure was undone by a restore: made again
    already: int = 0  # erased in this database as it is
    missing: list[uuid.UUID] = field(default_factory=list)  # not in this database (created after the backup)
    not_customers: list[str] = field(default_factory=list)  # objects of the log that name no customer


def reapply_erasures(*, units: PostgresUnitsOfWork, erasure_log: ErasureLog, max_retries: int) -> ReapplyResult:
    """Make again every erasure the erasure log holds that this database does
    not (restored from a backup taken before them). Idempotent: an erasure
    in place is left as it is."""
    result = ReapplyResult()
    for customer_id in erasure_log.customers():
        if not isinstance(customer_id, uuid.UUID):
            result.not_customers.append(customer_id)
            continue
        context = CommandContext(correlation_id=str(uuid.uuid4()), causation_id="reapply-erasures",
                                 actor={"subject": "python -m ops reapply-erasures", "client_id": None})
        try:
            erased = erase_personal_data(customer_id, context, units=units, erasure_log=erasure_log,
                                         max_retries=max_retries, record=False)
        except CustomerNotFound:
            result.missing.append(customer_id)
            continue
        if erased:
            result.erased.append(customer_id)
        else:
            result.already += 1
    log("erasures_reapplied", erased=len(result.erased), already=result.already, missing=len(result.missing))
    return result
