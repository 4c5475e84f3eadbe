-- Where personal data is not encrypted (no KMS_KEY_ID), lookups by email
-- compare the address itself: an index for them. Only rows whose email is
-- a plain string are in it; a sealed email (an object) never is, so with
-- encryption the index stays empty and no address sits in it. Named as
-- PostgreSQL names an expression index, the name a rebuild's copy gets.
CREATE INDEX customers_view_expr_idx ON customers_view ((email #>> '{}'))
    WHERE NOT deleted AND jsonb_typeof(email) = 'string';
