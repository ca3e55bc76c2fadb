//! `/v1/tenants/{tenant}/rules`: the field rules, validated on save and versioned with their
//! history; the **dry run** (what a proposed rule set would change on the cards, from the
//! stored snapshot and cards, without a Graph call); and the **apply** (a `rules_apply` run the
//! reconciler carries out under the tenant's round lease). Saving rules that differ from the
//! ones in force applies them at once; `POST …/rules/apply` applies the rules in force again.

use super::sync::{RunRequest, Worker, check_syncable, request};
use super::tenants::check_rules;
use super::{Items, audit, rfc3339, visible_tenant};
use crate::error::ApiError;
use crate::openapi::Refusals;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use cardsync_auth::Principal;
use cardsync_proto::sync_request::{Depth, Scope};
use cardsync_rounds::preview::{self, Preview, Sample, Tally};
use cardsync_rounds::select;
use cardsync_rules::FieldRules;
use cardsync_store::admin::{self, TenantSummary};
use cardsync_store::directory;
use cardsync_store::runs;
use serde::Serialize;
use serde_json::json;
use std::time::Instant;
use uuid::Uuid;

/// The run kind of a rules apply.
const APPLY_KIND: &str = "rules_apply";

pub(super) fn configure(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/tenants/{tenant}/rules")
                .route(web::get().to(show_rules))
                .route(web::put().to(put_rules)),
        )
        .service(
            web::resource("/tenants/{tenant}/rules/history").route(web::get().to(rules_history)),
        )
        .service(web::resource("/tenants/{tenant}/rules/dry-run").route(web::post().to(dry_run)))
        .service(web::resource("/tenants/{tenant}/rules/apply").route(web::post().to(apply)));
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RulesView {
    version: i64,
    #[schema(value_type = Object)]
    rules: FieldRules,
}

/// A rules apply that was asked for.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ApplyView {
    /// The `rules_apply` run (`GET /v1/runs/{run}`).
    run_id: Uuid,
    /// `queued`, or `failed` when the broker did not take the request (the rules are saved;
    /// `POST …/rules/apply` asks again).
    status: String,
}

/// The answer to a save.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SavedRulesView {
    version: i64,
    #[schema(value_type = Object)]
    rules: FieldRules,
    /// The apply of the saved rules to every card; absent when nothing changed or the tenant
    /// is not synced (no connection, or disconnected): its next sync applies them.
    #[serde(skip_serializing_if = "Option::is_none")]
    apply: Option<ApplyView>,
}

#[utoipa::path(get, operation_id = "scope_show_rules", path = "/v1/tenants/{tenant}/rules", tag = "rules", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)")), responses((status = 200, description = "The rules in force and their version", body = RulesView), Refusals))]
pub(crate) async fn show_rules(
    state: web::Data<AppState>,
    caller: Principal,
    tenant: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let tenant = visible_tenant(&state, &caller, *tenant).await?.tenant_id;
    let (rules, version) = rules_in_force(&state, tenant).await?;
    Ok(HttpResponse::Ok().json(RulesView { version, rules }))
}

async fn rules_in_force(state: &AppState, tenant: Uuid) -> Result<(FieldRules, i64), ApiError> {
    let mut tx = state.pool.begin().await?;
    let found = admin::lock_rules(&mut tx, tenant)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant", tenant))?;
    tx.rollback().await?;
    Ok(found)
}

/// The apply request of `tenant`'s rules.
fn apply_request(tenant: Uuid) -> RunRequest {
    RunRequest {
        tenant,
        kind: APPLY_KIND,
        target: None,
        scope: Scope::Tenant,
        depth: Depth::Cards,
        worker: Worker::Reconciler,
    }
}

#[utoipa::path(put, operation_id = "scope_put_rules", path = "/v1/tenants/{tenant}/rules", tag = "rules", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)")), request_body(content = Object, description = "Field rules (crates/rules/README.md)"), responses((status = 200, description = "Saved as a new version (or unchanged); rules that changed are applied to every card (`apply` names the run)", body = SavedRulesView), Refusals))]
pub(crate) async fn put_rules(
    state: web::Data<AppState>,
    caller: Principal,
    tenant: web::Path<Uuid>,
    body: web::Json<FieldRules>,
) -> Result<HttpResponse, ApiError> {
    let summary = visible_tenant(&state, &caller, *tenant).await?;
    let tenant = summary.tenant_id;
    let rules = body.into_inner();
    check_rules(&rules)?;
    let mut tx = state.pool.begin().await?;
    let (before, before_version) = admin::lock_rules(&mut tx, tenant)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant", tenant))?;
    if before == rules {
        tx.rollback().await?;
        return Ok(HttpResponse::Ok().json(SavedRulesView {
            version: before_version,
            rules,
            apply: None,
        }));
    }
    let version = admin::save_rules(&mut tx, tenant, &rules, &caller.subject).await?;
    // The apply's run is recorded with the rules, so a saved version never lacks its run.
    let asked = apply_request(tenant);
    let run_id = check_syncable(&summary).is_ok().then(Uuid::now_v7);
    if let Some(run_id) = run_id {
        runs::create(&mut *tx, &asked.run(run_id, &caller)).await?;
    }
    audit(
        &mut *tx,
        &caller,
        Some(tenant),
        "rules.update",
        Some(&format!("version {version}")),
        Some(json!(RulesView {
            version: before_version,
            rules: before
        })),
        Some(json!({"version": version, "rules": rules, "apply_run_id": run_id})),
    )
    .await?;
    tx.commit().await?;
    let apply = match run_id {
        Some(run_id) => Some(ApplyView {
            run_id,
            status: match asked.publish(&state, run_id).await {
                Ok(()) => "queued",
                Err(error) => {
                    tracing::warn!(%tenant, %run_id, error = %error, "rules saved; their apply was not requested");
                    "failed"
                }
            }
            .to_owned(),
        }),
        None => None,
    };
    Ok(HttpResponse::Ok().json(SavedRulesView {
        version,
        rules,
        apply,
    }))
}

#[utoipa::path(post, operation_id = "rules_apply", path = "/v1/tenants/{tenant}/rules/apply", tag = "rules", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)")), responses((status = 202, description = "The rules in force are applied to every card; the run id names the apply", body = super::sync::SyncAccepted), Refusals))]
pub(crate) async fn apply(
    state: web::Data<AppState>,
    caller: Principal,
    tenant: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let summary = visible_tenant(&state, &caller, *tenant).await?;
    check_syncable(&summary)?;
    request(
        &state,
        &caller,
        apply_request(summary.tenant_id),
        "rules.apply",
    )
    .await
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RulesVersionView {
    version: i64,
    changed_by: String,
    changed_at: String,
    #[schema(value_type = Object)]
    rules: FieldRules,
}

#[utoipa::path(get, operation_id = "scope_rules_history", path = "/v1/tenants/{tenant}/rules/history", tag = "rules", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)")), responses((status = 200, description = "Saved versions, newest first", body = Items<RulesVersionView>), Refusals))]
pub(crate) async fn rules_history(
    state: web::Data<AppState>,
    caller: Principal,
    tenant: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let tenant = visible_tenant(&state, &caller, *tenant).await?.tenant_id;
    let items: Vec<RulesVersionView> = admin::rules_history(&state.pool, tenant, 100)
        .await?
        .into_iter()
        .map(|saved| RulesVersionView {
            version: saved.version,
            changed_by: saved.changed_by,
            changed_at: rfc3339(saved.changed_at),
            rules: saved.rules,
        })
        .collect();
    Ok(HttpResponse::Ok().json(Items { items }))
}

/// One card's value before and after.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SampleView {
    /// The card (absent for a card the apply would create).
    card_id: Option<Uuid>,
    /// Its directory user (Entra object id).
    user_id: String,
    /// The value now (`null`: empty).
    before: Option<String>,
    /// The value the proposed rules give (`null`: empty).
    after: Option<String>,
}

impl From<Sample> for SampleView {
    fn from(sample: Sample) -> Self {
        Self {
            card_id: sample.card_id,
            user_id: sample.user_id,
            before: sample.before,
            after: sample.after,
        }
    }
}

/// What would change in one field (or the cards' status).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ChangeView {
    /// The card field (absent for the status).
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    /// Cards whose value would change.
    changes: u64,
    /// A few of them (at most 5), in user id order.
    samples: Vec<SampleView>,
}

impl ChangeView {
    fn of(field: Option<String>, tally: Tally) -> Self {
        Self {
            field,
            changes: tally.changes,
            samples: tally.samples.into_iter().map(SampleView::from).collect(),
        }
    }
}

/// A field the dry run could not preview.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct UnpreviewableView {
    /// The field (`uid` for the UID source).
    field: String,
    /// The properties its rule reads that the stored snapshot lacks (its users delta did not
    /// select them); the apply enumerates them first.
    properties: Vec<String>,
}

/// What a proposed rule set would change on the tenant's cards.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DryRunView {
    /// The version of the rules in force the proposal was compared with.
    rules_version: i64,
    /// Directory users examined (the stored snapshot).
    users: u64,
    /// Cards on which at least one previewed field would change.
    cards_changed: u64,
    /// Cards that would be made (users the rules map who have no card).
    cards_created: u64,
    /// Users who should have a card but whom the proposed rules cannot map (an empty UID
    /// property with `when_missing: skip`); their cards are left alone.
    unmappable: u64,
    /// Per field, the cards whose value would change, in field-name order; fields that change
    /// on no card are left out.
    fields: Vec<ChangeView>,
    /// Cards whose status would change (`active`, `deactivated`, `deleted`).
    status: ChangeView,
    /// Fields not counted because their rule reads a property the snapshot lacks.
    unpreviewable: Vec<UnpreviewableView>,
    /// Whether applying these rules enumerates every user with a new `$select` first.
    enumeration_first: bool,
    /// How long the dry run took.
    elapsed_ms: u64,
}

impl DryRunView {
    fn of(preview: Preview, rules_version: i64, enumeration_first: bool, started: Instant) -> Self {
        Self {
            rules_version,
            users: preview.users,
            cards_changed: preview.cards_changed,
            cards_created: preview.cards_created,
            unmappable: preview.unmappable,
            fields: preview
                .fields
                .into_iter()
                .map(|(field, tally)| ChangeView::of(Some(field), tally))
                .collect(),
            status: ChangeView::of(None, preview.status),
            unpreviewable: preview
                .unpreviewable
                .into_iter()
                .map(|(field, properties)| UnpreviewableView { field, properties })
                .collect(),
            enumeration_first,
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// The `$select` the tenant's snapshot was enumerated with; when it was never recorded (an
/// enumeration older than the record), what the rules in force select, the best guess.
async fn snapshot_select(
    state: &AppState,
    tenant: &TenantSummary,
    in_force: &FieldRules,
) -> Result<(Vec<String>, bool), ApiError> {
    Ok(
        match directory::users_select(&state.pool, tenant.tenant_id).await? {
            Some(selected) => (selected, true),
            None => (select::users_select(in_force).into_iter().collect(), false),
        },
    )
}

#[utoipa::path(post, operation_id = "rules_dry_run", path = "/v1/tenants/{tenant}/rules/dry-run", tag = "rules", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)")), request_body(content = Object, description = "Proposed field rules (crates/rules/README.md); validated as a save is"), responses((status = 200, description = "What the proposed rules would change on the cards; nothing is saved or sent", body = DryRunView), Refusals))]
pub(crate) async fn dry_run(
    state: web::Data<AppState>,
    caller: Principal,
    tenant: web::Path<Uuid>,
    body: web::Json<FieldRules>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let summary = visible_tenant(&state, &caller, *tenant).await?;
    let proposed = body.into_inner();
    check_rules(&proposed)?;
    let (in_force, version) = rules_in_force(&state, summary.tenant_id).await?;
    let (selected, known) = snapshot_select(&state, &summary, &in_force).await?;
    let enumeration_first = !known || !select::covers(&selected, &proposed);
    let preview = preview::preview(&state.pool, summary.tenant_id, &proposed, &selected).await?;
    Ok(HttpResponse::Ok().json(DryRunView::of(preview, version, enumeration_first, started)))
}
