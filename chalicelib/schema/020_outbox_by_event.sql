-- The console's timeline finds where each of a customer's events is in the
-- outbox by the event's position: without an index that is a scan of the
-- whole outbox (OUTBOX_RETENTION_HOURS of every customer's events) for each
-- timeline shown. Positions grow with each insert, so new entries go to the
-- index's rightmost page, as the primary key's do.
--
-- On a large outbox, build it by hand beforehand with CREATE INDEX
-- CONCURRENTLY (no write is held back meanwhile); this finds it.
CREATE INDEX IF NOT EXISTS outbox_global_position_idx ON outbox (global_position);
