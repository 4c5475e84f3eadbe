"""Rebuild the customer read model from the event store, while it serves.

The new table is built aside from one consistent snapshot of the events,
streamed through a server-side cursor (memory stays flat however long the
history). Then, in one short transaction, projection writes are held back
(reads go on), customers the live table has seen further than the snapshot
are caught up from the store, and the tables are swapped by renaming.
Events committed after the snapshot that the live projection has not applied
yet reach the new table the ordinary way, from Kafka.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from chalicelib.domain.customer import Customer
from chalicelib.eventstore.events import RecordedEvent, recorded_event_columns
from chalicelib.eventstore.postgres import PostgresEventStore, recorded_event_row
from chalicelib.infra.db import TransactionConnection
from chalicelib.infra.logs import log
from chalicelib.readmodel.projection import TABLE, ProjectedEvent, project
from chalicelib.readmodel.sealed import SealRow, plain

NEXT = TABLE + "_next"
OLD = TABLE + "_old"

_EVENTS = f"SELECT {recorded_event_columns()} FROM events WHERE stream_type = %s ORDER BY global_position"

Progress = Callable[[int, int], None]


@dataclass
class RebuildResult:
    events: int
    caught_up: int
    rows: int
    # Customers whose events this code cannot read, with why: left out of
    # the new table (the rest is rebuilt), reported for an operator.
    unreadable: dict[uuid.UUID, str] = field(default_factory=dict)


def rebuild(connect: Callable[..., psycopg.Connection], progress: Progress = lambda done, total: None,
            chunk: int = 5000, open_event: Callable[[RecordedEvent], RecordedEvent] = lambda event: event,
            seal_row: SealRow = plain) -> RebuildResult:
    """`open_event` makes an event's personal data readable (it is stored
    sealed); `seal_row` seals it again for the table (readmodel.sealed). One
    customer whose events cannot be read is left out and reported; the
    rebuild goes on."""
    unreadable: dict[uuid.UUID, str] = {}

    def readable(recorded: list[RecordedEvent]) -> list[ProjectedEvent]:
        events = []
        for r in recorded:
            if r.stream_id in unreadable:
                continue
            try:
                events.append(ProjectedEvent.from_recorded(open_event(r)))
            except Exception as error:  # noqa: BLE001 - any event this code cannot read: reported, not fatal
                unreadable[r.stream_id] = f"v{r.version} {r.event_type}: {type(error).__name__}: {error}"[:300]
                log("rebuild_unreadable_customer", level="error", customer_id=str(r.stream_id),
                    error=unreadable[r.stream_id])
        return [e for e in events if e.customer_id not in unreadable]

    with connect(autocommit=True) as writer:
        store = PostgresEventStore(TransactionConnection(writer))

        def load_after(customer_id, version):
            return readable(store.load(customer_id, after_version=version))

        writer.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(NEXT)))
        writer.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
            sql.Identifier(NEXT), sql.Identifier(TABLE)))

        done = 0
        with connect() as reader:
            reader.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            reader.read_only = True
            with reader.transaction():
                (total,) = reader.execute("SELECT count(*) FROM events WHERE stream_type = %s",
                                          (Customer.stream_type,)).fetchone()
                progress(0, total)
                with reader.cursor(name="rebuild_customers", row_factory=recorded_event_row) as cursor:
                    cursor.itersize = chunk
                    cursor.execute(_EVENTS, (Customer.stream_type,))
                    while rows := cursor.fetchmany(chunk):
                        project(writer, readable(rows), load_after, table=NEXT, seal_row=seal_row)
                        done += len(rows)
                        progress(done, total)

        with writer.transaction():
            # Holds back projection writes (ROW EXCLUSIVE), not reads.
            writer.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(sql.Identifier(TABLE)))
            behind = writer.execute(sql.SQL(
                "SELECT live.id, coalesce(next.version, 0) FROM {live} live LEFT JOIN {next} next USING (id)"
                " WHERE next.id IS NULL OR next.version < live.version").format(
                    live=sql.Identifier(TABLE), next=sql.Identifier(NEXT))).fetchall()
            for customer_id, version in behind:
                project(writer, load_after(customer_id, version), load_after, table=NEXT, seal_row=seal_row)
            if unreadable:  # they keep the rows the live table has
                writer.execute(sql.SQL("INSERT INTO {next} SELECT * FROM {live} WHERE id = ANY(%s)"
                                       " ON CONFLICT (id) DO NOTHING").format(
                    next=sql.Identifier(NEXT), live=sql.Identifier(TABLE)), (list(unreadable),))
            writer.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(TABLE), sql.Identifier(OLD)))
            writer.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(NEXT), sql.Identifier(TABLE)))
            writer.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(OLD)))
            indexes = writer.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s"
                                     " AND starts_with(indexname, %s)", (TABLE, NEXT)).fetchall()
            for (index,) in indexes:
                writer.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                    sql.Identifier(index), sql.Identifier(TABLE + index[len(NEXT):])))
            (rows,) = writer.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(TABLE))).fetchone()
    return RebuildResult(events=done, caught_up=len(behind), rows=rows, unreadable=unreadable)
