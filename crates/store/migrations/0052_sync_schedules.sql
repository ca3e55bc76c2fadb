-- Reconcile schedules of their own, per tenant and per group. A tenant without a tenant-wide row
-- here runs the default schedule, a full reconcile daily at 00:00 UTC; deleting its row brings
-- the default back, and pausing the row is how a tenant has no scheduled reconcile at all.
--
-- Not tied to tenants by a foreign key, like sync_runs: offboarding deletes a tenant's rows.
CREATE TABLE sync_schedules (
    tenant_id       uuid        NOT NULL,
    -- The group whose (nested) members a run covers; '' is the whole tenant.
    group_id        text        NOT NULL DEFAULT ''
                                CHECK (group_id = '' OR (group_id ~ '^[A-Za-z0-9-]+$' AND length(group_id) <= 256)),
    cadence         text        NOT NULL CHECK (cadence IN ('daily', 'weekly', 'monthly', 'quarterly')),
    -- ISO weekday, Monday 1 to Sunday 7: weekly schedules only.
    weekday         smallint    NULL CHECK (weekday BETWEEN 1 AND 7),
    -- Monthly and quarterly schedules only; a month without that day runs on its last day.
    day_of_month    smallint    NULL CHECK (day_of_month BETWEEN 1 AND 31),
    -- The local time of day, in minutes after midnight.
    minute_of_day   smallint    NOT NULL DEFAULT 0 CHECK (minute_of_day BETWEEN 0 AND 1439),
    -- An IANA time zone name, as the time zone database spells it.
    time_zone       text        NOT NULL DEFAULT 'UTC' CHECK (length(time_zone) BETWEEN 1 AND 64),
    paused_at       timestamptz NULL,
    -- Occurrences before this (the last change or resume) are never run: changing or resuming
    -- a schedule does not run what it missed.
    effective_from  timestamptz NOT NULL DEFAULT now(),
    -- The latest occurrence enqueued. `reconciler due` moves it forward in the transaction
    -- that records the occurrence's run, so overlapping jobs enqueue an occurrence once.
    last_occurrence timestamptz NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    updated_by      text        NOT NULL CHECK (length(updated_by) BETWEEN 1 AND 256),
    PRIMARY KEY (tenant_id, group_id),
    CHECK ((cadence = 'weekly') = (weekday IS NOT NULL)),
    CHECK ((cadence IN ('monthly', 'quarterly')) = (day_of_month IS NOT NULL))
);
