-- `GET /v1/runs` without a tenant lists the runs of every tenant (an operator's view), newest
-- first: without this index that is a scan and sort of every run ever kept.
CREATE INDEX sync_runs_by_time ON sync_runs (created_at DESC, run_id DESC);
