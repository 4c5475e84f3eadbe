-- Lookup by email compares a keyed hash of the address (HMAC, its key in
-- Secrets Manager), not the address: the projection writes it beside the
-- email it displays. Rows written before stay findable by the address until
-- `python -m ops encrypt-events` (or a rebuild) fills in their hash.
ALTER TABLE customers_view ADD COLUMN email_hash text;
CREATE INDEX customers_view_email_hash_idx ON customers_view (email_hash) WHERE NOT deleted;
