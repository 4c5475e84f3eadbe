-- The relay's claim walks the rows ready to publish in id order, and checks
-- each against the parked rows of its stream. Both lookups must stay index
-- walks whatever the table's statistics say: the outbox is usually nearly
-- empty when autovacuum analyzes it, and a backlog builds (a broker outage)
-- faster than autovacuum analyzes it again. With an index on every unpublished
-- row, a planner that believes the backlog is empty may check parked rows by
-- walking that index for each claimed row: the whole backlog, 500 times a
-- batch. Indexes on the ready rows only leave the parked-row check one index
-- to use, outbox_parked_idx, which holds the parked rows alone.
CREATE INDEX outbox_ready_idx ON outbox (id) WHERE published_at IS NULL AND parked_at IS NULL;
CREATE INDEX outbox_ready_bucket_idx ON outbox (bucket, id) WHERE published_at IS NULL AND parked_at IS NULL;
DROP INDEX outbox_unpublished_idx;
DROP INDEX outbox_unpublished_bucket_idx;
