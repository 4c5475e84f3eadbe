-- Backfills: the stored events republished to a consumer's topic, so that a
-- service that starts consuming late gets the whole history. Each row is
-- one backfill and its checkpoint: the position (migration 017's commit
-- order) of the last event the broker acknowledged. A backfill sends every
-- event of the transactions below end_transaction (every transaction begun
-- before it was asked for); the live topic carries the rest.
CREATE TABLE backfills (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic                 text        NOT NULL,
    -- What it sends: everything, or one customer's, some types', from a position on.
    stream_id             uuid,
    event_types           text[]      NOT NULL DEFAULT '{}',
    after_global_position bigint,
    end_transaction       xid8        NOT NULL,
    rate_limit            integer     CHECK (rate_limit > 0),  -- events per second; NULL: as fast as it goes
    -- waiting: for the transactions begun before it to end; running; done;
    -- failed: an event it cannot send (`error` says which); resumed by hand.
    state                 text        NOT NULL DEFAULT 'waiting'
                          CHECK (state IN ('waiting', 'running', 'done', 'failed')),
    total                 bigint,     -- counted once it stops waiting
    sent                  bigint      NOT NULL DEFAULT 0,
    at_transaction        xid8        NOT NULL DEFAULT '0',
    at_position           bigint      NOT NULL DEFAULT 0,
    error                 text,
    requested_by          text,
    created_at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at           timestamptz
);

CREATE INDEX backfills_unfinished_idx ON backfills (id) WHERE state IN ('waiting', 'running');
