-- The order readers of the whole store go by (the catch-up feed, backfills):
-- (transaction_id, global_position), where transaction_id is the id of the
-- transaction that wrote the event, raised where needed to the stream's
-- previous event's, so that a stream's events keep their version order.
--
-- Why not global_position alone: positions are handed out at insert and
-- commit out of order, so a reader that has passed position P can still see
-- an event below P appear. With transaction ids there is a safe horizon:
-- every transaction below pg_snapshot_xmin(pg_current_snapshot()) has ended,
-- and every event still to come has a transaction_id at or above it (its own
-- transaction is still running or has not begun; a raised one is raised to a
-- transaction that committed after it began). What lies below the horizon
-- never changes.
--
-- Events stored before this migration are all committed: they take 0, and
-- keep their position order among themselves. xid8 and pg_current_xact_id()
-- exist since PostgreSQL 13.
ALTER TABLE events ADD COLUMN transaction_id xid8 NOT NULL DEFAULT '0';
ALTER TABLE events ALTER COLUMN transaction_id SET DEFAULT pg_current_xact_id();

-- On a store of many millions of events, build it by hand beforehand with
-- CREATE INDEX CONCURRENTLY (no write is held back meanwhile); this finds it.
CREATE INDEX IF NOT EXISTS events_commit_order_idx ON events (transaction_id, global_position);
