//! Sync Now for a tenant or a group, and per-user sync (`info`: pull from Entra; `cards`: push
//! the stored person to the card without a Graph call; `full`: both). Each records a run first
//! (so the answer carries its id) and publishes a `SyncRequest` naming it, confirmed by the
//! broker before the API answers 202. Sync Now is a reconcile run for the reconciler (the
//! whole tenant against its cards, or a group's members), as a scheduled one is; a per-user
//! sync goes to the delta-worker.

use super::{audit, is_object_id, optional_body, visible_tenant};
use crate::error::ApiError;
use crate::openapi::Refusals;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use cardsync_auth::Principal;
use cardsync_bus::{Outgoing, names, routing};
use cardsync_cards::DigestEvents;
use cardsync_proto as proto;
use cardsync_store::admin::TenantSummary;
use cardsync_store::runs::{self, NewRun, RunStatus};
use proto::sync_request::{Depth, Scope};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

pub(super) fn configure(config: &mut web::ServiceConfig) {
    config
        .service(web::resource("/tenants/{tenant}/sync").route(web::post().to(sync_tenant)))
        .service(
            web::resource("/tenants/{tenant}/users/{user}/sync").route(web::post().to(sync_user)),
        );
}

/// How deep a sync goes.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SyncDepth {
    /// Pull the person from Entra.
    Info,
    /// Push the stored person to the card, without a Graph call.
    Cards,
    /// Both.
    #[default]
    Full,
}

impl From<SyncDepth> for Depth {
    fn from(depth: SyncDepth) -> Self {
        match depth {
            SyncDepth::Info => Depth::Info,
            SyncDepth::Cards => Depth::Cards,
            SyncDepth::Full => Depth::Full,
        }
    }
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SyncTenant {
    /// Only the nested members of this group.
    group: Option<String>,
}

impl SyncTenant {
    /// The group to sync, checked; none: the whole tenant.
    pub(crate) fn checked_group(self) -> Result<Option<String>, ApiError> {
        if let Some(group) = &self.group {
            check_object_id(group, "group")?;
        }
        Ok(self.group)
    }
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SyncUser {
    #[serde(default)]
    pub(crate) depth: SyncDepth,
}

/// The answer to a sync request.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct SyncAccepted {
    /// The run the request belongs to (`GET /v1/runs/{run}`).
    run_id: Uuid,
    /// `queued`.
    status: String,
}

/// A sync needs a tenant that is connected and not disconnected.
pub(crate) fn check_syncable(tenant: &TenantSummary) -> Result<(), ApiError> {
    if tenant.disconnected_at.is_some() {
        return Err(ApiError::Conflict {
            code: "tenant-disconnected",
            detail: format!(
                "tenant {} is disconnected; reconnect it first",
                tenant.tenant_id
            ),
        });
    }
    if !tenant.has_connection {
        return Err(ApiError::Conflict {
            code: "no-connection",
            detail: format!(
                "tenant {} has no Graph connection; put one first",
                tenant.tenant_id
            ),
        });
    }
    Ok(())
}

pub(crate) fn check_object_id(id: &str, what: &'static str) -> Result<(), ApiError> {
    if is_object_id(id) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid-id",
            format!("{what} id {id:?} is not a Graph object id"),
        ))
    }
}

/// Which worker takes a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Worker {
    /// The delta-worker (`request.<tenant>`): per-user sync.
    DeltaWorker,
    /// The reconciler (`reconcile.<tenant>`): Sync Now of a tenant or a group (a `reconcile`
    /// run, so `reconciler due` fails it when abandoned and publishes it again when lost) and
    /// the rules apply.
    Reconciler,
}

/// A piece of sync work to record as a run and ask a worker for.
#[derive(Debug, Clone)]
pub(crate) struct RunRequest {
    pub tenant: Uuid,
    /// The run's kind (`sync_now`, `rules_apply`, …).
    pub kind: &'static str,
    pub target: Option<String>,
    pub scope: Scope,
    pub depth: Depth,
    pub worker: Worker,
}

impl RunRequest {
    /// The run to record for `caller`.
    pub(crate) fn run(&self, run_id: Uuid, caller: &Principal) -> NewRun {
        NewRun {
            run_id,
            tenant_id: self.tenant,
            kind: self.kind.to_owned(),
            cause: proto::Cause::Manual.as_str().to_owned(),
            started_by: caller.subject.clone(),
            target: self.target.clone(),
        }
    }

    /// Publishes the request for run `run_id` and waits for the broker's confirm; a request
    /// the broker does not take fails the run (503).
    pub(crate) async fn publish(&self, state: &AppState, run_id: Uuid) -> Result<(), ApiError> {
        let tenant_text = self.tenant.to_string();
        let message = proto::SyncRequest {
            envelope: Some(proto::Envelope::new(&tenant_text, proto::Cause::Manual)),
            scope: self.scope as i32,
            target_id: self.target.clone().unwrap_or_default(),
            depth: self.depth as i32,
            run_id: run_id.to_string(),
        };
        let routing_key = match self.worker {
            Worker::DeltaWorker => routing::sync_request(&tenant_text),
            Worker::Reconciler => routing::reconcile_request(&tenant_text),
        };
        let outgoing = Outgoing::new(&state.topology.name(names::SYNC), &routing_key, &message);
        if let Err(error) = state.publisher.publish_all(vec![outgoing]).await {
            let digests = DigestEvents::new(state.topology.name(names::CARD_EVENTS));
            let _ = async {
                let mut tx = state.pool.begin().await?;
                let why = Some("the broker did not take the request");
                runs::end(&mut tx, run_id, RunStatus::Failed, why, &digests).await?;
                tx.commit().await?;
                Ok::<_, cardsync_store::StoreError>(())
            }
            .await;
            return Err(ApiError::Unavailable {
                what: "the message broker",
                source: error.into(),
            });
        }
        Ok(())
    }
}

/// Records the run, publishes the request, audits it as `action`, and answers 202 with the
/// run id; a request the broker does not confirm fails the run and answers 503.
pub(crate) async fn request(
    state: &AppState,
    caller: &Principal,
    asked: RunRequest,
    action: &str,
) -> Result<HttpResponse, ApiError> {
    let run_id = Uuid::now_v7();
    runs::create(&state.pool, &asked.run(run_id, caller)).await?;
    asked.publish(state, run_id).await?;
    audit(
        &state.pool,
        caller,
        Some(asked.tenant),
        action,
        Some(&run_id.to_string()),
        None,
        Some(
            json!({"kind": asked.kind, "target": asked.target, "depth": asked.depth.as_str_name()}),
        ),
    )
    .await?;
    Ok(accepted(run_id))
}

/// 202 naming the run.
fn accepted(run_id: Uuid) -> HttpResponse {
    HttpResponse::Accepted()
        .insert_header(("Location", format!("/v1/runs/{run_id}")))
        .json(SyncAccepted {
            run_id,
            status: "queued".to_owned(),
        })
}

#[utoipa::path(post, operation_id = "sync_sync_tenant", path = "/v1/tenants/{tenant}/sync", tag = "sync", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)")), request_body(content = Option<SyncTenant>, description = "A group to sync; none: the whole tenant"), responses((status = 202, description = "A reconcile run (the whole tenant against its cards, or the group's members) was requested of the reconciler; the run id names it", body = SyncAccepted), Refusals))]
pub(crate) async fn sync_tenant(
    state: web::Data<AppState>,
    caller: Principal,
    tenant: web::Path<Uuid>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let tenant = visible_tenant(&state, &caller, *tenant).await?;
    let body: SyncTenant = optional_body(&body)?.unwrap_or_default();
    check_syncable(&tenant)?;
    match body.checked_group()? {
        Some(group) => {
            let asked = RunRequest {
                tenant: tenant.tenant_id,
                kind: "reconcile",
                target: Some(group),
                scope: Scope::Group,
                depth: Depth::Full,
                worker: Worker::Reconciler,
            };
            request(&state, &caller, asked, "sync.request").await
        }
        None => {
            let asked = RunRequest {
                tenant: tenant.tenant_id,
                kind: "reconcile",
                target: None,
                scope: Scope::Tenant,
                depth: Depth::Full,
                worker: Worker::Reconciler,
            };
            request(&state, &caller, asked, "sync.request").await
        }
    }
}

#[utoipa::path(post, operation_id = "sync_sync_user", path = "/v1/tenants/{tenant}/users/{user}/sync", tag = "sync", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)"), ("user" = String, Path, description = "The user's Entra object id", pattern = "^[A-Za-z0-9-]{1,256}$")), request_body(content = Option<SyncUser>, description = "How deep (default full)"), responses((status = 202, description = "Requested; the run id names it", body = SyncAccepted), Refusals))]
pub(crate) async fn sync_user(
    state: web::Data<AppState>,
    caller: Principal,
    path: web::Path<(Uuid, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (tenant, user) = path.into_inner();
    let tenant = visible_tenant(&state, &caller, tenant).await?;
    let depth = optional_body::<SyncUser>(&body)?.unwrap_or_default().depth;
    check_object_id(&user, "user")?;
    check_syncable(&tenant)?;
    let asked = RunRequest {
        tenant: tenant.tenant_id,
        kind: "user_sync",
        target: Some(user),
        scope: Scope::User,
        depth: depth.into(),
        worker: Worker::DeltaWorker,
    };
    request(&state, &caller, asked, "sync.request").await
}
