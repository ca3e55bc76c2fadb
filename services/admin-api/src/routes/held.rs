//! The mass-change safety rail's operator surface: a held run's plan (what it would change and
//! why, with a bounded sample of its commands), approving it (exactly its kept commands are
//! sent, at their versions; nothing is planned again) or rejecting it (nothing is sent; the
//! tenant stays paused), resuming a paused tenant, and the tenant's thresholds. Every change is
//! audited; what waited while the tenant was paused (parked runs, a pending round) is asked for
//! again in the transaction that unpauses it.

use super::runs::{RunView, visible_run};
use super::{audit, optional_body, rfc3339, visible_tenant};
use crate::error::ApiError;
use crate::openapi::Refusals;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use cardsync_auth::Principal;
use cardsync_bus::{Outgoing, names, routing};
use cardsync_cards::DigestEvents;
use cardsync_proto::{self as proto, Message as _};
use cardsync_store::runs::RunStatus;
use cardsync_store::safety::{self, SafetyState, Thresholds, Worker};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

/// Kept commands read and published per batch when a run is approved.
const APPROVE_BATCH: i64 = 500;

/// The most commands a plan shows.
const MAX_SAMPLE: u32 = 100;

pub(super) fn configure(config: &mut web::ServiceConfig) {
    config
        .service(web::resource("/runs/{run}/plan").route(web::get().to(plan)))
        .service(web::resource("/runs/{run}/approve").route(web::post().to(approve)))
        .service(web::resource("/runs/{run}/reject").route(web::post().to(reject)))
        .service(web::resource("/tenants/{tenant}/resume").route(web::post().to(resume)))
        .service(
            web::resource("/tenants/{tenant}/safety")
                .route(web::get().to(show_safety))
                .route(web::put().to(put_safety)),
        );
}

/// One kept command, as a plan shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct HeldCommandView {
    seq: i64,
    user_id: String,
    version: i64,
    action: String,
}

/// A held (or decided) run's plan.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct PlanView {
    run: RunView,
    /// `bulk` or `live`: the queue its commands go to.
    lane: String,
    /// What it would change and why: `verdict`, `notes` (e.g. a scope group no longer
    /// found), `outcomes`, `fields`, `causes` (removals per cause), `samples` (people),
    /// `active_cards`, `thresholds`.
    #[schema(value_type = Object)]
    summary: serde_json::Value,
    /// Commands kept (none once decided).
    commands: i64,
    /// The first kept commands, in plan order.
    sample: Vec<HeldCommandView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decided_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decided_by: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PlanQuery {
    /// Kept commands to show (1 to 100, default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

#[utoipa::path(get, operation_id = "runs_plan", path = "/v1/runs/{run}/plan", tag = "runs", params(("run" = Uuid, Path, description = "The run"), PlanQuery), responses((status = 200, description = "What the held run would change and why, with the first kept commands", body = PlanView), Refusals))]
pub(crate) async fn plan(
    state: web::Data<AppState>,
    caller: Principal,
    run: web::Path<Uuid>,
    query: web::Query<PlanQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=MAX_SAMPLE).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid-limit",
            format!("limit must be between 1 and {MAX_SAMPLE}"),
        ));
    }
    let run = visible_run(&state, &caller, *run).await?;
    let plan = safety::plan(&state.pool, run.run_id)
        .await?
        .ok_or_else(|| ApiError::not_found("plan of run", run.run_id))?;
    let commands = safety::command_count(&state.pool, run.run_id).await?;
    let sample = safety::commands(&state.pool, run.run_id, 0, i64::from(limit))
        .await?
        .into_iter()
        .map(|command| HeldCommandView {
            seq: command.seq,
            user_id: command.user_id,
            version: command.version,
            action: command.action,
        })
        .collect();
    Ok(HttpResponse::Ok().json(PlanView {
        run: RunView::from(run),
        lane: plan.lane,
        summary: plan.summary,
        commands,
        sample,
        decided_at: plan.decided_at.map(rfc3339),
        decided_by: plan.decided_by,
    }))
}

/// A run that is not held cannot be decided.
fn not_held(run: Uuid) -> ApiError {
    ApiError::Conflict {
        code: "run-not-held",
        detail: format!("run {run} is not held by the safety rail"),
    }
}

/// Locks the run for a decision: 404 when it went, 409 when it is no longer held.
async fn lock_held(conn: &mut PgConnection, run: Uuid) -> Result<(), ApiError> {
    match safety::lock_held(conn, run).await? {
        None => Err(ApiError::not_found("run", run)),
        Some(false) => Err(not_held(run)),
        Some(true) => Ok(()),
    }
}

#[utoipa::path(post, operation_id = "runs_approve", path = "/v1/runs/{run}/approve", tag = "runs", params(("run" = Uuid, Path, description = "The held run")), responses((status = 200, description = "Every kept command was sent, at its version; the run ends once the card-writer has applied them, and the tenant is resumed", body = RunView), Refusals))]
pub(crate) async fn approve(
    state: web::Data<AppState>,
    caller: Principal,
    run: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let run = visible_run(&state, &caller, *run).await?;
    if run.status != RunStatus::Held {
        return Err(not_held(run.run_id));
    }
    let plan = safety::plan(&state.pool, run.run_id)
        .await?
        .ok_or_else(|| not_held(run.run_id))?;
    // Exactly the kept commands, confirmed by the broker, before anything is recorded: an
    // approval the broker fails is answered 503 and may be repeated (a version applies once).
    let sent = send_kept(&state, run.run_id, run.tenant_id, &plan.lane).await?;
    let mut tx = state.pool.begin().await?;
    lock_held(&mut tx, run.run_id).await?;
    let digests = DigestEvents::new(state.topology.name(names::CARD_EVENTS));
    safety::approved(
        &mut tx,
        run.run_id,
        run.tenant_id,
        &caller.subject,
        sent,
        &digests,
    )
    .await?;
    let rail = safety::lock(&mut tx, run.tenant_id).await?;
    if rail.paused_at.is_none() {
        serve_waiting(&state, &mut tx, &rail, &caller.subject).await?;
    }
    audit(
        &mut *tx,
        &caller,
        Some(run.tenant_id),
        "run.approve",
        Some(&run.run_id.to_string()),
        Some(json!({"status": "held"})),
        Some(json!({"status": "running", "commands": sent})),
    )
    .await?;
    tx.commit().await?;
    let run = visible_run(&state, &caller, run.run_id).await?;
    Ok(HttpResponse::Ok().json(RunView::from(run)))
}

/// Publishes a held run's kept commands in plan order; returns how many.
async fn send_kept(state: &AppState, run: Uuid, tenant: Uuid, lane: &str) -> Result<i64, ApiError> {
    let tenant_text = tenant.to_string();
    let routing_key = if lane == "bulk" {
        routing::bulk_command(&tenant_text)
    } else {
        routing::live_command(&tenant_text)
    };
    let exchange = state.topology.name(names::CARDS);
    let mut after = 0;
    let mut sent = 0;
    loop {
        let page = safety::commands(&state.pool, run, after, APPROVE_BATCH).await?;
        let Some(last) = page.last() else {
            return Ok(sent);
        };
        after = last.seq;
        let mut outgoing = Vec::with_capacity(page.len());
        for kept in &page {
            let command = proto::CardCommand::decode(kept.command.as_slice())
                .map_err(|error| ApiError::Internal(Box::new(error)))?;
            outgoing.push(Outgoing::new(&exchange, &routing_key, &command));
        }
        sent += i64::try_from(page.len()).unwrap_or(i64::MAX);
        state
            .publisher
            .publish_all(outgoing)
            .await
            .map_err(|error| ApiError::Unavailable {
                what: "the message broker",
                source: error.into(),
            })?;
    }
}

/// Asks again, on a tenant just unpaused (its rail row locked in `tx`), for what waited: the
/// parked runs' requests and, when a round was asked for, one incremental round. Published
/// before `tx` commits: a failure rolls the resume back, so nothing waits for ever.
async fn serve_waiting(
    state: &AppState,
    tx: &mut PgConnection,
    rail: &SafetyState,
    by: &str,
) -> Result<(), ApiError> {
    let tenant_text = rail.tenant_id.to_string();
    let exchange = state.topology.name(names::SYNC);
    let parked = safety::parked(&mut *tx, rail.tenant_id).await?;
    let mut outgoing = Vec::with_capacity(parked.len() + 1);
    for request in &parked {
        let message = proto::SyncRequest::decode(request.request.as_slice())
            .map_err(|error| ApiError::Internal(Box::new(error)))?;
        let routing_key = match request.worker {
            Worker::Delta => routing::sync_request(&tenant_text),
            Worker::Reconcile => routing::reconcile_request(&tenant_text),
        };
        outgoing.push(Outgoing::new(&exchange, &routing_key, &message));
    }
    if rail.round_pending {
        let message = proto::SyncRequest {
            envelope: Some(proto::Envelope::new(&tenant_text, proto::Cause::Manual)),
            scope: proto::sync_request::Scope::Tenant as i32,
            target_id: String::new(),
            depth: proto::sync_request::Depth::Info as i32,
            run_id: String::new(),
        };
        outgoing.push(Outgoing::new(
            &exchange,
            &routing::sync_request(&tenant_text),
            &message,
        ));
    }
    if outgoing.is_empty() {
        return Ok(());
    }
    state
        .publisher
        .publish_all(outgoing)
        .await
        .map_err(|error| ApiError::Unavailable {
            what: "the message broker",
            source: error.into(),
        })?;
    let ids: Vec<Uuid> = parked.iter().map(|request| request.run_id).collect();
    safety::unpark(&mut *tx, &ids).await?;
    safety::resume(tx, rail.tenant_id, by).await?;
    Ok(())
}

/// Why a held run is rejected.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rejection {
    /// Recorded on the run (at most 500 characters).
    reason: Option<String>,
}

#[utoipa::path(post, operation_id = "runs_reject", path = "/v1/runs/{run}/reject", tag = "runs", params(("run" = Uuid, Path, description = "The held run")), request_body(content = Option<Rejection>, description = "Why (optional)"), responses((status = 200, description = "Nothing was sent; the run is rejected and the tenant stays paused until resumed", body = RunView), Refusals))]
pub(crate) async fn reject(
    state: web::Data<AppState>,
    caller: Principal,
    run: web::Path<Uuid>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: Rejection = optional_body(&body)?.unwrap_or_default();
    let reason = body.reason.unwrap_or_default();
    if reason.chars().count() > 500 {
        return Err(ApiError::invalid(
            "invalid-reason",
            "reason is longer than 500 characters",
        ));
    }
    let run = visible_run(&state, &caller, *run).await?;
    let mut tx = state.pool.begin().await?;
    lock_held(&mut tx, run.run_id).await?;
    let mut detail = format!("rejected by {}", caller.subject);
    if !reason.trim().is_empty() {
        detail.push_str(": ");
        detail.push_str(reason.trim());
    }
    safety::rejected(&mut tx, run.run_id, &caller.subject, &detail).await?;
    audit(
        &mut *tx,
        &caller,
        Some(run.tenant_id),
        "run.reject",
        Some(&run.run_id.to_string()),
        Some(json!({"status": "held"})),
        Some(json!({"status": "rejected", "reason": reason})),
    )
    .await?;
    tx.commit().await?;
    let run = visible_run(&state, &caller, run.run_id).await?;
    Ok(HttpResponse::Ok().json(RunView::from(run)))
}

/// A tenant's safety rail.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SafetyView {
    tenant_id: Uuid,
    /// Hold when deactivations and deletions exceed this percentage of the active cards.
    removal_percent: f32,
    /// Hold when field updates exceed this percentage of the active cards.
    update_percent: f32,
    /// Below this many removals (or updates) nothing is held.
    minimum: i32,
    /// Whether the tenant is paused (rounds wait).
    paused: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    paused_at: Option<String>,
    /// The held or rejected run that paused it.
    #[serde(skip_serializing_if = "Option::is_none")]
    paused_by_run: Option<Uuid>,
    /// A round waits for the resume.
    round_pending: bool,
    /// Runs asked for while paused, asked again on resume.
    parked_runs: Vec<Uuid>,
    /// Runs waiting for an admin.
    held_runs: Vec<Uuid>,
}

async fn safety_view(state: &AppState, tenant: Uuid) -> Result<SafetyView, ApiError> {
    let rail = safety::state(&state.pool, tenant).await?;
    let parked = safety::parked(&state.pool, tenant).await?;
    let held = safety::held_runs(&state.pool, tenant).await?;
    Ok(SafetyView {
        tenant_id: tenant,
        removal_percent: rail.thresholds.removal_percent,
        update_percent: rail.thresholds.update_percent,
        minimum: rail.thresholds.minimum,
        paused: rail.paused_at.is_some(),
        paused_at: rail.paused_at.map(rfc3339),
        paused_by_run: rail.paused_by_run,
        round_pending: rail.round_pending,
        parked_runs: parked.iter().map(|request| request.run_id).collect(),
        held_runs: held,
    })
}

fn thresholds_json(thresholds: &Thresholds) -> serde_json::Value {
    json!({
        "removal_percent": thresholds.removal_percent,
        "update_percent": thresholds.update_percent,
        "minimum": thresholds.minimum,
    })
}

#[utoipa::path(get, operation_id = "safety_show", path = "/v1/tenants/{tenant}/safety", tag = "safety", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)")), responses((status = 200, description = "The tenant's thresholds, whether it is paused, and what waits", body = SafetyView), Refusals))]
pub(crate) async fn show_safety(
    state: web::Data<AppState>,
    caller: Principal,
    tenant: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let tenant = visible_tenant(&state, &caller, *tenant).await?.tenant_id;
    Ok(HttpResponse::Ok().json(safety_view(&state, tenant).await?))
}

/// A tenant's thresholds.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SafetyPut {
    /// 0 to 100: hold when deactivations and deletions exceed this share of the active cards.
    #[schema(minimum = 0, maximum = 100)]
    removal_percent: f32,
    /// 0 to 100: hold when field updates exceed this share of the active cards.
    #[schema(minimum = 0, maximum = 100)]
    update_percent: f32,
    /// 1 to 1,000,000: below this many removals (or updates) nothing is held.
    #[schema(minimum = 1, maximum = 1_000_000)]
    minimum: i32,
}

#[utoipa::path(put, operation_id = "safety_put", path = "/v1/tenants/{tenant}/safety", tag = "safety", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)")), request_body = SafetyPut, responses((status = 200, description = "The tenant's rail with the new thresholds", body = SafetyView), Refusals))]
pub(crate) async fn put_safety(
    state: web::Data<AppState>,
    caller: Principal,
    tenant: web::Path<Uuid>,
    body: web::Json<SafetyPut>,
) -> Result<HttpResponse, ApiError> {
    let tenant = visible_tenant(&state, &caller, *tenant).await?.tenant_id;
    let body = body.into_inner();
    let percent = |value: f32| value.is_finite() && (0.0..=100.0).contains(&value);
    if !percent(body.removal_percent) || !percent(body.update_percent) {
        return Err(ApiError::invalid(
            "invalid-threshold",
            "removal_percent and update_percent must be between 0 and 100",
        ));
    }
    if !(1..=1_000_000).contains(&body.minimum) {
        return Err(ApiError::invalid(
            "invalid-minimum",
            "minimum must be between 1 and 1000000",
        ));
    }
    let thresholds = Thresholds {
        removal_percent: body.removal_percent,
        update_percent: body.update_percent,
        minimum: body.minimum,
    };
    let mut tx = state.pool.begin().await?;
    let before = safety::lock(&mut tx, tenant).await?;
    safety::set_thresholds(&mut *tx, tenant, &thresholds, &caller.subject).await?;
    audit(
        &mut *tx,
        &caller,
        Some(tenant),
        "safety.update",
        None,
        Some(thresholds_json(&before.thresholds)),
        Some(thresholds_json(&thresholds)),
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(safety_view(&state, tenant).await?))
}

#[utoipa::path(post, operation_id = "tenants_resume", path = "/v1/tenants/{tenant}/resume", tag = "safety", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)")), responses((status = 200, description = "The tenant is resumed: the runs asked for while it was paused, and one round if any was asked for, are requested again", body = SafetyView), Refusals))]
pub(crate) async fn resume(
    state: web::Data<AppState>,
    caller: Principal,
    tenant: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let tenant = visible_tenant(&state, &caller, *tenant).await?.tenant_id;
    let mut tx = state.pool.begin().await?;
    let rail = safety::lock(&mut tx, tenant).await?;
    if let Some(held) = safety::held_runs(&mut *tx, tenant).await?.first() {
        return Err(ApiError::Conflict {
            code: "run-held",
            detail: format!("run {held} is held by the safety rail; approve or reject it first"),
        });
    }
    if rail.paused_at.is_none() {
        return Err(ApiError::Conflict {
            code: "tenant-not-paused",
            detail: format!("tenant {tenant} is not paused"),
        });
    }
    safety::resume(&mut tx, tenant, &caller.subject).await?;
    serve_waiting(&state, &mut tx, &rail, &caller.subject).await?;
    audit(
        &mut *tx,
        &caller,
        Some(tenant),
        "tenant.resume",
        None,
        Some(json!({"paused": true, "paused_by_run": rail.paused_by_run})),
        Some(json!({"paused": false, "round_pending": rail.round_pending})),
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(safety_view(&state, tenant).await?))
}
