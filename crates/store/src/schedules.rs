//! Reconcile schedules of their own, per tenant and per group (migration 0052). A tenant with
//! no tenant-wide schedule here runs the default one ([`cardsync_schedule::Spec::nightly`]).
//! `reconciler due` claims each occurrence once ([`claim_occurrence`]) in the transaction that
//! records its run.

use crate::StoreError;
use cardsync_schedule::{Cadence, Spec, TimeOfDay, Weekday};
use sqlx::{FromRow, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

/// What a schedule covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// The whole tenant: a full reconcile.
    Tenant,
    /// One group's (nested) members.
    Group(String),
}

impl Target {
    /// The column's value: `''` for the tenant.
    fn column(&self) -> &str {
        match self {
            Target::Tenant => "",
            Target::Group(group) => group,
        }
    }

    fn of_column(group: String) -> Self {
        if group.is_empty() {
            Target::Tenant
        } else {
            Target::Group(group)
        }
    }

    /// The group, for a group's schedule.
    pub fn group(&self) -> Option<&str> {
        match self {
            Target::Tenant => None,
            Target::Group(group) => Some(group),
        }
    }
}

/// A stored schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSchedule {
    /// The tenant.
    pub tenant_id: Uuid,
    /// What it covers.
    pub target: Target,
    /// When it runs.
    pub spec: Spec,
    /// When it was paused; none while it runs.
    pub paused_at: Option<OffsetDateTime>,
    /// Occurrences before this are never run (its last change or resume).
    pub effective_from: OffsetDateTime,
    /// The latest occurrence enqueued.
    pub last_occurrence: Option<OffsetDateTime>,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it last changed.
    pub updated_at: OffsetDateTime,
    /// Who changed it last.
    pub updated_by: String,
}

#[derive(FromRow)]
struct Row {
    tenant_id: Uuid,
    group_id: String,
    cadence: String,
    weekday: Option<i16>,
    day_of_month: Option<i16>,
    minute_of_day: i16,
    time_zone: String,
    paused_at: Option<OffsetDateTime>,
    effective_from: OffsetDateTime,
    last_occurrence: Option<OffsetDateTime>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    updated_by: String,
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Query(sqlx::Error::Decode(
        format!("stored schedule has an invalid {what}").into(),
    ))
}

impl Row {
    fn into_schedule(self) -> Result<StoredSchedule, StoreError> {
        let cadence = Cadence::parse(&self.cadence).ok_or_else(|| corrupt("cadence"))?;
        let weekday = self
            .weekday
            .map(|day| {
                u8::try_from(day)
                    .ok()
                    .and_then(Weekday::from_number)
                    .ok_or_else(|| corrupt("weekday"))
            })
            .transpose()?;
        let day_of_month = self
            .day_of_month
            .map(|day| u8::try_from(day).map_err(|_| corrupt("day of month")))
            .transpose()?;
        let at = u16::try_from(self.minute_of_day)
            .ok()
            .and_then(TimeOfDay::from_minute_of_day)
            .ok_or_else(|| corrupt("time"))?;
        Ok(StoredSchedule {
            tenant_id: self.tenant_id,
            target: Target::of_column(self.group_id),
            spec: Spec {
                cadence,
                weekday,
                day_of_month,
                at,
                time_zone: self.time_zone,
            },
            paused_at: self.paused_at,
            effective_from: self.effective_from,
            last_occurrence: self.last_occurrence,
            created_at: self.created_at,
            updated_at: self.updated_at,
            updated_by: self.updated_by,
        })
    }
}

#[derive(FromRow)]
struct PutRow {
    #[sqlx(flatten)]
    row: Row,
    created: bool,
}

macro_rules! columns {
    () => {
        "tenant_id, group_id, cadence, weekday, day_of_month, minute_of_day, time_zone, \
         paused_at, effective_from, last_occurrence, created_at, updated_at, updated_by"
    };
}

/// A tenant's schedules: its own tenant-wide one first (when it has one), then its groups'.
pub async fn list(
    executor: impl PgExecutor<'_>,
    tenant_id: Uuid,
) -> Result<Vec<StoredSchedule>, StoreError> {
    sqlx::query_as::<_, Row>(concat!(
        "SELECT ",
        columns!(),
        " FROM sync_schedules WHERE tenant_id = $1 ORDER BY group_id"
    ))
    .bind(tenant_id)
    .fetch_all(executor)
    .await?
    .into_iter()
    .map(Row::into_schedule)
    .collect()
}

/// One schedule.
pub async fn get(
    executor: impl PgExecutor<'_>,
    tenant_id: Uuid,
    target: &Target,
) -> Result<Option<StoredSchedule>, StoreError> {
    sqlx::query_as::<_, Row>(concat!(
        "SELECT ",
        columns!(),
        " FROM sync_schedules WHERE tenant_id = $1 AND group_id = $2"
    ))
    .bind(tenant_id)
    .bind(target.column())
    .fetch_optional(executor)
    .await?
    .map(Row::into_schedule)
    .transpose()
}

/// Creates or replaces a schedule (`spec` checked by the caller), paused or not; occurrences
/// before now are not run. Returns the stored schedule and whether it was created.
pub async fn put(
    executor: impl PgExecutor<'_>,
    tenant_id: Uuid,
    target: &Target,
    spec: &Spec,
    paused: bool,
    by: &str,
) -> Result<(StoredSchedule, bool), StoreError> {
    let row = sqlx::query_as::<_, PutRow>(concat!(
        "INSERT INTO sync_schedules (tenant_id, group_id, cadence, weekday, day_of_month,
                                     minute_of_day, time_zone, paused_at, updated_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $8 THEN now() END, $9)
         ON CONFLICT (tenant_id, group_id) DO UPDATE
            SET cadence = EXCLUDED.cadence, weekday = EXCLUDED.weekday,
                day_of_month = EXCLUDED.day_of_month, minute_of_day = EXCLUDED.minute_of_day,
                time_zone = EXCLUDED.time_zone,
                paused_at = CASE WHEN $8 THEN coalesce(sync_schedules.paused_at, now()) END,
                -- A changed or resumed schedule starts afresh; an unchanged one keeps its due
                -- occurrence.
                effective_from = CASE
                    WHEN (sync_schedules.cadence, sync_schedules.weekday,
                          sync_schedules.day_of_month, sync_schedules.minute_of_day,
                          sync_schedules.time_zone)
                         IS DISTINCT FROM (EXCLUDED.cadence, EXCLUDED.weekday,
                          EXCLUDED.day_of_month, EXCLUDED.minute_of_day, EXCLUDED.time_zone)
                      OR (sync_schedules.paused_at IS NOT NULL AND NOT $8)
                    THEN now() ELSE sync_schedules.effective_from END,
                updated_at = now(), updated_by = EXCLUDED.updated_by
         RETURNING ",
        columns!(),
        ", (xmax = 0) AS created"
    ))
    .bind(tenant_id)
    .bind(target.column())
    .bind(spec.cadence.as_str())
    .bind(spec.weekday.map(|day| i16::from(day.number())))
    .bind(spec.day_of_month.map(i16::from))
    .bind(i16::try_from(spec.at.minute_of_day()).unwrap_or(0))
    .bind(&spec.time_zone)
    .bind(paused)
    .bind(by)
    .fetch_one(executor)
    .await?;
    Ok((row.row.into_schedule()?, row.created))
}

/// Deletes a schedule; whether there was one.
pub async fn delete(
    executor: impl PgExecutor<'_>,
    tenant_id: Uuid,
    target: &Target,
) -> Result<bool, StoreError> {
    let deleted = sqlx::query("DELETE FROM sync_schedules WHERE tenant_id = $1 AND group_id = $2")
        .bind(tenant_id)
        .bind(target.column())
        .execute(executor)
        .await?;
    Ok(deleted.rows_affected() == 1)
}

/// The schedules of tenants that are connected and not disconnected, paused ones included
/// (a paused tenant-wide schedule stands in for the default too).
pub async fn of_syncing_tenants(
    executor: impl PgExecutor<'_>,
) -> Result<Vec<StoredSchedule>, StoreError> {
    sqlx::query_as::<_, Row>(concat!(
        "SELECT ",
        columns!(),
        " FROM sync_schedules s
          WHERE EXISTS (SELECT 1 FROM tenants t JOIN tenant_connections c USING (tenant_id)
                         WHERE t.tenant_id = s.tenant_id AND t.disconnected_at IS NULL)
          ORDER BY tenant_id, group_id"
    ))
    .fetch_all(executor)
    .await?
    .into_iter()
    .map(Row::into_schedule)
    .collect()
}

/// Claims `occurrence` of a running schedule: moves its `last_occurrence` forward to it, unless
/// the schedule is paused, the occurrence comes before the schedule's `effective_from`, or an
/// earlier claim reached it already. Returns whether this call claimed it. Run it in the
/// transaction that records the occurrence's run: a concurrent claim waits for the row and
/// then finds the occurrence taken.
pub async fn claim_occurrence(
    executor: impl PgExecutor<'_>,
    tenant_id: Uuid,
    target: &Target,
    occurrence: OffsetDateTime,
) -> Result<bool, StoreError> {
    let claimed = sqlx::query(
        "UPDATE sync_schedules SET last_occurrence = $3
          WHERE tenant_id = $1 AND group_id = $2 AND paused_at IS NULL
            AND effective_from <= $3
            AND (last_occurrence IS NULL OR last_occurrence < $3)",
    )
    .bind(tenant_id)
    .bind(target.column())
    .bind(occurrence)
    .execute(executor)
    .await?;
    Ok(claimed.rows_affected() == 1)
}

/// The tenants that run the default schedule: connected, not disconnected, and without a
/// tenant-wide schedule of their own; with when each was created.
pub async fn on_default(
    executor: impl PgExecutor<'_>,
) -> Result<Vec<(Uuid, OffsetDateTime)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT t.tenant_id, t.created_at
           FROM tenants t JOIN tenant_connections c USING (tenant_id)
          WHERE t.disconnected_at IS NULL
            AND NOT EXISTS (SELECT 1 FROM sync_schedules s
                             WHERE s.tenant_id = t.tenant_id AND s.group_id = '')
          ORDER BY t.tenant_id",
    )
    .fetch_all(executor)
    .await?)
}
