-- Cards' field states, audit rows' field states and outbox headers become `json` instead of
-- `jsonb`. PostgreSQL never looks inside them: the card-writer reads and writes them whole. As
-- `jsonb`, every write parsed the text into jsonb's binary form and every read printed it back
-- to text; `json` only checks that the text is JSON and keeps it as sent. On the card-writer's
-- benchmark this took about a sixth of PostgreSQL's CPU per command away (BENCHMARKS.md).
-- The CHECK constraints that used jsonb functions get their json equivalents.
ALTER TABLE cards DROP CONSTRAINT cards_fields_check, DROP CONSTRAINT cards_check;
ALTER TABLE cards ALTER COLUMN fields DROP DEFAULT;
ALTER TABLE cards ALTER COLUMN fields TYPE json USING fields::json;
ALTER TABLE cards ALTER COLUMN fields SET DEFAULT '{}'::json;
ALTER TABLE cards
    ADD CONSTRAINT cards_fields_check CHECK (json_typeof(fields) = 'object'),
    -- A tombstone keeps no personal data; the writer stores its empty fields as exactly `{}`.
    ADD CONSTRAINT cards_check
        CHECK (status <> 'deleted' OR (email IS NULL AND uid IS NULL AND fields::text = '{}'));
ALTER TABLE audit_log
    ALTER COLUMN fields_before TYPE json USING fields_before::json,
    ALTER COLUMN fields_after TYPE json USING fields_after::json;
ALTER TABLE outbox ALTER COLUMN headers DROP DEFAULT;
ALTER TABLE outbox ALTER COLUMN headers TYPE json USING headers::json;
ALTER TABLE outbox ALTER COLUMN headers SET DEFAULT '{}'::json;
