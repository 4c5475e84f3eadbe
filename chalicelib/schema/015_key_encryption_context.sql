-- The encryption context KMS wrapped each key-encryption key under, which
-- it must be given again to unwrap it. NULL for keys made before one was
-- required: `python -m ops rewrap-keys` re-encrypts them with it.
ALTER TABLE key_encryption_keys ADD COLUMN encryption_context jsonb;
