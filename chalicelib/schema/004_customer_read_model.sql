-- The customer read model, kept by the projection function from Kafka.
-- A deleted customer stays as a tombstone (deleted = true, not listed), so
-- that a late duplicate of an older event cannot bring it back.
CREATE TABLE customers_view (
    id           uuid        PRIMARY KEY,
    name         text        NOT NULL,
    email        text        NOT NULL,
    version      integer     NOT NULL,
    deleted      boolean     NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    -- When the projection wrote the row: the read side's lag, for operators.
    projected_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX customers_view_email_idx ON customers_view (email) WHERE NOT deleted;
