-- The newest snapshot of each stream, written in the same statement as the
-- events it sums up. `schema_version` is the shape of `state`: a snapshot of
-- a shape the code no longer reads is ignored (the events are replayed), so
-- changing an aggregate's state never needs a data migration.
CREATE TABLE snapshots (
    stream_id      uuid        PRIMARY KEY,
    stream_type    text        NOT NULL,
    version        integer     NOT NULL CHECK (version > 0),
    schema_version integer     NOT NULL CHECK (schema_version > 0),
    state          jsonb       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
