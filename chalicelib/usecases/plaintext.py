"""Personal data stored in clear: by a deployment that ran before KMS_KEY_ID
was set, or sealed by the service's first format, text `pd1:<base64>`
(bound to the stream and the field only). Nothing else reads either form:
`python -m ops encrypt-events` seals them as every value is sealed now, the
one sanctioned rewrite of stored events, and an erasure seals what is left
of them first, so that deleting the key reaches every copy.
"""

from __future__ import annotations

import binascii
import uuid
from typing import Any

import psycopg

from chalicelib.eventstore import postgres
from chalicelib.infra.db import Database
from chalicelib.infra.logs import log
from chalicelib.personal.cipher import NONCE_BYTES, Cipher
from chalicelib.personal.email_hash import is_hashed
from chalicelib.personal.sealing import PersonalData, StreamKeys
from chalicelib.readmodel import projection, sealed
from chalicelib.readmodel.rebuild import Progress

FIRST_FORMAT_PREFIX = "pd1:"


def seal_stored_plaintext(progress: Progress = lambda done, total: None, chunk: int = 200, *, database: Database,
                          personal: PersonalData) -> int:
    """Seal the personal data of events stored in clear or in the first
    format. Customer by customer, each in a transaction of its own (its key
    made, its events' personal fields sealed, its plaintext snapshot
    dropped, its email reservation hashed), so that it can be stopped and
    run again at any time; what is done already is skipped. Returns how many
    customers it changed."""
    fields = personal.declared.event_fields
    done = 0
    with database.connect(autocommit=True) as conn:
        total = postgres.count_streams_with_text_in(conn, fields)
        progress(0, total)
        after = None
        while streams := postgres.streams_with_text_in(conn, fields, after=after, limit=chunk):
            for stream_id in streams:
                with conn.transaction():
                    seal_stream(conn, personal, StreamKeys(personal.keys, conn), stream_id)
                done += 1
                progress(done, total)
            after = streams[-1]
    log("stored_events_encrypted", customers=done)
    return done


def seal_stream(conn: psycopg.Connection, personal: PersonalData, keys: StreamKeys, stream_id: uuid.UUID) -> None:
    """In the caller's transaction: the stream's personal data stored as
    text sealed, its snapshots (which may hold it in clear) dropped, its
    reservations hashed, its read-model row sealed."""
    key = keys.key_for(stream_id)
    if key is None:
        _, wrapped = keys.new_key(stream_id)
        keys.ring.store(conn, stream_id, wrapped)
        keys.forget(stream_id)
        key = keys.key_for(stream_id)  # whoever stored one first
        if key is None:
            raise LookupError(f"customer {stream_id}: its key was stored and is not found")
    declared = personal.declared
    for position, version, event_type, data in postgres.event_data_for_update(conn, stream_id, list(declared.events)):
        fields = declared.events[event_type]
        plain = {**data, **{field: opened for field in fields if isinstance(data.get(field), str)
                            and (opened := _open_first_format(key, stream_id, field, data[field])) is not None}}
        resealed = personal.seal(key, "event", stream_id, version, plain, fields)
        if resealed != data:
            postgres.replace_event_data(conn, position, resealed)
    postgres.delete_snapshots(conn, stream_id)
    for scope in declared.reservations:
        postgres.rekey_reservations(conn, stream_id, scope,
                                    lambda value: None if is_hashed(value) else personal.email_hash(value))
    projection.seal_row_in_clear(conn, stream_id, sealed.sealer(personal, keys))  # and findable by its hash


def _open_first_format(key: Cipher, stream_id: uuid.UUID, field: str, value: str) -> str | None:
    """A value sealed in the first format, opened; None when it is not one
    (text stored in clear that only looks so, say a caller's name)."""
    from cryptography.exceptions import InvalidTag

    if not value.startswith(FIRST_FORMAT_PREFIX):
        return None
    try:
        raw = binascii.a2b_base64(value[len(FIRST_FORMAT_PREFIX):])
        if len(raw) <= NONCE_BYTES:
            return None
        opened: Any = key.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], f"{stream_id}:{field}".encode())
        return str(opened.decode())
    except (binascii.Error, ValueError, InvalidTag):
        return None
