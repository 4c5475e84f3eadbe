-- NOTIFY is costly under concurrent writers: PostgreSQL serializes the
-- commits of notifying transactions (a database-wide lock held through the
-- WAL flush), which defeats group commit. Notify only when it is needed: when
-- the relay sleeps. The relay holds advisory lock 7413020003 exclusively
-- while it sleeps; a writer that cannot take it shared knows the relay is
-- asleep (or about to be) and notifies. A writer that can take it holds it
-- until its own commit, so a relay that goes to sleep waits for that commit
-- and then sees the row. See chalicelib/eventstore/outbox.py.
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock_shared(7413020003) THEN
        PERFORM pg_notify('outbox', '');
    END IF;
    RETURN NULL;
END
$$;
