//! How runs end: the card-writer accounts for each command (applied or dead-lettered), the
//! worker says when it emitted the last one, and whichever write accounts for the last command
//! ends the run; workers fail runs they cannot finish, `reconciler due` fails the ones nobody
//! finishes and ends the hour's live runs. Every write that ends a run puts its digest in the
//! outbox in the same transaction ([`super::digest`]), so the digest goes out exactly when the
//! run ends and is never lost.

use super::RunStatus;
use super::digest::{self, DigestEncoder, NewPerson};
use crate::StoreError;
use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

/// The counts of a run's commands once applied (a card-writer outcome each: `created`,
/// `updated`, …, `superseded` for a version an even newer one overtook) or dead-lettered
/// (`error:<reason>`). When they add up to the run's `commands` count, the run is over.
macro_rules! accounted {
    () => {
        "(name IN ('created', 'linked', 'updated', 'unchanged', 'superseded', 'deactivated', \
          'reactivated', 'deleted', 'tombstoned') OR name LIKE 'error:%')"
    };
}

/// Locks the run's row for the rest of the transaction; `false` when there is no such run.
/// Every writer of a run's counts that may end it takes this lock first, so concurrent writers
/// see each other's counts and exactly one of them ends the run.
async fn lock(conn: &mut PgConnection, run_id: Uuid) -> Result<bool, StoreError> {
    let found: Option<Uuid> =
        sqlx::query_scalar("SELECT run_id FROM sync_runs WHERE run_id = $1 FOR UPDATE")
            .bind(run_id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(found.is_some())
}

/// Ends the run, succeeded, if its worker finished emitting and every command is accounted for;
/// announces its digest when it did.
async fn settle(
    conn: &mut PgConnection,
    run_id: Uuid,
    digests: &dyn DigestEncoder,
) -> Result<bool, StoreError> {
    let settled = sqlx::query(concat!(
        "UPDATE sync_runs r SET status = 'succeeded', finished_at = now()
          WHERE r.run_id = $1 AND r.status = 'running' AND r.finished_at IS NULL
            AND r.emitted_at IS NOT NULL
            AND coalesce((SELECT count FROM sync_run_counts
                           WHERE run_id = $1 AND name = 'commands'), 0)
                <= coalesce((SELECT sum(count) FROM sync_run_counts WHERE run_id = $1 AND ",
        accounted!(),
        "), 0)"
    ))
    .bind(run_id)
    .execute(&mut *conn)
    .await?;
    let ended = settled.rows_affected() == 1;
    if ended {
        digest::announce_runs(conn, &[run_id], digests).await?;
    }
    Ok(ended)
}

/// Records the outcomes of some of a run's commands and the people they added or removed (in
/// the transaction that applied them) and ends the run when that accounts for all of them. A
/// run this database does not know (deleted by retention) is left alone.
pub async fn record_applied(
    conn: &mut PgConnection,
    run_id: Uuid,
    counts: &[(&str, i64)],
    people: &[NewPerson],
    digests: &dyn DigestEncoder,
) -> Result<(), StoreError> {
    if lock(conn, run_id).await? {
        super::add_counts(&mut *conn, run_id, counts).await?;
        digest::record_people(conn, run_id, people).await?;
        settle(conn, run_id, digests).await?;
    }
    Ok(())
}

/// A run's command that will never be applied: dead-lettered, or dropped for an unknown tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailedCommand<'a> {
    /// The run it belongs to.
    pub run_id: Uuid,
    /// What identifies the message across deliveries: its message id (or a hash of its body).
    pub message_key: &'a str,
    /// A short stable reason code, snake_case (`invalid_command`, `unknown_tenant`, …): the
    /// run counts it as `error:<reason>`.
    pub reason: &'a str,
}

/// Accounts for a command that will never be applied as `error:<reason>` on its run, once per
/// message however often it is delivered, and ends the run when that was its last command.
/// Returns whether it was counted now (`false`: counted before, or the run is gone).
pub async fn record_failed(
    conn: &mut PgConnection,
    failed: &FailedCommand<'_>,
    digests: &dyn DigestEncoder,
) -> Result<bool, StoreError> {
    if !lock(conn, failed.run_id).await? {
        return Ok(false);
    }
    let first = sqlx::query(
        "INSERT INTO sync_run_failed_commands (run_id, message_key, reason) VALUES ($1, $2, $3)
         ON CONFLICT (run_id, message_key) DO NOTHING",
    )
    .bind(failed.run_id)
    .bind(failed.message_key)
    .bind(failed.reason)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if first {
        let name = format!("error:{}", failed.reason);
        super::add_counts(&mut *conn, failed.run_id, &[(name.as_str(), 1)]).await?;
        settle(conn, failed.run_id, digests).await?;
    }
    Ok(first)
}

/// Records that the run's worker emitted its last command, `commands` in all, with its other
/// `counts`; returns whether that ended the run (nothing left for the card-writer to apply).
pub async fn emission_done(
    conn: &mut PgConnection,
    run_id: Uuid,
    commands: i64,
    counts: &[(&str, i64)],
    digests: &dyn DigestEncoder,
) -> Result<bool, StoreError> {
    if !lock(conn, run_id).await? {
        return Ok(false);
    }
    // A redelivered request runs its round again: the run keeps the first emission's figures.
    let emitted: Option<OffsetDateTime> =
        sqlx::query_scalar("SELECT emitted_at FROM sync_runs WHERE run_id = $1")
            .bind(run_id)
            .fetch_one(&mut *conn)
            .await?;
    if emitted.is_some() {
        return settle(conn, run_id, digests).await;
    }
    super::add_counts(&mut *conn, run_id, counts).await?;
    super::add_counts(&mut *conn, run_id, &[("commands", commands)]).await?;
    sqlx::query("UPDATE sync_runs SET emitted_at = coalesce(emitted_at, now()) WHERE run_id = $1")
        .bind(run_id)
        .execute(&mut *conn)
        .await?;
    settle(conn, run_id, digests).await
}

/// Ends an unfinished run with a final `status` (succeeded, failed or rejected) and announces
/// its digest; returns whether it ended now (a finished run never changes).
pub async fn end(
    conn: &mut PgConnection,
    run_id: Uuid,
    status: RunStatus,
    detail: Option<&str>,
    digests: &dyn DigestEncoder,
) -> Result<bool, StoreError> {
    if !status.is_final() {
        return super::set_status(&mut *conn, run_id, status, detail).await;
    }
    let ended = super::set_status(&mut *conn, run_id, status, detail).await?;
    if ended {
        digest::announce_runs(conn, &[run_id], digests).await?;
    }
    Ok(ended)
}

/// Fails the unfinished runs of `kind` that a worker started but whose heartbeat stopped more
/// than `abandoned_after` ago (the worker died and no redelivery took the run over), announcing
/// their digests; returns their ids. Runs never started are left queued: they may be waiting
/// behind others; so are runs parked by the safety rail while their tenant is paused.
pub async fn fail_abandoned(
    conn: &mut PgConnection,
    kind: &str,
    abandoned_after: std::time::Duration,
    digests: &dyn DigestEncoder,
) -> Result<Vec<Uuid>, StoreError> {
    let failed: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE sync_runs
            SET status = 'failed', finished_at = now(),
                detail = 'abandoned: no worker renewed its heartbeat for '
                         || $2::text || ' seconds'
          WHERE kind = $1 AND finished_at IS NULL AND status IN ('queued', 'running')
            AND started_at IS NOT NULL AND emitted_at IS NULL
            AND coalesce(heartbeat_at, started_at) < now() - make_interval(secs => $3)
            -- A run parked while its tenant is paused waits for the resume, not for a worker.
            AND NOT EXISTS (SELECT 1 FROM parked_requests p WHERE p.run_id = sync_runs.run_id)
         RETURNING run_id",
    )
    .bind(kind)
    .bind(abandoned_after.as_secs().to_string())
    .bind(abandoned_after.as_secs_f64())
    .fetch_all(&mut *conn)
    .await?;
    digest::announce_runs(conn, &failed, digests).await?;
    Ok(failed)
}

/// Fails the unfinished runs of `kind` whose commands went out more than `older_than` ago and
/// are still not all accounted for (a command lost without a dead letter), announcing their
/// digests; returns their ids.
pub async fn fail_unsettled(
    conn: &mut PgConnection,
    kind: &str,
    older_than: std::time::Duration,
    digests: &dyn DigestEncoder,
) -> Result<Vec<Uuid>, StoreError> {
    let failed: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE sync_runs
            SET status = 'failed', finished_at = now(),
                detail = 'unsettled: not every card command was applied or dead-lettered within '
                         || $2::text || ' seconds'
          WHERE kind = $1 AND finished_at IS NULL AND status = 'running'
            AND emitted_at < now() - make_interval(secs => $3)
         RETURNING run_id",
    )
    .bind(kind)
    .bind(older_than.as_secs().to_string())
    .bind(older_than.as_secs_f64())
    .fetch_all(&mut *conn)
    .await?;
    digest::announce_runs(conn, &failed, digests).await?;
    Ok(failed)
}

/// Retention: deletes every run that ended before `before`, with its counts and people, and the
/// daily-digest marks no digest pass looks at any more; returns how many runs.
pub async fn delete_finished_before(
    executor: impl PgExecutor<'_> + Copy,
    before: OffsetDateTime,
) -> Result<u64, StoreError> {
    let deleted = sqlx::query("DELETE FROM sync_runs WHERE finished_at < $1")
        .bind(before)
        .execute(executor)
        .await?;
    digest::forget_days_before(executor, before).await?;
    Ok(deleted.rows_affected())
}

/// The live run of `tenant` for the hour starting at `hour`: notification and safety-poll rounds
/// add up into one run per tenant and hour, created by the first round of the hour (running)
/// and ended by `reconciler due` once the hour is over.
pub async fn live(
    executor: impl PgExecutor<'_>,
    tenant_id: Uuid,
    hour: OffsetDateTime,
) -> Result<Uuid, StoreError> {
    Ok(sqlx::query_scalar(
        "INSERT INTO sync_runs (run_id, tenant_id, kind, cause, started_by, status, started_at,
                               scheduled_for)
         VALUES ($1, $2, 'live', 'notification', 'system', 'running', now(), $3)
         ON CONFLICT (tenant_id, kind, scheduled_for) WHERE scheduled_for IS NOT NULL
            DO UPDATE SET kind = EXCLUDED.kind
         RETURNING run_id",
    )
    .bind(Uuid::now_v7())
    .bind(tenant_id)
    .bind(hour)
    .fetch_one(executor)
    .await?)
}

/// Ends, succeeded, the live runs whose hour ended before `before`, then announces the daily
/// digest of every tenant's UTC day that is over and whose live runs all ended; returns how many
/// runs ended.
pub async fn end_live_before(
    conn: &mut PgConnection,
    before: OffsetDateTime,
    digests: &dyn DigestEncoder,
) -> Result<u64, StoreError> {
    let ended = sqlx::query(
        "UPDATE sync_runs SET status = 'succeeded', finished_at = now(),
                emitted_at = coalesce(emitted_at, now())
          WHERE kind = 'live' AND finished_at IS NULL
            AND scheduled_for + interval '1 hour' <= $1",
    )
    .bind(before)
    .execute(&mut *conn)
    .await?;
    digest::announce_days(conn, before, digests).await?;
    Ok(ended.rows_affected())
}
