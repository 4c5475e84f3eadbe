"""Personal data: the right to erasure, its re-application after a restore,
and the sealing of personal data stored in clear before it was encrypted.

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
from typing import TYPE_CHECKING

import psycopg

from chalicelib import idempotency
from chalicelib.domain.errors import CustomerNotFound
from chalicelib.eventstore import postgres
from chalicelib.eventstore.errors import ConcurrencyError, RetriesExhausted
from chalicelib.infra import db, metrics
from chalicelib.infra.logs import log
from chalicelib.personal.cipher import open_legacy
from chalicelib.personal.email_hash import is_hashed
from chalicelib.personal.keyring import delete_key
from chalicelib.personal.sealing import PersonalData
from chalicelib.readmodel import projection, sealed

if TYPE_CHECKING:
    from chalicelib.bootstrap import Bootstrap
    from chalicelib.eventstore.events import CommandContext
    from chalicelib.readmodel.rebuild import Progress


def erase_personal_data(parts: Bootstrap, customer_id: uuid.UUID, context: CommandContext, *,
                        record: bool = True) -> bool:
    """Erase the customer's personal data, wherever this service keeps it,
    in one transaction, once the erasure log holds it (ErasureNotRecorded
    when it cannot: nothing is erased then). False when it was erased
    already."""
    parts.settings.require_kms()
    erasure_log = parts.erasure_log()
    personal = parts.personal_data()
    if record:
        if not parts.store().load(customer_id, limit=1):
            raise CustomerNotFound(f"customer {customer_id} not found")  # nothing to record
        erasure_log.record(customer_id, context.correlation_id)
    with parts.connections().connection() as conn, conn.transaction():
        try:
            customer, erased = parts.commands(parts.store_in(conn)).erase_personal_data(customer_id, context)
        except (RetriesExhausted, ConcurrencyError):
            metrics.count("CommandConflicts")
            raise
        _seal_stream(conn, personal, customer_id)
        delete_key(conn, customer_id)
        postgres.release_reservations(conn, customer_id)
        postgres.delete_snapshots(conn, customer_id)
        idempotency.forget_results_of(conn, customer_id)
        projection.erase(conn, customer_id, customer.version)
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


def reapply_erasures(parts: Bootstrap) -> ReapplyResult:
    """Make again every erasure the erasure log holds that this database does
    not (restored from a backup taken before them). Idempotent: an erasure
    in place is left as it is."""
    from chalicelib.eventstore.events import CommandContext

    result = ReapplyResult()
    for customer_id in parts.erasure_log().customers():
        if not isinstance(customer_id, uuid.UUID):
            result.not_customers.append(customer_id)
            continue
        context = CommandContext(correlation_id=str(uuid.uuid4()), causation_id="reapply-erasures",
                                 actor={"subject": "python -m ops reapply-erasures", "client_id": None})
        try:
            erased = erase_personal_data(parts, customer_id, context, record=False)
        except CustomerNotFound:
            result.missing.append(customer_id)
            continue
        if erased:
            result.erased.append(customer_id)
        else:
            result.already += 1
    log("erasures_reapplied", erased=len(result.erased), already=result.already, missing=len(result.missing))
    return result


def seal_stored_plaintext(parts: Bootstrap, progress: Progress = lambda done, total: None, chunk: int = 200) -> int:
    """Seal the personal data of events stored in clear (before it was
    encrypted) or sealed by the first release (as text): the one sanctioned
    rewrite of stored events. Customer by customer, each
    in a transaction of its own (its key made, its events' personal fields
    sealed, its plaintext snapshot dropped, its email reservation hashed), so
    that it can be stopped and run again at any time; what is done already
    is skipped. Returns how many customers it changed."""
    parts.settings.require_kms()
    personal = parts.personal_data()
    fields = personal.declared.event_fields
    done = 0
    with parts.database().direct().connect(autocommit=True) as conn:
        total = postgres.count_streams_with_text_in(conn, fields)
        progress(0, total)
        after = None
        while streams := postgres.streams_with_text_in(conn, fields, after=after, limit=chunk):
            for stream_id in streams:
                with conn.transaction():
                    _seal_stream(conn, personal, stream_id)
                done += 1
                progress(done, total)
            after = streams[-1]
    log("stored_events_encrypted", customers=done)
    return done


def _seal_stream(conn: psycopg.Connection, personal: PersonalData, stream_id: uuid.UUID) -> None:
    connect = db.TransactionConnection(conn).connection
    key = personal.keys.key_for(stream_id, connect)
    if key is None:
        key, wrapped = personal.keys.new_key(stream_id)
        personal.keys.store(conn, stream_id, wrapped)
        personal.keys.forget(stream_id)
        key = personal.keys.key_for(stream_id, connect)  # whoever stored one first
    declared = personal.declared
    for position, version, event_type, data in postgres.event_data_for_update(conn, stream_id, list(declared.events)):
        fields = declared.events[event_type]
        # Text sealed by the first release is opened (it then reads as its
        # plaintext); any other text is what was stored in clear.
        plain = {**data, **{field: opened for field in fields if isinstance(data.get(field), str)
                            and (opened := open_legacy(key, stream_id, field, data[field])) is not None}}
        resealed = personal.seal(key, "event", stream_id, version, plain, fields)
        if resealed != data:
            postgres.replace_event_data(conn, position, resealed)
    postgres.delete_snapshots(conn, stream_id)
    for scope in declared.reservations:
        postgres.rekey_reservations(conn, stream_id, scope,
                                    lambda key: None if is_hashed(key) else personal.email_hash(key))
    projection.seal_row_in_clear(conn, stream_id, sealed.sealer(personal))  # and findable by its hash
