//! Sync runs: the one record of every piece of sync work (migration 0027). A run is created when
//! the work is asked for, moves `queued → running → succeeded | failed` (or `held`, then
//! `running` again or `rejected`), and collects counts by name from whoever does the work.
//! How runs end (and announce their digest) is in `ending`; the digests and the people a run
//! added and removed are in `digest`.

mod digest;
mod ending;

pub use digest::{DIGEST_KINDS, Digest, DigestEncoder, DigestPerson, MAX_DIGEST_PEOPLE, NewPerson};
pub use ending::{
    FailedCommand, delete_finished_before, emission_done, end, end_live_before, fail_abandoned,
    fail_unsettled, live, record_applied, record_failed,
};

use crate::StoreError;
use sqlx::{FromRow, PgExecutor};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use uuid::Uuid;

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    /// Asked for; no worker took it yet.
    Queued,
    /// A worker is doing it.
    Running,
    /// Done; every command applied or dead-lettered.
    Succeeded,
    /// Stopped by an error it could not get past.
    Failed,
    /// Stopped before writing by the mass-change safety rail, waiting for an admin.
    Held,
    /// An admin rejected the held run; nothing was written.
    Rejected,
}

impl RunStatus {
    /// The status's stable name (the column's value).
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Held => "held",
            RunStatus::Rejected => "rejected",
        }
    }

    /// The status of a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        [
            RunStatus::Queued,
            RunStatus::Running,
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Held,
            RunStatus::Rejected,
        ]
        .into_iter()
        .find(|status| status.as_str() == name)
    }

    /// Whether the run is over (it never changes again).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Rejected
        )
    }
}

/// A run to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRun {
    /// Its id (the caller's, so that it can be put on the messages of the run first).
    pub run_id: Uuid,
    /// The tenant.
    pub tenant_id: Uuid,
    /// What was asked: `sync_now`, `user_sync`, `group_sync`, `rules_apply`, `reconcile`, `live`.
    pub kind: String,
    /// The cause its commands carry (`cardsync_proto::Cause::as_str`).
    pub cause: String,
    /// Who asked: a token's subject, `schedule` or `system`.
    pub started_by: String,
    /// A narrower target: a user id or a group id.
    pub target: Option<String>,
}

/// A run as stored, with its counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// Its id.
    pub run_id: Uuid,
    /// The tenant.
    pub tenant_id: Uuid,
    /// What was asked.
    pub kind: String,
    /// The cause its commands carry.
    pub cause: String,
    /// Who asked.
    pub started_by: String,
    /// A narrower target.
    pub target: Option<String>,
    /// Where it is.
    pub status: RunStatus,
    /// Why it failed, was held or rejected.
    pub detail: Option<String>,
    /// When it was asked for.
    pub created_at: OffsetDateTime,
    /// When a worker took it.
    pub started_at: Option<OffsetDateTime>,
    /// When it ended.
    pub finished_at: Option<OffsetDateTime>,
    /// When its worker finished emitting its card commands (it then waits for the card-writer
    /// to account for every one).
    pub emitted_at: Option<OffsetDateTime>,
    /// Counts by name (outcomes, `unannounced`, `error:<reason>`).
    pub counts: BTreeMap<String, i64>,
}

#[derive(FromRow)]
struct RunRow {
    run_id: Uuid,
    tenant_id: Uuid,
    kind: String,
    cause: String,
    started_by: String,
    target: Option<String>,
    status: String,
    detail: Option<String>,
    created_at: OffsetDateTime,
    started_at: Option<OffsetDateTime>,
    finished_at: Option<OffsetDateTime>,
    emitted_at: Option<OffsetDateTime>,
}

impl RunRow {
    fn into_run(self, counts: BTreeMap<String, i64>) -> Result<Run, StoreError> {
        let status = RunStatus::parse(&self.status).ok_or_else(|| {
            StoreError::Query(sqlx::Error::Decode(
                format!("unknown run status {:?}", self.status).into(),
            ))
        })?;
        Ok(Run {
            run_id: self.run_id,
            tenant_id: self.tenant_id,
            kind: self.kind,
            cause: self.cause,
            started_by: self.started_by,
            target: self.target,
            status,
            detail: self.detail,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            emitted_at: self.emitted_at,
            counts,
        })
    }
}

/// The columns a [`RunRow`] reads, as a literal so statements stay literal SQL.
macro_rules! run_columns {
    () => {
        "run_id, tenant_id, kind, cause, started_by, target, status, detail, \
         created_at, started_at, finished_at, emitted_at"
    };
}

/// Records a new run as `queued`. Recording the same id again changes nothing (a redelivered
/// request must not make two runs).
pub async fn create(executor: impl PgExecutor<'_>, run: &NewRun) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO sync_runs (run_id, tenant_id, kind, cause, started_by, target)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (run_id) DO NOTHING",
    )
    .bind(run.run_id)
    .bind(run.tenant_id)
    .bind(&run.kind)
    .bind(&run.cause)
    .bind(&run.started_by)
    .bind(&run.target)
    .execute(executor)
    .await?;
    Ok(())
}

/// Moves an unfinished run to `status` (setting `started_at` the first time it runs and
/// `finished_at` when the status is final). A finished run never changes: returns whether the
/// run was moved. Workers end runs with [`end`], which also announces the run's digest.
pub async fn set_status(
    executor: impl PgExecutor<'_>,
    run_id: Uuid,
    status: RunStatus,
    detail: Option<&str>,
) -> Result<bool, StoreError> {
    let moved = sqlx::query(
        "UPDATE sync_runs
            SET status = $2,
                detail = coalesce($3, detail),
                started_at = CASE WHEN $2 = 'running' THEN coalesce(started_at, now())
                                  ELSE started_at END,
                finished_at = CASE WHEN $4 THEN now() ELSE NULL END
          WHERE run_id = $1 AND finished_at IS NULL",
    )
    .bind(run_id)
    .bind(status.as_str())
    .bind(detail)
    .bind(status.is_final())
    .execute(executor)
    .await?;
    Ok(moved.rows_affected() == 1)
}

/// Adds to a run's counts (names as in migration 0027; zero counts are skipped).
pub async fn add_counts(
    executor: impl PgExecutor<'_>,
    run_id: Uuid,
    counts: &[(&str, i64)],
) -> Result<(), StoreError> {
    let (names, values): (Vec<&str>, Vec<i64>) = counts
        .iter()
        .filter(|(_, count)| *count > 0)
        .copied()
        .unzip();
    if names.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO sync_run_counts (run_id, name, count)
         SELECT $1, name, count FROM unnest($2::text[], $3::bigint[]) AS c(name, count)
         ON CONFLICT (run_id, name) DO UPDATE SET count = sync_run_counts.count + EXCLUDED.count",
    )
    .bind(run_id)
    .bind(&names)
    .bind(&values)
    .execute(executor)
    .await?;
    Ok(())
}

/// One run with its counts.
pub async fn get(
    executor: impl PgExecutor<'_> + Copy,
    run_id: Uuid,
) -> Result<Option<Run>, StoreError> {
    let row = sqlx::query_as::<_, RunRow>(concat!(
        "SELECT ",
        run_columns!(),
        " FROM sync_runs WHERE run_id = $1"
    ))
    .bind(run_id)
    .fetch_optional(executor)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let counts = counts_of(executor, &[run_id]).await?;
    Ok(Some(row.into_run(
        counts.get(&run_id).cloned().unwrap_or_default(),
    )?))
}

/// A tenant's runs, newest first, at most `limit`, those created before `before` when given
/// (cursor paging: pass the last run's `created_at` and id).
pub async fn list(
    executor: impl PgExecutor<'_> + Copy,
    tenant_id: Uuid,
    before: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
) -> Result<Vec<Run>, StoreError> {
    list_with_status(executor, tenant_id, None, before, limit).await
}

/// [`list`], only the runs with `status` when given (the held runs, say).
pub async fn list_with_status(
    executor: impl PgExecutor<'_> + Copy,
    tenant_id: Uuid,
    status: Option<RunStatus>,
    before: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
) -> Result<Vec<Run>, StoreError> {
    list_of(
        executor,
        Some(std::slice::from_ref(&tenant_id)),
        status,
        before,
        limit,
    )
    .await
}

/// The runs of `tenants` (`None`: of every tenant), only those with `status` when given,
/// newest first, paged as [`list`].
pub async fn list_of(
    executor: impl PgExecutor<'_> + Copy,
    tenants: Option<&[Uuid]>,
    status: Option<RunStatus>,
    before: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
) -> Result<Vec<Run>, StoreError> {
    let (at, id) = before.unzip();
    let rows = sqlx::query_as::<_, RunRow>(concat!(
        "SELECT ",
        run_columns!(),
        " FROM sync_runs
          WHERE ($1::uuid[] IS NULL OR tenant_id = ANY($1))
            AND ($2::timestamptz IS NULL OR (created_at, run_id) < ($2, $3))
            AND ($5::text IS NULL OR status = $5)
          ORDER BY created_at DESC, run_id DESC
          LIMIT $4"
    ))
    .bind(tenants)
    .bind(at)
    .bind(id)
    .bind(limit)
    .bind(status.map(RunStatus::as_str))
    .fetch_all(executor)
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|row| row.run_id).collect();
    let mut counts = counts_of(executor, &ids).await?;
    rows.into_iter()
        .map(|row| {
            let counts = counts.remove(&row.run_id).unwrap_or_default();
            row.into_run(counts)
        })
        .collect()
}

async fn counts_of(
    executor: impl PgExecutor<'_>,
    run_ids: &[Uuid],
) -> Result<BTreeMap<Uuid, BTreeMap<String, i64>>, StoreError> {
    let rows: Vec<(Uuid, String, i64)> =
        sqlx::query_as("SELECT run_id, name, count FROM sync_run_counts WHERE run_id = ANY($1)")
            .bind(run_ids)
            .fetch_all(executor)
            .await?;
    let mut counts: BTreeMap<Uuid, BTreeMap<String, i64>> = BTreeMap::new();
    for (run_id, name, count) in rows {
        counts.entry(run_id).or_default().insert(name, count);
    }
    Ok(counts)
}

/// What [`claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The run is this worker's now: it was queued, or running with a stale heartbeat (its
    /// worker died), and is `running` with a fresh heartbeat.
    Claimed,
    /// Another worker runs it (its heartbeat is fresh).
    Busy,
    /// It waits for an admin (the safety rail).
    Held,
    /// It ended already (a duplicate request).
    Finished(RunStatus),
    /// Its commands are out; it ends when the card-writer has accounted for them.
    Applying,
    /// No such run.
    Missing,
}

/// Takes an unfinished run for this worker: a queued one, or a running one whose heartbeat is
/// older than `stale_after` (its worker was killed mid-run). Sets `running`, `started_at` the
/// first time, and the heartbeat.
pub async fn claim(
    executor: impl PgExecutor<'_> + Copy,
    run_id: Uuid,
    stale_after: std::time::Duration,
) -> Result<Claim, StoreError> {
    let claimed = sqlx::query(
        "UPDATE sync_runs
            SET status = 'running', started_at = coalesce(started_at, now()), heartbeat_at = now()
          WHERE run_id = $1 AND finished_at IS NULL
            AND (status = 'queued'
                 OR (status = 'running' AND emitted_at IS NULL
                     AND coalesce(heartbeat_at, started_at, created_at)
                         < now() - make_interval(secs => $2)))",
    )
    .bind(run_id)
    .bind(stale_after.as_secs_f64())
    .execute(executor)
    .await?;
    if claimed.rows_affected() == 1 {
        return Ok(Claim::Claimed);
    }
    let found: Option<(String, bool)> =
        sqlx::query_as("SELECT status, emitted_at IS NOT NULL FROM sync_runs WHERE run_id = $1")
            .bind(run_id)
            .fetch_optional(executor)
            .await?;
    let Some((status, emitted)) = found else {
        return Ok(Claim::Missing);
    };
    Ok(match RunStatus::parse(&status) {
        Some(RunStatus::Held) => Claim::Held,
        Some(status) if status.is_final() => Claim::Finished(status),
        _ if emitted => Claim::Applying,
        _ => Claim::Busy,
    })
}

/// Renews a running run's heartbeat; `false` when the run is no longer running.
pub async fn heartbeat(executor: impl PgExecutor<'_>, run_id: Uuid) -> Result<bool, StoreError> {
    let renewed = sqlx::query(
        "UPDATE sync_runs SET heartbeat_at = now()
          WHERE run_id = $1 AND status = 'running' AND finished_at IS NULL",
    )
    .bind(run_id)
    .execute(executor)
    .await?;
    Ok(renewed.rows_affected() == 1)
}

/// Records a scheduled run for the schedule occurrence `scheduled_for`; `false` (and nothing
/// recorded) when the tenant already has a run of this kind for that occurrence.
pub async fn create_scheduled(
    executor: impl PgExecutor<'_>,
    run: &NewRun,
    scheduled_for: OffsetDateTime,
) -> Result<bool, StoreError> {
    let created = sqlx::query(
        "INSERT INTO sync_runs (run_id, tenant_id, kind, cause, started_by, target, scheduled_for)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT DO NOTHING",
    )
    .bind(run.run_id)
    .bind(run.tenant_id)
    .bind(&run.kind)
    .bind(&run.cause)
    .bind(&run.started_by)
    .bind(&run.target)
    .bind(scheduled_for)
    .execute(executor)
    .await?;
    Ok(created.rows_affected() == 1)
}

/// A queued run whose request may have to be published again.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct QueuedRun {
    /// The run.
    pub run_id: Uuid,
    /// Its tenant.
    pub tenant_id: Uuid,
    /// Its narrower target (a group, a user), if any.
    pub target: Option<String>,
}

/// Runs of `kind` queued longer than `older_than` and never started: their request may have
/// been lost (a `due` job killed between recording and publishing).
pub async fn stale_queued(
    executor: impl PgExecutor<'_>,
    kind: &str,
    older_than: std::time::Duration,
) -> Result<Vec<QueuedRun>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT run_id, tenant_id, target FROM sync_runs
          WHERE kind = $1 AND status = 'queued' AND started_at IS NULL
            AND created_at < now() - make_interval(secs => $2)
          ORDER BY created_at",
    )
    .bind(kind)
    .bind(older_than.as_secs_f64())
    .fetch_all(executor)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_reads_back_from_its_name_and_only_three_are_final() {
        for status in [
            RunStatus::Queued,
            RunStatus::Running,
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Held,
            RunStatus::Rejected,
        ] {
            assert_eq!(RunStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(RunStatus::parse("done"), None);
        assert!(RunStatus::Succeeded.is_final() && RunStatus::Rejected.is_final());
        assert!(!RunStatus::Held.is_final() && !RunStatus::Running.is_final());
    }
}
