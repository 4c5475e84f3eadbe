-- The event store: the only source of truth.
CREATE TABLE events (
    global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id       uuid        NOT NULL,
    stream_type     text        NOT NULL,
    version         integer     NOT NULL CHECK (version > 0),
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL CHECK (schema_version > 0),
    data            jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Optimistic concurrency: two writers that both read version N cannot
    -- both append N+1; the loser gets a unique violation and retries.
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version)
);

-- One row per event, written in the same transaction as the event, so that
-- publishing to Kafka never depends on a second write from the request.
-- The relay reads "all unpublished rows in id order" (never "id > last"),
-- because identity values can commit out of order under concurrent writers.
CREATE TABLE outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    global_position bigint      NOT NULL REFERENCES events (global_position),
    stream_id       uuid        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at    timestamptz
);

CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;
