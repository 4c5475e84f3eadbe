-- The outbox split for relays that run side by side (RELAY_SHARDS). Each
-- row falls in one of 32 buckets, by its stream id (the last byte of a
-- random UUID), so a customer's rows share a bucket forever. A relay shard
-- takes the buckets b with b % RELAY_SHARDS = its shard, each under an
-- advisory lock of its own: a bucket is drained by one relay at a time, in
-- id order, whatever shard count each relay was started with. Changing the
-- shard count moves whole buckets between relays, never a customer's rows
-- between two relays at once.
ALTER TABLE outbox ADD COLUMN bucket smallint NOT NULL
    GENERATED ALWAYS AS (get_byte(uuid_send(stream_id), 15) % 32) STORED;

CREATE INDEX outbox_unpublished_bucket_idx ON outbox (bucket, id) WHERE published_at IS NULL;

-- Writers wake the relay of their bucket only, and only while it sleeps:
-- it then holds that bucket's sleep lock (7413021000 + bucket) exclusively.
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock_shared(7413021000 + NEW.bucket) THEN
        PERFORM pg_notify('outbox_' || NEW.bucket, '');
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER outbox_notify ON outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION outbox_notify();
