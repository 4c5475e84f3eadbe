-- Whether a customer's personal data was erased is said by the row, as the
-- aggregate says it, rather than guessed from a missing name. Rows erased
-- before this are the tombstones erasure left: deleted, no name, no email.
ALTER TABLE customers_view ADD COLUMN erased boolean NOT NULL DEFAULT false;
UPDATE customers_view SET erased = true WHERE deleted AND name IS NULL AND email IS NULL;
