-- The relay deletes an outbox row in the transaction that publishes it, instead of marking it
-- published and purging it an hour later: a delete leaves one dead tuple, where the mark wrote a
-- new row version and an entry in every index, and at thousands of events a second an hour of
-- published rows is millions of rows nobody reads. Card events are kept where they are consumed;
-- the audit log keeps the history of every card.
--
-- Stop card-writers older than this migration before it runs: their relay reads published_at.
DELETE FROM outbox WHERE published_at IS NOT NULL;
DROP INDEX IF EXISTS outbox_unpublished;
DROP INDEX IF EXISTS outbox_published;
ALTER TABLE outbox DROP COLUMN published_at;
COMMENT ON TABLE outbox IS 'Card events not yet published: the relay deletes each row in the transaction that publishes it';
