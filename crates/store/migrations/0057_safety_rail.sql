-- The mass-change safety rail. A round whose plan would deactivate or delete, or update, more
-- than a tenant-set share of the tenant's active cards is held before any card command is sent:
-- its commands are kept here, its run is 'held', and the tenant is paused until an admin
-- approves (exactly the kept commands are sent) or rejects (nothing is sent; the tenant stays
-- paused until resumed). Not tied to tenants by a foreign key, like sync_runs.

-- Per tenant: the thresholds (a missing row means the defaults) and whether it is paused.
CREATE TABLE tenant_safety (
    tenant_id       uuid        PRIMARY KEY,
    -- Hold when deactivations + deletions exceed this percentage of the active cards.
    removal_percent real        NOT NULL DEFAULT 10 CHECK (removal_percent >= 0 AND removal_percent <= 100),
    -- Hold when field updates exceed this percentage of the active cards.
    update_percent  real        NOT NULL DEFAULT 50 CHECK (update_percent >= 0 AND update_percent <= 100),
    -- Below this many removals (or updates) nothing is held, whatever the share.
    minimum         integer     NOT NULL DEFAULT 10 CHECK (minimum >= 1),
    -- Set while the tenant is paused: by a held run, kept after its rejection until a resume.
    paused_at       timestamptz NULL,
    -- The held (or rejected) run that paused the tenant.
    paused_by_run   uuid        NULL,
    -- A round was asked for while the tenant was paused: one runs on resume.
    round_pending   boolean     NOT NULL DEFAULT false,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    updated_by      text        NOT NULL DEFAULT 'system' CHECK (length(updated_by) BETWEEN 1 AND 256)
);

-- The plan of a held run: what it would change and why (JSON for operators), and where its
-- commands go when approved.
CREATE TABLE held_plans (
    run_id      uuid        PRIMARY KEY REFERENCES sync_runs (run_id) ON DELETE CASCADE,
    tenant_id   uuid        NOT NULL,
    -- The commands' routing: 'bulk' or 'live'.
    lane        text        NOT NULL CHECK (lane IN ('bulk', 'live')),
    summary     jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    decided_at  timestamptz NULL,
    decided_by  text        NULL CHECK (decided_by IS NULL OR length(decided_by) BETWEEN 1 AND 256)
);

CREATE INDEX held_plans_by_tenant ON held_plans (tenant_id, created_at DESC);

-- The card commands of a held run, exactly as they would have been sent (encoded CardCommand,
-- with their per-user versions), in order. Deleted once sent or rejected.
CREATE TABLE held_commands (
    run_id   uuid   NOT NULL REFERENCES held_plans (run_id) ON DELETE CASCADE,
    seq      bigint NOT NULL,
    user_id  text   NOT NULL,
    version  bigint NOT NULL,
    action   text   NOT NULL CHECK (action ~ '^[a-z]{1,16}$'),
    command  bytea  NOT NULL,
    PRIMARY KEY (run_id, seq)
);

-- Named runs asked for while their tenant was paused: the request is published again on resume.
CREATE TABLE parked_requests (
    run_id      uuid        PRIMARY KEY,
    tenant_id   uuid        NOT NULL,
    -- 'delta' (the delta-worker's requests) or 'reconcile' (the reconciler's).
    worker      text        NOT NULL CHECK (worker IN ('delta', 'reconcile')),
    request     bytea       NOT NULL,
    parked_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX parked_requests_by_tenant ON parked_requests (tenant_id, parked_at);
