-- The reconciler's bookkeeping on sync runs (additive: older binaries ignore both columns).
--
-- heartbeat_at: renewed while a worker runs the run. A redelivered request takes over a run
-- whose heartbeat stopped (its worker was killed); `reconciler due` fails a run whose heartbeat
-- stopped long ago, so no run stays "running" for ever.
--
-- scheduled_for: the schedule occurrence a scheduled run was enqueued for. One run per tenant,
-- kind and occurrence, however many `reconciler due` jobs overlap.
ALTER TABLE sync_runs ADD COLUMN heartbeat_at timestamptz NULL;
ALTER TABLE sync_runs ADD COLUMN scheduled_for timestamptz NULL;
CREATE UNIQUE INDEX sync_runs_by_occurrence ON sync_runs (tenant_id, kind, scheduled_for)
    WHERE scheduled_for IS NOT NULL;
