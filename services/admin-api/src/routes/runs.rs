//! `/v1/runs`: the sync runs of a tenant, or of every tenant the caller may see (Sync Now,
//! per-user and per-group syncs, reconciles, rules applies, live rounds), newest first, and one
//! run with its counts.

use super::{Page, PageQuery, check_access, rfc3339, visible_tenant};
use crate::error::ApiError;
use crate::openapi::Refusals;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use cardsync_auth::{Principal, TenantAccess};
use cardsync_store::runs::{self, Run, RunStatus};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use uuid::Uuid;

pub(super) fn configure(config: &mut web::ServiceConfig) {
    config
        .service(web::resource("/runs").route(web::get().to(list)))
        .service(web::resource("/runs/{run}").route(web::get().to(show)));
}

/// A run as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RunView {
    id: Uuid,
    tenant_id: Uuid,
    kind: String,
    cause: String,
    started_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[schema(value_type = String)]
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<String>,
    counts: BTreeMap<String, i64>,
}

impl From<Run> for RunView {
    fn from(run: Run) -> Self {
        Self {
            id: run.run_id,
            tenant_id: run.tenant_id,
            kind: run.kind,
            cause: run.cause,
            started_by: run.started_by,
            target: run.target,
            status: run.status.as_str(),
            detail: run.detail,
            created_at: rfc3339(run.created_at),
            started_at: run.started_at.map(rfc3339),
            finished_at: run.finished_at.map(rfc3339),
            counts: run.counts,
        }
    }
}

/// A run status to list by.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum StatusFilter {
    Queued,
    Running,
    Succeeded,
    Failed,
    Held,
    Rejected,
}

impl From<StatusFilter> for RunStatus {
    fn from(status: StatusFilter) -> Self {
        match status {
            StatusFilter::Queued => RunStatus::Queued,
            StatusFilter::Running => RunStatus::Running,
            StatusFilter::Succeeded => RunStatus::Succeeded,
            StatusFilter::Failed => RunStatus::Failed,
            StatusFilter::Held => RunStatus::Held,
            StatusFilter::Rejected => RunStatus::Rejected,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RunsQuery {
    /// The tenant whose runs are listed; without it, the runs of every tenant the caller may
    /// see.
    tenant: Option<Uuid>,
    /// Only runs in this status (`held`: the runs waiting for an admin).
    status: Option<StatusFilter>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// The cursor of a run: its creation time (Unix nanoseconds) and id.
fn cursor_of(run: &RunView, created_at: OffsetDateTime) -> String {
    format!("{}_{}", created_at.unix_timestamp_nanos(), run.id)
}

fn parse_cursor(cursor: &str) -> Result<(OffsetDateTime, Uuid), ApiError> {
    let invalid = || ApiError::bad_request("invalid-cursor", "cursor is not one this API gave");
    let (nanos, id) = cursor.split_once('_').ok_or_else(invalid)?;
    let nanos: i128 = nanos.parse().map_err(|_| invalid())?;
    let at = OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| invalid())?;
    let id = Uuid::parse_str(id).map_err(|_| invalid())?;
    Ok((at, id))
}

#[utoipa::path(get, operation_id = "runs_list", path = "/v1/runs", tag = "runs", params(RunsQuery), responses((status = 200, description = "Runs of the tenant, or of every tenant the caller may see, newest first", body = Page<RunView>), Refusals))]
pub(crate) async fn list(
    state: web::Data<AppState>,
    caller: Principal,
    query: web::Query<RunsQuery>,
) -> Result<HttpResponse, ApiError> {
    let tenants: Option<Vec<Uuid>> = match (query.tenant, &caller.tenants) {
        (Some(tenant), _) => Some(vec![
            visible_tenant(&state, &caller, tenant).await?.tenant_id,
        ]),
        (None, TenantAccess::All) => None,
        (None, TenantAccess::Only(tenants)) => Some(tenants.iter().copied().collect()),
    };
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor.clone(),
    };
    let limit = page.limit(&state)?;
    let before = page.cursor.as_deref().map(parse_cursor).transpose()?;
    let status = query.status.map(RunStatus::from);
    let runs = runs::list_of(&state.pool, tenants.as_deref(), status, before, limit).await?;
    let full = i64::try_from(runs.len()).unwrap_or(i64::MAX) >= limit;
    let last = runs.last().map(|run| (run.created_at, run.run_id));
    let items: Vec<RunView> = runs.into_iter().map(RunView::from).collect();
    let next_cursor = match (full, last) {
        (true, Some((at, _))) => items.last().map(|run| cursor_of(run, at)),
        _ => None,
    };
    Ok(HttpResponse::Ok().json(Page { items, next_cursor }))
}

#[utoipa::path(get, operation_id = "runs_show", path = "/v1/runs/{run}", tag = "runs", params(("run" = Uuid, Path, description = "The run")), responses((status = 200, description = "The run with its counts", body = RunView), Refusals))]
pub(crate) async fn show(
    state: web::Data<AppState>,
    caller: Principal,
    run: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let run = visible_run(&state, &caller, *run).await?;
    Ok(HttpResponse::Ok().json(RunView::from(run)))
}

/// The run when it exists and the caller may see its tenant (a run of a tenant the caller may
/// not see does not exist for it).
pub(crate) async fn visible_run(
    state: &AppState,
    caller: &Principal,
    run: Uuid,
) -> Result<Run, ApiError> {
    let found = runs::get(&state.pool, run)
        .await?
        .ok_or_else(|| ApiError::not_found("run", run))?;
    if check_access(caller, found.tenant_id).is_err() {
        return Err(ApiError::not_found("run", run));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_as_the_time_and_id_it_was_made_of() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_765_000_000_123_456_000).unwrap();
        let id = Uuid::new_v4();
        let cursor = format!("{}_{id}", at.unix_timestamp_nanos());
        assert_eq!(parse_cursor(&cursor).unwrap(), (at, id));
        assert!(parse_cursor("nonsense").is_err());
        assert!(parse_cursor("12_notauuid").is_err());
    }
}
