//! `POST /v1/tenants/{tenant}/offboard`: the tenant leaves cardsync. Its rows go in one
//! transaction ([`cardsync_store::offboarding`]), its Redis keys with it, and the subscription
//! manager deletes its Graph subscriptions and then its connection on its next pass. Messages of
//! the tenant still queued are consumed and counted as dropped by the workers (RabbitMQ cannot
//! delete single messages). Only the audit record of the offboarding itself stays.

use super::{audit, check_access, check_all_tenants};
use crate::error::ApiError;
use crate::openapi::Refusals;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use cardsync_auth::Principal;
use cardsync_store::offboarding;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

pub(super) fn configure(config: &mut web::ServiceConfig) {
    config.service(web::resource("/tenants/{tenant}/offboard").route(web::post().to(offboard)));
}

/// The confirmation an offboarding needs.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OffboardRequest {
    /// The tenant's id once more: nothing of the tenant can be brought back.
    confirm: String,
}

/// What an offboarding removed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct OffboardReport {
    tenant_id: Uuid,
    /// Rows deleted per table.
    rows: BTreeMap<String, u64>,
    /// Redis keys deleted (delta links, round lease and fence, dedup marks).
    redis_keys: u64,
    /// The tenant had a Graph connection: the subscription manager deletes its Graph
    /// subscriptions, then the connection, on its next pass.
    subscriptions_pending: bool,
    /// Subscriptions registered by hand, forgotten at once (their notifications are dropped;
    /// Graph ends them at their expiry).
    unslotted_subscriptions: u64,
}

#[utoipa::path(post, operation_id = "tenants_offboard", path = "/v1/tenants/{tenant}/offboard", tag = "tenants", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)")), request_body = OffboardRequest, responses((status = 200, description = "Every row and Redis key of the tenant is deleted; its Graph subscriptions follow on the subscription manager's next pass", body = OffboardReport), Refusals))]
pub(crate) async fn offboard(
    state: web::Data<AppState>,
    caller: Principal,
    tenant: web::Path<Uuid>,
    body: web::Json<OffboardRequest>,
) -> Result<HttpResponse, ApiError> {
    let tenant = *tenant;
    check_access(&caller, tenant)?;
    // A tenant-limited admin (a customer's) cannot remove a whole tenant from the platform.
    check_all_tenants(&caller)?;
    if Uuid::parse_str(body.confirm.trim()).ok() != Some(tenant) {
        return Err(ApiError::InvalidField {
            code: "confirmation-mismatch",
            pointer: "/confirm".into(),
            detail: format!("confirm must repeat the tenant id {tenant}"),
        });
    }
    let mut tx = state.pool.begin().await?;
    let Some(done) = offboarding::offboard(&mut tx, tenant).await? else {
        return Err(ApiError::not_found("tenant", tenant));
    };
    // Redis goes before the commit: when it fails, nothing is deleted and the offboarding can
    // simply be asked again.
    let redis_keys =
        state
            .redis
            .delete_all(tenant)
            .await
            .map_err(|error| ApiError::Unavailable {
                what: "redis",
                source: error.into(),
            })?;
    let report = OffboardReport {
        tenant_id: tenant,
        rows: done
            .rows
            .iter()
            .map(|(table, rows)| ((*table).to_owned(), *rows))
            .collect(),
        redis_keys,
        subscriptions_pending: done.connection_pending,
        unslotted_subscriptions: done.unslotted_subscriptions,
    };
    audit(
        &mut *tx,
        &caller,
        Some(tenant),
        "tenant.offboard",
        None,
        None,
        Some(serde_json::to_value(&report).unwrap_or_default()),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(%tenant, redis_keys, subscriptions_pending = done.connection_pending, "tenant offboarded");
    Ok(HttpResponse::Ok().json(report))
}
