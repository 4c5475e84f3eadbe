-- Personal data is stored encrypted, with a key of each customer's own
-- (crypto-shredding): deleting that key makes every copy unreadable, in
-- events, snapshots and backups alike, without rewriting an event.
--
-- A customer's data key is random, made by the service, and stored only
-- wrapped (AES-GCM) by a key-encryption key. Key-encryption keys come from
-- KMS (GenerateDataKey under KMS_KEY_ID) and are stored only as KMS wrapped
-- them; a container unwraps one with a single KMS call and then serves every
-- customer whose key it wraps.
CREATE TABLE key_encryption_keys (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kms_key_id  text        NOT NULL,
    wrapped     bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE stream_keys (
    stream_id   uuid        PRIMARY KEY,
    kek_id      bigint      NOT NULL REFERENCES key_encryption_keys (id),
    wrapped_key bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- An erased customer's row keeps its id and versions, not its name or email.
ALTER TABLE customers_view ALTER COLUMN name DROP NOT NULL, ALTER COLUMN email DROP NOT NULL;
