-- An Idempotency-Key now remembers what its command left (the customer's
-- state and version), from which the API shapes the same answer again,
-- rather than the HTTP response itself; and the request hash is taken over
-- the command rather than the raw HTTP request. Keys stored before this
-- cannot match a hash taken the new way: a retry with one of them answers
-- 422 until it expires (IDEMPOTENCY_TTL_HOURS), never runs twice.
ALTER TABLE idempotency_keys ADD COLUMN result jsonb;
ALTER TABLE idempotency_keys DROP COLUMN status, DROP COLUMN body, DROP COLUMN headers;
