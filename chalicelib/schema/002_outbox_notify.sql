-- Wake the relay when outbox rows commit, so an event leaves within
-- milliseconds instead of waiting for the next scheduled run. One
-- notification per statement; PostgreSQL delivers it at commit and folds
-- duplicates within a transaction.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- For pruning rows published long ago.
CREATE INDEX outbox_published_at_idx ON outbox (published_at) WHERE published_at IS NOT NULL;
