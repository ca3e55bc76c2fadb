-- Run digests: who a run added and removed, and the bookkeeping that lets every command of a run
-- be accounted for once, applied or dead-lettered. Additive: older binaries ignore all three.

-- The people a run added (cards created or reactivated) and removed (deactivated or deleted),
-- written in the card-writer's transaction that made the change. Bounded: at most a few dozen
-- per run and direction (the exact totals are the run's counts); a person at most once per run
-- and direction, so a redelivered command never names anyone twice. Goes with its run
-- (retention, offboarding) by the foreign key.
CREATE TABLE sync_run_people (
    run_id      uuid        NOT NULL REFERENCES sync_runs (run_id) ON DELETE CASCADE,
    direction   text        NOT NULL CHECK (direction IN ('added', 'removed')),
    user_id     text        NOT NULL CHECK (length(user_id) BETWEEN 1 AND 1024),
    -- The outcome that added or removed them: created, reactivated, deactivated, deleted.
    change      text        NOT NULL CHECK (change IN ('created', 'reactivated', 'deactivated', 'deleted')),
    card_id     uuid        NOT NULL,
    name        text        NULL,
    email       text        NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, direction, user_id)
);

-- The commands of a run that were dead-lettered (or dropped for an unknown tenant), by message:
-- the card-writer adds 'error:<reason>' to the run only when it inserts the row here, in the same
-- transaction, so a message delivered again before its dead-lettering completed counts once.
CREATE TABLE sync_run_failed_commands (
    run_id      uuid        NOT NULL REFERENCES sync_runs (run_id) ON DELETE CASCADE,
    -- The command's message id (or a hash of its body when it has none).
    message_key text        NOT NULL CHECK (length(message_key) BETWEEN 1 AND 256),
    reason      text        NOT NULL CHECK (reason ~ '^[a-z][a-z0-9_]{0,57}$'),
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, message_key)
);

-- The daily digests of live runs already put in the outbox, one per tenant and UTC day.
CREATE TABLE live_digests (
    tenant_id uuid        NOT NULL,
    day       date        NOT NULL,
    sent_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, day)
);

-- `reconciler due` looks for the UTC days of live runs that are over and not announced yet.
CREATE INDEX sync_runs_live_by_hour ON sync_runs (scheduled_for) WHERE kind = 'live';
