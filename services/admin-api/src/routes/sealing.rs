//! `/v1/sealing-key`: which key seals Graph credentials, how many connections each configured
//! key sealed, and the re-seal that moves every connection to the current key (the middle step
//! of a rotation without downtime). The keys themselves are configuration, never API data.
//! Both concern every tenant, so a caller limited to some tenants is refused.

use super::audit;
use crate::error::ApiError;
use crate::openapi::Refusals;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use cardsync_auth::Principal;
use cardsync_store::connections;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

pub(super) fn configure(config: &mut web::ServiceConfig) {
    config
        .service(web::resource("/sealing-key").route(web::get().to(show)))
        .service(web::resource("/sealing-key/reseal").route(web::post().to(reseal)));
}

/// The connections sealed with one key id.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct KeyUse {
    /// The key id; `null` for connections sealed before key ids were stored.
    key_id: Option<String>,
    /// Connections it sealed.
    connections: i64,
    /// Whether this API holds that key (a connection sealed with a key nobody holds cannot be
    /// opened: put its credential again).
    configured: bool,
}

/// The sealing keys' state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SealingStatus {
    /// The key new credentials are sealed with.
    current_key_id: String,
    /// Every key id this API opens with, the current one first.
    configured_key_ids: Vec<String>,
    /// Connections per key id.
    usage: Vec<KeyUse>,
    /// Connections not sealed with the current key: 0 means an old key may be dropped.
    not_current: i64,
}

/// What a re-seal did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ResealReport {
    /// Connections sealed again with the current key.
    resealed: u64,
    /// Tenants whose connection no configured key opens; put their credential again.
    unopenable: Vec<Uuid>,
    /// The state afterwards.
    status: SealingStatus,
}

async fn status(state: &AppState) -> Result<SealingStatus, ApiError> {
    let keys = &state.sealing;
    let usage: Vec<KeyUse> = connections::key_usage(&state.pool)
        .await?
        .into_iter()
        .map(|(key_id, connections)| KeyUse {
            configured: key_id.as_deref().is_some_and(|id| keys.holds(id)),
            key_id,
            connections,
        })
        .collect();
    let not_current = usage
        .iter()
        .filter(|used| used.key_id.as_deref() != Some(keys.current_id()))
        .map(|used| used.connections)
        .sum();
    Ok(SealingStatus {
        current_key_id: keys.current_id().to_owned(),
        configured_key_ids: keys.ids().map(str::to_owned).collect(),
        usage,
        not_current,
    })
}

#[utoipa::path(get, operation_id = "sealing_key_show", path = "/v1/sealing-key", tag = "sealing-key", responses((status = 200, description = "The current key id and the connections each key sealed", body = SealingStatus), Refusals))]
pub(crate) async fn show(
    state: web::Data<AppState>,
    caller: Principal,
) -> Result<HttpResponse, ApiError> {
    super::check_all_tenants(&caller)?;
    Ok(HttpResponse::Ok().json(status(&state).await?))
}

#[utoipa::path(post, operation_id = "sealing_key_reseal", path = "/v1/sealing-key/reseal", tag = "sealing-key", responses((status = 200, description = "Every connection the configured keys open is now sealed with the current key", body = ResealReport), Refusals))]
pub(crate) async fn reseal(
    state: web::Data<AppState>,
    caller: Principal,
) -> Result<HttpResponse, ApiError> {
    super::check_all_tenants(&caller)?;
    let done = connections::reseal_all(&state.pool, &state.sealing)
        .await
        .map_err(super::connections::sealing_failed)?;
    for tenant in &done.unopenable {
        tracing::warn!(%tenant, "a sealed credential opens with no configured key; put it again");
    }
    audit(
        &state.pool,
        &caller,
        None,
        "sealing_key.reseal",
        Some(state.sealing.current_id()),
        None,
        Some(json!({"resealed": done.resealed, "unopenable": done.unopenable})),
    )
    .await?;
    Ok(HttpResponse::Ok().json(ResealReport {
        resealed: done.resealed,
        unopenable: done.unopenable,
        status: status(&state).await?,
    }))
}
