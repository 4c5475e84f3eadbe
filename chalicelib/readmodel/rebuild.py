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
from chalicelib.eventstore.postgres import PostgresEventStore, one, recorded_event_row
from chalicelib.infra.logs import log
from chalicelib.personal.sealing import PersonalData, StreamKeys
from chalicelib.readmodel import sealed
from chalicelib.readmodel.projection import TABLE, ProjectedEvent, project

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
            chunk: int = 5000, personal: PersonalData | None = None) -> RebuildResult:
    """With `personal`, each event's personal data is opened (it is stored
    sealed) and sealed again for the table. One customer whose events cannot
    be read is left out and reported; the rebuild goes on."""
    unreadable: dict[uuid.UUID, str] = {}

    with connect(autocommit=True) as writer:
        store = PostgresEventStore(writer)
        # Personal data: keys looked up on the writer (outside the reader's
        # snapshot: a key erased since is not found), anew for each chunk
        # (memory stays flat however many customers).
        sealing = _Sealing(personal, writer)

        def readable(recorded: list[RecordedEvent]) -> list[ProjectedEvent]:
            sealing.prefetch(recorded)
            events = []
            for r in recorded:
                if r.stream_id in unreadable:
                    continue
                try:
                    events.append(ProjectedEvent.from_recorded(sealing.open_event(r)))
                except Exception as error:  # noqa: BLE001 - any event this code cannot read: reported, not fatal
                    unreadable[r.stream_id] = f"v{r.version} {r.event_type}: {type(error).__name__}: {error}"[:300]
                    log("rebuild_unreadable_customer", level="error", customer_id=str(r.stream_id),
                        error=unreadable[r.stream_id])
            return [e for e in events if e.customer_id not in unreadable]

        def load_after(customer_id: uuid.UUID, version: int) -> list[ProjectedEvent]:
            return readable(store.load(customer_id, after_version=version))

        writer.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(NEXT)))
        writer.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
            sql.Identifier(NEXT), sql.Identifier(TABLE)))

        done = 0
        with connect() as reader:
            reader.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            reader.read_only = True
            with reader.transaction():
                total = one(reader.execute("SELECT count(*) FROM events WHERE stream_type = %s",
                                           (Customer.stream_type,)))
                progress(0, total)
                with reader.cursor(name="rebuild_customers", row_factory=recorded_event_row) as cursor:
                    cursor.itersize = chunk
                    cursor.execute(_EVENTS, (Customer.stream_type,))
                    while rows := cursor.fetchmany(chunk):
                        sealing.next_chunk()
                        project(writer, readable(rows), load_after, table=NEXT, seal_row=sealing.seal_row)
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
                project(writer, load_after(customer_id, version), load_after, table=NEXT, seal_row=sealing.seal_row)
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
            rows = one(writer.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(TABLE))))
    return RebuildResult(events=done, caught_up=len(behind), rows=rows, unreadable=unreadable)


class _Sealing:
    def __init__(self, personal: PersonalData | None, conn: psycopg.Connection) -> None:
        self._personal = personal
        self._conn = conn
        self.next_chunk()

    def next_chunk(self) -> None:
        personal = self._personal
        if personal is None:
            self._keys = None
            self.seal_row: sealed.SealRow = sealed.plain
        else:
            self._keys = StreamKeys(personal.keys, self._conn)
            self.seal_row = sealed.sealer(personal, self._keys)

    def prefetch(self, recorded: list[RecordedEvent]) -> None:
        if self._keys is not None:
            self._keys.prefetch(sorted({r.stream_id for r in recorded}))

    def open_event(self, recorded: RecordedEvent) -> RecordedEvent:
        if self._personal is None or self._keys is None:
            return recorded
        return self._personal.open_recorded(recorded, self._keys.key_for(recorded.stream_id))
