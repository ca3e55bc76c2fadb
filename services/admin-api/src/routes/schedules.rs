//! `/v1/tenants/{tenant}/schedules`: when the reconciler reconciles a tenant (`tenant`) or a
//! group's members (a group id). A tenant without a schedule of its own runs the default one,
//! daily at 00:00 UTC, shown with `default: true`; deleting its own schedule brings the default
//! back, and pausing is how a tenant has no scheduled reconcile at all. Every schedule is shown
//! with its next run time.

use super::{Items, audit, is_object_id, rfc3339, visible_tenant};
use crate::error::ApiError;
use crate::openapi::Refusals;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use cardsync_auth::Principal;
use cardsync_schedule::{Cadence, Invalid, Schedule, Spec, TimeOfDay, Weekday};
use cardsync_store::admin::TenantSummary;
use cardsync_store::schedules::{self, StoredSchedule, Target};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

pub(super) fn configure(config: &mut web::ServiceConfig) {
    config
        .service(web::resource("/tenants/{tenant}/schedules").route(web::get().to(list)))
        .service(
            web::resource("/tenants/{tenant}/schedules/{target}")
                .route(web::get().to(show))
                .route(web::put().to(put))
                .route(web::patch().to(patch))
                .route(web::delete().to(delete)),
        );
}

/// The path segment naming the tenant-wide schedule.
const TENANT: &str = "tenant";

/// A schedule as a PUT sends it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScheduleBody {
    /// `daily`, `weekly`, `monthly` or `quarterly` (January, April, July, October).
    #[schema(example = "weekly", pattern = "^(daily|weekly|monthly|quarterly)$")]
    cadence: String,
    /// Weekly only: `monday` … `sunday`.
    #[schema(
        example = "monday",
        pattern = "^(monday|tuesday|wednesday|thursday|friday|saturday|sunday)$"
    )]
    weekday: Option<String>,
    /// Monthly and quarterly only: 1 to 31; a month without that day runs on its last day.
    #[schema(minimum = 1, maximum = 31)]
    day_of_month: Option<i64>,
    /// The local time of day, `HH:MM` (default `00:00`).
    #[schema(example = "02:30", pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    time: Option<String>,
    /// An IANA time zone (default `UTC`).
    #[schema(example = "Europe/Berlin")]
    time_zone: Option<String>,
    /// Saved paused (default false).
    paused: Option<bool>,
}

/// Changes to a schedule: the fields given replace the stored ones (a cadence change drops a
/// weekday or day of the month the new cadence does not take).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SchedulePatch {
    /// `daily`, `weekly`, `monthly` or `quarterly`.
    #[schema(example = "weekly", pattern = "^(daily|weekly|monthly|quarterly)$")]
    cadence: Option<String>,
    /// Weekly only: `monday` … `sunday`.
    #[schema(
        example = "monday",
        pattern = "^(monday|tuesday|wednesday|thursday|friday|saturday|sunday)$"
    )]
    weekday: Option<String>,
    /// Monthly and quarterly only: 1 to 31.
    #[schema(minimum = 1, maximum = 31)]
    day_of_month: Option<i64>,
    /// `HH:MM`.
    #[schema(example = "02:30", pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    time: Option<String>,
    /// An IANA time zone.
    time_zone: Option<String>,
    /// `true` pauses, `false` resumes (occurrences missed while paused are not run).
    paused: Option<bool>,
}

/// A schedule with its next run time.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ScheduleView {
    /// `tenant` (a full reconcile) or the group id (a reconcile of its nested members).
    target: String,
    /// The group, for a group's schedule.
    group_id: Option<String>,
    /// `daily`, `weekly`, `monthly` or `quarterly`.
    cadence: String,
    /// Weekly schedules' weekday.
    weekday: Option<String>,
    /// Monthly and quarterly schedules' day of the month.
    day_of_month: Option<u8>,
    /// Local time of day, `HH:MM`.
    time: String,
    /// IANA time zone.
    time_zone: String,
    /// Paused: nothing runs.
    paused: bool,
    /// The built-in default (the tenant has no schedule of its own).
    default: bool,
    /// When it runs next (RFC 3339, UTC); none while paused or while the tenant is not synced
    /// (no connection, or disconnected).
    next_run_at: Option<String>,
    /// The latest occurrence the reconciler enqueued.
    last_occurrence: Option<String>,
    /// When it last changed.
    updated_at: Option<String>,
    /// Who changed it last.
    updated_by: Option<String>,
}

impl ScheduleView {
    fn of(
        tenant: &TenantSummary,
        target: &Target,
        spec: &Spec,
        stored: Option<&StoredSchedule>,
    ) -> Self {
        let paused = stored.is_some_and(|s| s.paused_at.is_some());
        let syncing = tenant.has_connection && tenant.disconnected_at.is_none();
        let next_run_at = spec
            .check()
            .ok()
            .filter(|_| syncing && !paused)
            .and_then(|schedule| next_run(&schedule, stored))
            .map(rfc3339);
        Self {
            target: target
                .group()
                .map_or_else(|| TENANT.to_owned(), str::to_owned),
            group_id: target.group().map(str::to_owned),
            cadence: spec.cadence.as_str().to_owned(),
            weekday: spec.weekday.map(|day| day.as_str().to_owned()),
            day_of_month: spec.day_of_month,
            time: spec.at.to_string(),
            time_zone: spec.time_zone.clone(),
            paused,
            default: stored.is_none(),
            next_run_at,
            last_occurrence: stored.and_then(|s| s.last_occurrence).map(rfc3339),
            updated_at: stored.map(|s| rfc3339(s.updated_at)),
            updated_by: stored.map(|s| s.updated_by.clone()),
        }
    }

    fn of_stored(tenant: &TenantSummary, stored: &StoredSchedule) -> Self {
        Self::of(tenant, &stored.target, &stored.spec, Some(stored))
    }

    fn default_of(tenant: &TenantSummary) -> Self {
        Self::of(tenant, &Target::Tenant, &Spec::nightly(), None)
    }
}

/// The next run: the next occurrence, or the latest one when it is due but not enqueued yet
/// (the CronJob's next pass will).
fn next_run(schedule: &Schedule, stored: Option<&StoredSchedule>) -> Option<OffsetDateTime> {
    let now = OffsetDateTime::now_utc();
    if let Some(stored) = stored
        && let Some(due) = schedule.latest_at_or_before(now)
        && due >= stored.effective_from
        && stored.last_occurrence.is_none_or(|last| last < due)
    {
        return Some(due);
    }
    schedule.next_after(now)
}

/// The schedule a path segment names.
fn target(segment: &str) -> Result<Target, ApiError> {
    if segment == TENANT {
        Ok(Target::Tenant)
    } else if is_object_id(segment) {
        Ok(Target::Group(segment.to_owned()))
    } else {
        Err(ApiError::bad_request(
            "invalid-id",
            format!("{segment:?} is neither `tenant` nor a group's object id"),
        ))
    }
}

pub(crate) fn field_error(invalid: Invalid) -> ApiError {
    ApiError::InvalidField {
        code: "invalid-schedule",
        pointer: format!("/{}", invalid.field),
        detail: invalid.message,
    }
}

fn cadence(name: &str) -> Result<Cadence, ApiError> {
    Cadence::parse(name).ok_or_else(|| {
        field_error(Invalid::new(
            "cadence",
            format!("{name:?} is not one of daily, weekly, monthly, quarterly"),
        ))
    })
}

fn weekday(name: &str) -> Result<Weekday, ApiError> {
    Weekday::parse(name).ok_or_else(|| {
        field_error(Invalid::new(
            "weekday",
            format!("{name:?} is not a weekday (monday … sunday)"),
        ))
    })
}

fn day_of_month(day: i64) -> Result<u8, ApiError> {
    u8::try_from(day)
        .ok()
        .filter(|day| (1..=31).contains(day))
        .ok_or_else(|| field_error(Invalid::new("day_of_month", "must be from 1 to 31")))
}

fn time_of_day(text: &str) -> Result<TimeOfDay, ApiError> {
    TimeOfDay::parse(text).ok_or_else(|| {
        field_error(Invalid::new(
            "time",
            format!("{text:?} is not a time of day as HH:MM (00:00 to 23:59)"),
        ))
    })
}

pub(crate) fn spec_of(body: &ScheduleBody) -> Result<Spec, ApiError> {
    Ok(Spec {
        cadence: cadence(&body.cadence)?,
        weekday: body.weekday.as_deref().map(weekday).transpose()?,
        day_of_month: body.day_of_month.map(day_of_month).transpose()?,
        at: body
            .time
            .as_deref()
            .map(time_of_day)
            .transpose()?
            .unwrap_or(TimeOfDay::MIDNIGHT),
        time_zone: body.time_zone.clone().unwrap_or_else(|| "UTC".to_owned()),
    })
}

pub(crate) fn merged(current: &Spec, patch: &SchedulePatch) -> Result<Spec, ApiError> {
    let cadence = patch
        .cadence
        .as_deref()
        .map(cadence)
        .transpose()?
        .unwrap_or(current.cadence);
    // What the new cadence does not take is dropped unless given.
    let takes_day = matches!(cadence, Cadence::Monthly | Cadence::Quarterly);
    Ok(Spec {
        cadence,
        weekday: match &patch.weekday {
            Some(name) => Some(weekday(name)?),
            None => current.weekday.filter(|_| cadence == Cadence::Weekly),
        },
        day_of_month: match patch.day_of_month {
            Some(day) => Some(day_of_month(day)?),
            None => current.day_of_month.filter(|_| takes_day),
        },
        at: patch
            .time
            .as_deref()
            .map(time_of_day)
            .transpose()?
            .unwrap_or(current.at),
        time_zone: patch
            .time_zone
            .clone()
            .unwrap_or_else(|| current.time_zone.clone()),
    })
}

/// What the audit log keeps of a schedule.
fn audited(view: &ScheduleView) -> serde_json::Value {
    serde_json::json!({
        "cadence": view.cadence,
        "weekday": view.weekday,
        "day_of_month": view.day_of_month,
        "time": view.time,
        "time_zone": view.time_zone,
        "paused": view.paused,
        "default": view.default,
    })
}

/// Stores `spec` (checked) as the schedule of `target` and audits the change.
async fn save(
    state: &AppState,
    caller: &Principal,
    tenant: &TenantSummary,
    target: &Target,
    spec: &Spec,
    paused: bool,
    action: &str,
) -> Result<HttpResponse, ApiError> {
    let checked = spec.check().map_err(field_error)?;
    let mut tx = state.pool.begin().await?;
    let before = schedules::get(&mut *tx, tenant.tenant_id, target).await?;
    let (stored, created) = schedules::put(
        &mut *tx,
        tenant.tenant_id,
        target,
        checked.spec(),
        paused,
        &caller.subject,
    )
    .await?;
    let before = match (&before, target) {
        (Some(before), _) => Some(audited(&ScheduleView::of_stored(tenant, before))),
        (None, Target::Tenant) => Some(audited(&ScheduleView::default_of(tenant))),
        (None, Target::Group(_)) => None,
    };
    let view = ScheduleView::of_stored(tenant, &stored);
    audit(
        &mut *tx,
        caller,
        Some(tenant.tenant_id),
        action,
        Some(&view.target),
        before,
        Some(audited(&view)),
    )
    .await?;
    tx.commit().await?;
    Ok(if created {
        HttpResponse::Created().json(view)
    } else {
        HttpResponse::Ok().json(view)
    })
}

#[utoipa::path(get, operation_id = "schedules_list", path = "/v1/tenants/{tenant}/schedules", tag = "schedules", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)")), responses((status = 200, description = "The tenant-wide schedule (its own or the default) first, then the groups', each with its next run time", body = Items<ScheduleView>), Refusals))]
pub(crate) async fn list(
    state: web::Data<AppState>,
    caller: Principal,
    tenant: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let tenant = visible_tenant(&state, &caller, *tenant).await?;
    let stored = schedules::list(&state.pool, tenant.tenant_id).await?;
    let mut items = Vec::with_capacity(stored.len() + 1);
    if stored
        .first()
        .is_none_or(|first| first.target != Target::Tenant)
    {
        items.push(ScheduleView::default_of(&tenant));
    }
    items.extend(stored.iter().map(|s| ScheduleView::of_stored(&tenant, s)));
    Ok(HttpResponse::Ok().json(Items { items }))
}

#[utoipa::path(get, operation_id = "schedules_show", path = "/v1/tenants/{tenant}/schedules/{target}", tag = "schedules", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)"), ("target" = String, Path, description = "`tenant`, or a group's object id", pattern = "^[A-Za-z0-9-]{1,256}$")), responses((status = 200, description = "The schedule with its next run time (the tenant's default when it has none of its own)", body = ScheduleView), Refusals))]
pub(crate) async fn show(
    state: web::Data<AppState>,
    caller: Principal,
    path: web::Path<(Uuid, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, segment) = path.into_inner();
    let tenant = visible_tenant(&state, &caller, tenant).await?;
    let target = target(&segment)?;
    let view = match schedules::get(&state.pool, tenant.tenant_id, &target).await? {
        Some(stored) => ScheduleView::of_stored(&tenant, &stored),
        None if target == Target::Tenant => ScheduleView::default_of(&tenant),
        None => return Err(ApiError::not_found("schedule", segment)),
    };
    Ok(HttpResponse::Ok().json(view))
}

#[utoipa::path(put, operation_id = "schedules_put", path = "/v1/tenants/{tenant}/schedules/{target}", tag = "schedules", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)"), ("target" = String, Path, description = "`tenant`, or a group's object id", pattern = "^[A-Za-z0-9-]{1,256}$")), request_body = ScheduleBody, responses((status = 200, description = "Replaced", body = ScheduleView), (status = 201, description = "Created", body = ScheduleView), Refusals))]
pub(crate) async fn put(
    state: web::Data<AppState>,
    caller: Principal,
    path: web::Path<(Uuid, String)>,
    body: web::Json<ScheduleBody>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, segment) = path.into_inner();
    let tenant = visible_tenant(&state, &caller, tenant).await?;
    let target = target(&segment)?;
    let spec = spec_of(&body)?;
    let paused = body.paused.unwrap_or(false);
    save(
        &state,
        &caller,
        &tenant,
        &target,
        &spec,
        paused,
        "schedule.put",
    )
    .await
}

#[utoipa::path(patch, operation_id = "schedules_patch", path = "/v1/tenants/{tenant}/schedules/{target}", tag = "schedules", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)"), ("target" = String, Path, description = "`tenant`, or a group's object id", pattern = "^[A-Za-z0-9-]{1,256}$")), request_body = SchedulePatch, responses((status = 200, description = "Changed (pausing or changing the tenant's default makes it a schedule of its own)", body = ScheduleView), (status = 201, description = "The tenant's default, changed, became its own schedule", body = ScheduleView), Refusals))]
pub(crate) async fn patch(
    state: web::Data<AppState>,
    caller: Principal,
    path: web::Path<(Uuid, String)>,
    body: web::Json<SchedulePatch>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, segment) = path.into_inner();
    let tenant = visible_tenant(&state, &caller, tenant).await?;
    let target = target(&segment)?;
    let (current, paused) = match schedules::get(&state.pool, tenant.tenant_id, &target).await? {
        Some(stored) => (stored.spec, stored.paused_at.is_some()),
        None if target == Target::Tenant => (Spec::nightly(), false),
        None => return Err(ApiError::not_found("schedule", segment)),
    };
    let spec = merged(&current, &body)?;
    let paused = body.paused.unwrap_or(paused);
    save(
        &state,
        &caller,
        &tenant,
        &target,
        &spec,
        paused,
        "schedule.update",
    )
    .await
}

#[utoipa::path(delete, operation_id = "schedules_delete", path = "/v1/tenants/{tenant}/schedules/{target}", tag = "schedules", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)"), ("target" = String, Path, description = "`tenant`, or a group's object id", pattern = "^[A-Za-z0-9-]{1,256}$")), responses((status = 204, description = "Deleted: a group's schedule is gone; the tenant runs the default schedule again"), Refusals))]
pub(crate) async fn delete(
    state: web::Data<AppState>,
    caller: Principal,
    path: web::Path<(Uuid, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, segment) = path.into_inner();
    let tenant = visible_tenant(&state, &caller, tenant).await?;
    let target = target(&segment)?;
    let mut tx = state.pool.begin().await?;
    let Some(before) = schedules::get(&mut *tx, tenant.tenant_id, &target).await? else {
        return Err(ApiError::not_found("schedule", segment));
    };
    schedules::delete(&mut *tx, tenant.tenant_id, &target).await?;
    let after = (target == Target::Tenant).then(|| audited(&ScheduleView::default_of(&tenant)));
    audit(
        &mut *tx,
        &caller,
        Some(tenant.tenant_id),
        "schedule.delete",
        Some(&segment),
        Some(audited(&ScheduleView::of_stored(&tenant, &before))),
        after,
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}
