-- Sync runs: every piece of sync work an operator or a schedule can name (a Sync Now, a per-user
-- or per-group sync, a rules apply, a reconcile; live notification rounds add up into one live
-- run per tenant and hour). A run is created when the work is asked for, so the asker gets its id
-- at once; the workers move its status and add to its counts.
--
-- Not tied to tenants by a foreign key: offboarding deletes a tenant's rows explicitly, and a run
-- may be recorded for a tenant whose configuration is being written in the same breath.
CREATE TABLE sync_runs (
    run_id       uuid        PRIMARY KEY,
    tenant_id    uuid        NOT NULL,
    -- What was asked: 'sync_now', 'user_sync', 'group_sync', 'rules_apply', 'reconcile', 'live'.
    kind         text        NOT NULL CHECK (kind ~ '^[a-z][a-z_]{0,31}$'),
    -- The bus cause its commands carry (cardsync_proto::Cause::as_str).
    cause        text        NOT NULL CHECK (cause ~ '^[a-z][a-z_]{0,31}$'),
    -- Who asked: a token's subject, 'schedule' or 'system'.
    started_by   text        NOT NULL CHECK (length(started_by) BETWEEN 1 AND 256),
    -- The run's target when it is narrower than the tenant (a user id, a group id).
    target       text        NULL CHECK (target IS NULL OR length(target) BETWEEN 1 AND 256),
    status       text        NOT NULL DEFAULT 'queued'
                             CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'held', 'rejected')),
    -- Why it failed, was held or rejected, for operators (never a secret).
    detail       text        NULL CHECK (detail IS NULL OR length(detail) <= 4096),
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz NULL,
    finished_at  timestamptz NULL,
    CHECK (finished_at IS NULL OR status IN ('succeeded', 'failed', 'rejected'))
);

CREATE INDEX sync_runs_by_tenant ON sync_runs (tenant_id, created_at DESC, run_id);
CREATE INDEX sync_runs_unfinished ON sync_runs (status) WHERE finished_at IS NULL;

-- A run's counts, one row per name: card outcomes ('created', 'updated', 'linked',
-- 'deactivated', 'reactivated', 'deleted', 'photos_updated', 'unchanged'), 'unannounced' (changes
-- no notification had announced) and 'error:<reason>'. Separate rows per name keep concurrent
-- writers (several card-writer batches of one run) from queueing on one row.
CREATE TABLE sync_run_counts (
    run_id uuid   NOT NULL REFERENCES sync_runs (run_id) ON DELETE CASCADE,
    name   text   NOT NULL CHECK (name ~ '^[a-z][a-z0-9_:]{0,63}$'),
    count  bigint NOT NULL DEFAULT 0 CHECK (count >= 0),
    PRIMARY KEY (run_id, name)
);
