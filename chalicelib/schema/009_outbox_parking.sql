-- An outbox row that cannot become a message (an event of a shape newer
-- than the running code, metadata missing from a row inserted by hand, a
-- message over the broker's size limit) is parked with the error, instead of
-- stopping every drain. The stream's later rows wait behind it, in order,
-- until an operator retries or skips it (python -m ops outbox --parked).
ALTER TABLE outbox ADD COLUMN parked_at timestamptz, ADD COLUMN parked_error text;

-- Parked rows are few: the relay's "is this stream held back?" probe is an
-- index lookup, and costs nothing while there are none.
CREATE INDEX outbox_parked_idx ON outbox (stream_id, id) WHERE parked_at IS NOT NULL AND published_at IS NULL;
