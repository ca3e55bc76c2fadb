-- When a run's worker finished emitting its card commands (and recorded how many in the
-- 'commands' count). From then on the run waits for the card-writer: it ends, succeeded, when
-- the outcomes its commands were applied or dead-lettered with add up to that count. Additive:
-- older binaries ignore it.
ALTER TABLE sync_runs ADD COLUMN emitted_at timestamptz NULL;
