-- Values that must be unique among live aggregates (a live customer's
-- email), reserved and released in the same transaction as the events that
-- take or give them up. The primary key makes two reservations of one value
-- impossible, also when two commands race.
CREATE TABLE reservations (
    scope       text        NOT NULL,
    key         text        NOT NULL,
    owner       uuid        NOT NULL,
    reserved_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (scope, key)
);

CREATE INDEX reservations_owner_idx ON reservations (owner);

-- Customers that exist already reserve their current email. Should two
-- live customers share one, the first keeps it; the other can still change
-- its email, and nobody new can take it.
WITH latest AS (
    SELECT DISTINCT ON (stream_id) stream_id, event_type, data->>'email' AS email
    FROM events WHERE stream_type = 'Customer'
    ORDER BY stream_id, version DESC
)
INSERT INTO reservations (scope, key, owner)
SELECT 'customer-email', email, stream_id FROM latest
WHERE event_type <> 'CustomerDeleted' AND email IS NOT NULL
ON CONFLICT DO NOTHING;
