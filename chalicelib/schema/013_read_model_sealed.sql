-- The read model keeps names and emails sealed, as the events do: a column
-- holds a sealed JSON object, or a JSON string where personal data is not
-- encrypted. Rows written before hold their text until `python -m ops
-- encrypt-events` (or a rebuild) seals them. Lookups by email compare the
-- keyed hash only: the address leaves every index.
ALTER TABLE customers_view
    ALTER COLUMN name TYPE jsonb USING to_jsonb(name),
    ALTER COLUMN email TYPE jsonb USING to_jsonb(email);
DROP INDEX IF EXISTS customers_view_email_idx;

-- Stored answers to an Idempotency-Key name their customer in a column of
-- their own: erasure finds them without reading the (sealed) answer.
ALTER TABLE idempotency_keys ADD COLUMN customer_id uuid;
UPDATE idempotency_keys SET customer_id = (result->>'id')::uuid WHERE result ? 'id';
CREATE INDEX idempotency_keys_customer_id_idx ON idempotency_keys (customer_id);
