//! The bus handlers: a Graph change asks for a covering round of its tenant; a sync request runs
//! the round it names. Both ack only after that round's card commands were confirmed.

use crate::coalesce::{Coalescer, Covered};
use crate::round::{Mode, RoundRequest};
use cardsync_bus::{Delivery, Handler, HandlerError};
use cardsync_proto as proto;
use std::collections::HashSet;
use uuid::Uuid;

/// Why a message cannot be processed, ever.
#[derive(Debug, thiserror::Error)]
enum Invalid {
    #[error("the message has no valid tenant id")]
    Tenant,
    #[error("a {0} sync request needs a target id")]
    Target(&'static str),
}

fn tenant_of(envelope: Option<&proto::Envelope>) -> Result<Uuid, HandlerError> {
    envelope
        .and_then(|e| Uuid::parse_str(&e.tenant_id).ok())
        .ok_or_else(|| HandlerError::permanent(Invalid::Tenant))
}

fn into_result(covered: Covered) -> Result<(), HandlerError> {
    match covered {
        Covered::Done(_) => Ok(()),
        Covered::Failed {
            transient: true,
            reason,
        } => Err(HandlerError::transient(reason)),
        Covered::Failed {
            transient: false,
            reason,
        } => Err(HandlerError::permanent(reason)),
    }
}

/// Handles `GraphChange`s from `delta-worker.changes`.
#[derive(Debug, Clone)]
pub struct ChangeHandler {
    /// Round scheduling.
    pub coalescer: Coalescer,
}

impl Handler for ChangeHandler {
    type Message = proto::GraphChange;

    async fn handle(&self, delivery: Delivery<proto::GraphChange>) -> Result<(), HandlerError> {
        let change = delivery.message;
        let tenant = tenant_of(change.envelope.as_ref())?;
        let announced = (!change.resource_id.is_empty()).then(|| change.resource_id.clone());
        let covered = self
            .coalescer
            .covered(tenant, proto::Cause::Notification, announced)
            .await;
        let outcome = if matches!(covered, Covered::Done(_)) {
            "covered"
        } else {
            "failed"
        };
        self.coalescer
            .rounds()
            .metrics
            .notifications
            .with_label_values(&[outcome])
            .inc();
        into_result(covered)
    }
}

/// Handles `SyncRequest`s from `delta-worker.requests` (Sync Now, per-user and per-group sync).
#[derive(Debug, Clone)]
pub struct SyncRequestHandler {
    /// Round scheduling (and the rounds themselves).
    pub coalescer: Coalescer,
}

impl Handler for SyncRequestHandler {
    type Message = proto::SyncRequest;

    async fn handle(&self, delivery: Delivery<proto::SyncRequest>) -> Result<(), HandlerError> {
        let request = delivery.message;
        let tenant = tenant_of(request.envelope.as_ref())?;
        let rounds = self.coalescer.rounds();
        let mode = match request.scope() {
            proto::sync_request::Scope::Tenant | proto::sync_request::Scope::Unspecified => {
                if request.depth() == proto::sync_request::Depth::Full {
                    Mode::Full
                } else {
                    return into_result(
                        self.coalescer
                            .covered(tenant, proto::Cause::Manual, None)
                            .await,
                    );
                }
            }
            proto::sync_request::Scope::User => {
                if request.target_id.is_empty() {
                    return Err(HandlerError::permanent(Invalid::Target("user")));
                }
                Mode::Users(vec![request.target_id.clone()])
            }
            proto::sync_request::Scope::Group => {
                if request.target_id.is_empty() {
                    return Err(HandlerError::permanent(Invalid::Target("group")));
                }
                let connection = rounds_connection(rounds, tenant).await?;
                let ids = rounds
                    .graph
                    .transitive_user_ids(&connection, &request.target_id)
                    .await
                    .map_err(|e| {
                        if e.is_transient() {
                            HandlerError::transient(e)
                        } else {
                            HandlerError::permanent(e)
                        }
                    })?;
                Mode::Users(ids)
            }
        };
        let round = RoundRequest {
            tenant,
            cause: proto::Cause::Manual,
            announced: HashSet::new(),
            mode,
        };
        match rounds.run(&round).await {
            Ok(_) => Ok(()),
            Err(error) if error.is_transient() => Err(HandlerError::transient(error)),
            Err(error) => Err(HandlerError::permanent(error)),
        }
    }
}

async fn rounds_connection(
    rounds: &crate::round::Rounds,
    tenant: Uuid,
) -> Result<cardsync_graph::TenantConnection, HandlerError> {
    rounds.tenant_connection(tenant).await.map_err(|e| {
        if e.is_transient() {
            HandlerError::transient(e)
        } else {
            HandlerError::permanent(e)
        }
    })
}
