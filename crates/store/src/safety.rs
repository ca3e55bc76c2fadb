//! The mass-change safety rail (migration 0057): per-tenant thresholds and pause state, the
//! plans and card commands of held runs, and the named requests parked while a tenant is
//! paused. Rounds hold and park under their lease; the admin API approves, rejects and resumes.

use crate::StoreError;
use sqlx::{FromRow, PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

/// When a round is held.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Hold when deactivations and deletions exceed this percentage of the active cards.
    pub removal_percent: f32,
    /// Hold when field updates exceed this percentage of the active cards.
    pub update_percent: f32,
    /// Below this many removals (or updates) nothing is held, whatever the share.
    pub minimum: i32,
}

impl Default for Thresholds {
    /// 10 % removals (Entra provisioning's accidental-deletion default is in the same range),
    /// 50 % updates (a rule that blanks a field or a wrong tenant touches nearly every card;
    /// legitimate directory-wide edits such as an office move touch a minority), and a minimum
    /// of 10 so that a small tenant losing a person or two is never held.
    fn default() -> Self {
        Self {
            removal_percent: 10.0,
            update_percent: 50.0,
            minimum: 10,
        }
    }
}

impl Thresholds {
    /// Whether `count` changes out of `active` cards exceed `percent` (and the minimum).
    pub fn exceeds(&self, count: u64, active: u64, percent: f32) -> bool {
        if count < u64::try_from(self.minimum.max(1)).unwrap_or(1) {
            return false;
        }
        // Compared in integers of hundredths of a percent: no rounding surprise at the edge.
        let allowed = (f64::from(percent) * 100.0).round() as u128;
        u128::from(count) * 10_000 > allowed * u128::from(active)
    }
}

/// A tenant's rail: thresholds and pause state.
#[derive(Debug, Clone, PartialEq)]
pub struct SafetyState {
    /// The tenant.
    pub tenant_id: Uuid,
    /// Its thresholds.
    pub thresholds: Thresholds,
    /// Set while the tenant is paused.
    pub paused_at: Option<OffsetDateTime>,
    /// The held or rejected run that paused it.
    pub paused_by_run: Option<Uuid>,
    /// A round was asked for while paused.
    pub round_pending: bool,
    /// The last change.
    pub updated_at: Option<OffsetDateTime>,
    /// Who made it.
    pub updated_by: Option<String>,
}

impl SafetyState {
    fn defaults(tenant_id: Uuid) -> Self {
        Self {
            tenant_id,
            thresholds: Thresholds::default(),
            paused_at: None,
            paused_by_run: None,
            round_pending: false,
            updated_at: None,
            updated_by: None,
        }
    }
}

#[derive(FromRow)]
struct StateRow {
    tenant_id: Uuid,
    removal_percent: f32,
    update_percent: f32,
    minimum: i32,
    paused_at: Option<OffsetDateTime>,
    paused_by_run: Option<Uuid>,
    round_pending: bool,
    updated_at: OffsetDateTime,
    updated_by: String,
}

impl From<StateRow> for SafetyState {
    fn from(row: StateRow) -> Self {
        Self {
            tenant_id: row.tenant_id,
            thresholds: Thresholds {
                removal_percent: row.removal_percent,
                update_percent: row.update_percent,
                minimum: row.minimum,
            },
            paused_at: row.paused_at,
            paused_by_run: row.paused_by_run,
            round_pending: row.round_pending,
            updated_at: Some(row.updated_at),
            updated_by: Some(row.updated_by),
        }
    }
}

macro_rules! state_columns {
    () => {
        "tenant_id, removal_percent, update_percent, minimum, paused_at, paused_by_run, \
         round_pending, updated_at, updated_by"
    };
}

/// The tenant's rail (the defaults when it never had a row).
pub async fn state(executor: impl PgExecutor<'_>, tenant: Uuid) -> Result<SafetyState, StoreError> {
    let row: Option<StateRow> = sqlx::query_as(concat!(
        "SELECT ",
        state_columns!(),
        " FROM tenant_safety WHERE tenant_id = $1"
    ))
    .bind(tenant)
    .fetch_optional(executor)
    .await?;
    Ok(row.map_or_else(|| SafetyState::defaults(tenant), SafetyState::from))
}

/// The tenant's rail, its row locked for the rest of the transaction (made with the defaults
/// first if missing): a round's pause check and a resume serialise on it, so no request is
/// parked after the resume that would have published it.
pub async fn lock(conn: &mut PgConnection, tenant: Uuid) -> Result<SafetyState, StoreError> {
    sqlx::query("INSERT INTO tenant_safety (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(tenant)
        .execute(&mut *conn)
        .await?;
    let row: StateRow = sqlx::query_as(concat!(
        "SELECT ",
        state_columns!(),
        " FROM tenant_safety WHERE tenant_id = $1 FOR UPDATE"
    ))
    .bind(tenant)
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.into())
}

/// Sets the tenant's thresholds.
pub async fn set_thresholds(
    executor: impl PgExecutor<'_>,
    tenant: Uuid,
    thresholds: &Thresholds,
    by: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO tenant_safety (tenant_id, removal_percent, update_percent, minimum, updated_by)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tenant_id) DO UPDATE
            SET removal_percent = EXCLUDED.removal_percent, update_percent = EXCLUDED.update_percent,
                minimum = EXCLUDED.minimum, updated_by = EXCLUDED.updated_by, updated_at = now()",
    )
    .bind(tenant)
    .bind(thresholds.removal_percent)
    .bind(thresholds.update_percent)
    .bind(thresholds.minimum)
    .bind(by)
    .execute(executor)
    .await?;
    Ok(())
}

/// Which worker a parked request goes back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worker {
    /// The delta-worker (`request.<tenant>`).
    Delta,
    /// The reconciler (`reconcile.<tenant>`).
    Reconcile,
}

impl Worker {
    /// The column's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Worker::Delta => "delta",
            Worker::Reconcile => "reconcile",
        }
    }

    fn parse(text: &str) -> Self {
        if text == "reconcile" {
            Worker::Reconcile
        } else {
            Worker::Delta
        }
    }
}

/// Records, on a paused tenant (its row locked by [`lock`]), that a round was asked for: a
/// named run's request is parked (the run goes back to `queued`), an unnamed round leaves the
/// pending mark. Both are served on resume.
pub async fn defer(
    conn: &mut PgConnection,
    tenant: Uuid,
    parked: Option<(Uuid, Worker, &[u8])>,
) -> Result<(), StoreError> {
    match parked {
        Some((run_id, worker, request)) => {
            sqlx::query(
                "INSERT INTO parked_requests (run_id, tenant_id, worker, request)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (run_id) DO NOTHING",
            )
            .bind(run_id)
            .bind(tenant)
            .bind(worker.as_str())
            .bind(request)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "UPDATE sync_runs SET status = 'queued',
                        detail = 'waiting: the tenant is paused by the safety rail'
                  WHERE run_id = $1 AND finished_at IS NULL AND status IN ('queued', 'running')",
            )
            .bind(run_id)
            .execute(&mut *conn)
            .await?;
        }
        None => {
            sqlx::query("UPDATE tenant_safety SET round_pending = true WHERE tenant_id = $1")
                .bind(tenant)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// One card command of a held run.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct HeldCommand {
    /// Its place in the plan.
    pub seq: i64,
    /// The directory user.
    pub user_id: String,
    /// The per-user version it carries.
    pub version: i64,
    /// `upsert`, `deactivate`, `delete`, …
    pub action: String,
    /// The encoded `CardCommand`.
    pub command: Vec<u8>,
}

/// A held run's plan.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct HeldPlan {
    /// The run.
    pub run_id: Uuid,
    /// Its tenant.
    pub tenant_id: Uuid,
    /// `bulk` or `live`: the queue its commands go to.
    pub lane: String,
    /// What it would change and why.
    pub summary: serde_json::Value,
    /// When it was held.
    pub created_at: OffsetDateTime,
    /// When an admin decided.
    pub decided_at: Option<OffsetDateTime>,
    /// Who.
    pub decided_by: Option<String>,
}

/// Keeps a held run's plan and pauses its tenant (whose row the caller locked).
pub async fn hold(
    conn: &mut PgConnection,
    plan: &HeldPlan,
    detail: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO held_plans (run_id, tenant_id, lane, summary) VALUES ($1, $2, $3, $4)",
    )
    .bind(plan.run_id)
    .bind(plan.tenant_id)
    .bind(&plan.lane)
    .bind(&plan.summary)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE sync_runs SET status = 'held', detail = $2, started_at = coalesce(started_at, now())
          WHERE run_id = $1 AND finished_at IS NULL",
    )
    .bind(plan.run_id)
    .bind(detail)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO tenant_safety (tenant_id, paused_at, paused_by_run) VALUES ($1, now(), $2)
         ON CONFLICT (tenant_id) DO UPDATE SET paused_at = now(), paused_by_run = $2",
    )
    .bind(plan.tenant_id)
    .bind(plan.run_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Adds commands to a held run's plan.
pub async fn keep_commands(
    conn: &mut PgConnection,
    run_id: Uuid,
    commands: &[HeldCommand],
) -> Result<(), StoreError> {
    if commands.is_empty() {
        return Ok(());
    }
    let seqs: Vec<i64> = commands.iter().map(|c| c.seq).collect();
    let users: Vec<&str> = commands.iter().map(|c| c.user_id.as_str()).collect();
    let versions: Vec<i64> = commands.iter().map(|c| c.version).collect();
    let actions: Vec<&str> = commands.iter().map(|c| c.action.as_str()).collect();
    let bodies: Vec<&[u8]> = commands.iter().map(|c| c.command.as_slice()).collect();
    sqlx::query(
        "INSERT INTO held_commands (run_id, seq, user_id, version, action, command)
         SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::bytea[])",
    )
    .bind(run_id)
    .bind(&seqs)
    .bind(&users)
    .bind(&versions)
    .bind(&actions)
    .bind(&bodies)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A held run's plan, if it has one.
pub async fn plan(
    executor: impl PgExecutor<'_>,
    run_id: Uuid,
) -> Result<Option<HeldPlan>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT run_id, tenant_id, lane, summary, created_at, decided_at, decided_by
           FROM held_plans WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_optional(executor)
    .await?)
}

/// A held run's commands after `after` (a `seq`), at most `limit`, in plan order.
pub async fn commands(
    executor: impl PgExecutor<'_>,
    run_id: Uuid,
    after: i64,
    limit: i64,
) -> Result<Vec<HeldCommand>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT seq, user_id, version, action, command FROM held_commands
          WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(run_id)
    .bind(after)
    .bind(limit)
    .fetch_all(executor)
    .await?)
}

/// How many commands a held run keeps.
pub async fn command_count(executor: impl PgExecutor<'_>, run_id: Uuid) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM held_commands WHERE run_id = $1")
            .bind(run_id)
            .fetch_one(executor)
            .await?,
    )
}

/// Locks a run's row and says whether it is held (`None`: no such run).
pub async fn lock_held(conn: &mut PgConnection, run_id: Uuid) -> Result<Option<bool>, StoreError> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM sync_runs WHERE run_id = $1 FOR UPDATE")
            .bind(run_id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(status.map(|status| status == "held"))
}

/// Records an approval (after every kept command was published): the run runs again with
/// `commands` commands out (the card-writer ends it once they are accounted for), the kept
/// commands go, and the tenant the run paused is resumed.
pub async fn approved(
    conn: &mut PgConnection,
    run_id: Uuid,
    tenant: Uuid,
    by: &str,
    commands: i64,
    digests: &dyn crate::runs::DigestEncoder,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE sync_runs SET status = 'running', detail = 'approved by ' || $2
          WHERE run_id = $1 AND status = 'held'",
    )
    .bind(run_id)
    .bind(by)
    .execute(&mut *conn)
    .await?;
    crate::runs::emission_done(conn, run_id, commands, &[], digests).await?;
    decided(conn, run_id, by).await?;
    sqlx::query(
        "UPDATE tenant_safety SET paused_at = NULL, paused_by_run = NULL, updated_at = now(),
                updated_by = $3
          WHERE tenant_id = $1 AND paused_by_run = $2",
    )
    .bind(tenant)
    .bind(run_id)
    .bind(by)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records a rejection: the run ends `rejected` with `detail`, its kept commands go, and the
/// tenant stays paused until an admin resumes it.
pub async fn rejected(
    conn: &mut PgConnection,
    run_id: Uuid,
    by: &str,
    detail: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE sync_runs SET status = 'rejected', finished_at = now(), detail = $2
          WHERE run_id = $1 AND status = 'held'",
    )
    .bind(run_id)
    .bind(detail)
    .execute(&mut *conn)
    .await?;
    decided(conn, run_id, by).await
}

async fn decided(conn: &mut PgConnection, run_id: Uuid, by: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM held_commands WHERE run_id = $1")
        .bind(run_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE held_plans SET decided_at = now(), decided_by = $2 WHERE run_id = $1")
        .bind(run_id)
        .bind(by)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The held runs of a tenant, oldest first.
pub async fn held_runs(
    executor: impl PgExecutor<'_>,
    tenant: Uuid,
) -> Result<Vec<Uuid>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT run_id FROM sync_runs WHERE tenant_id = $1 AND status = 'held'
          ORDER BY created_at, run_id",
    )
    .bind(tenant)
    .fetch_all(executor)
    .await?)
}

/// Unpauses a tenant (its row locked by [`lock`], which says whether a round is owed) and
/// clears the pending mark. Parked requests are read with [`parked`] and dropped with
/// [`unpark`] once published.
pub async fn resume(conn: &mut PgConnection, tenant: Uuid, by: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE tenant_safety SET paused_at = NULL, paused_by_run = NULL, round_pending = false,
                updated_at = now(), updated_by = $2
          WHERE tenant_id = $1",
    )
    .bind(tenant)
    .bind(by)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A request parked while its tenant was paused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    /// Its run.
    pub run_id: Uuid,
    /// Who takes it.
    pub worker: Worker,
    /// The encoded `SyncRequest`.
    pub request: Vec<u8>,
}

/// The tenant's parked requests, oldest first.
pub async fn parked(
    executor: impl PgExecutor<'_>,
    tenant: Uuid,
) -> Result<Vec<Parked>, StoreError> {
    let rows: Vec<(Uuid, String, Vec<u8>)> = sqlx::query_as(
        "SELECT run_id, worker, request FROM parked_requests WHERE tenant_id = $1
          ORDER BY parked_at, run_id",
    )
    .bind(tenant)
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(run_id, worker, request)| Parked {
            run_id,
            worker: Worker::parse(&worker),
            request,
        })
        .collect())
}

/// Drops parked requests once they were published again.
pub async fn unpark(executor: impl PgExecutor<'_>, run_ids: &[Uuid]) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM parked_requests WHERE run_id = ANY($1)")
        .bind(run_ids)
        .execute(executor)
        .await?;
    Ok(())
}

/// Per tenant: its held runs and whether it is paused (for the gauges, every tenant at zero
/// first).
pub async fn overview(executor: impl PgExecutor<'_>) -> Result<Vec<(Uuid, i64, bool)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT t.tenant_id,
                (SELECT count(*) FROM sync_runs r WHERE r.tenant_id = t.tenant_id AND r.status = 'held'),
                coalesce((SELECT s.paused_at IS NOT NULL FROM tenant_safety s
                           WHERE s.tenant_id = t.tenant_id), false)
           FROM tenants t ORDER BY t.tenant_id",
    )
    .fetch_all(executor)
    .await?)
}

/// The tenant's active cards: what the rail's shares are of.
pub async fn active_cards(executor: impl PgExecutor<'_>, tenant: Uuid) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM cards WHERE tenant_id = $1 AND status = 'active'")
            .bind(tenant)
            .fetch_one(executor)
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_over_the_threshold_is_held_and_a_count_under_the_minimum_never_is() {
        let rail = Thresholds::default();
        assert!(!rail.exceeds(10, 100, 10.0), "exactly 10 % is not over");
        assert!(rail.exceeds(11, 100, 10.0));
        assert!(
            !rail.exceeds(1, 5, 10.0),
            "a small tenant losing one is under the minimum"
        );
        assert!(!rail.exceeds(9, 9, 10.0));
        assert!(rail.exceeds(10, 10, 10.0));
        assert!(
            rail.exceeds(10, 0, 50.0),
            "no active card: any change past the minimum"
        );
        let strict = Thresholds { minimum: 1, ..rail };
        assert!(strict.exceeds(1, 5, 10.0));
    }
}
