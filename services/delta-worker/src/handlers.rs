//! The bus handlers: a Graph change asks for a covering round of its tenant; a sync request runs
//! the round it names. Both ack only after that round's card commands were confirmed; how a
//! failure is retried or dead-lettered is decided by the errors themselves (`Transience`).

use crate::coalesce::{Coalescer, Trigger};
use cardsync_bus::{Delivery, Handler, HandlerError};
use cardsync_proto as proto;
use cardsync_rounds::{Mode, RoundReport, RoundRequest, Triggers};
use cardsync_store::runs::{self, RunStatus};
use cardsync_telemetry::metrics::{IntCounterVec, MetricsError, Opts, Registry, register};
use cardsync_telemetry::propagation::SpanRef;
use sqlx::PgPool;
use std::collections::HashSet;
use uuid::Uuid;

/// Why a message cannot be processed, ever.
#[derive(Debug, thiserror::Error)]
enum Invalid {
    #[error("the message has no valid tenant id")]
    Tenant,
    #[error("a {0} sync request needs a target id")]
    Target(&'static str),
    #[error("the request's run id is not a UUID")]
    RunId,
}

fn tenant_of(envelope: Option<&proto::Envelope>) -> Result<Uuid, HandlerError> {
    envelope
        .and_then(|e| Uuid::parse_str(&e.tenant_id).ok())
        .ok_or_else(|| HandlerError::permanent(Invalid::Tenant))
}

fn target_of(request: &proto::SyncRequest, scope: &'static str) -> Result<String, HandlerError> {
    if request.target_id.is_empty() {
        Err(HandlerError::permanent(Invalid::Target(scope)))
    } else {
        Ok(request.target_id.clone())
    }
}

/// Registers `cardsync_delta_notifications_total` (change notifications handled, by the outcome
/// of the round that covered them) for [`ChangeHandler`].
pub fn register_notifications(registry: &Registry) -> Result<IntCounterVec, MetricsError> {
    register(
        registry,
        IntCounterVec::new(
            Opts::new(
                "cardsync_delta_notifications_total",
                "Change notifications handled",
            ),
            &["outcome"],
        )?,
    )
}

/// Handles `GraphChange`s from `delta-worker.changes`.
#[derive(Debug, Clone)]
pub struct ChangeHandler {
    coalescer: Coalescer,
    notifications: IntCounterVec,
}

impl ChangeHandler {
    /// Covers each change with a round scheduled by `coalescer`, counting it in `notifications`
    /// (from [`register_notifications`]).
    pub fn new(coalescer: Coalescer, notifications: IntCounterVec) -> Self {
        Self {
            coalescer,
            notifications,
        }
    }
}

impl Handler for ChangeHandler {
    type Message = proto::GraphChange;

    async fn handle(&self, delivery: Delivery<proto::GraphChange>) -> Result<(), HandlerError> {
        let change = delivery.message;
        let tenant = tenant_of(change.envelope.as_ref())?;
        let announced = (!change.resource_id.is_empty()).then(|| change.resource_id.clone());
        let trigger = Trigger {
            announced,
            notified_at: change.received_at.as_ref().and_then(proto::to_datetime),
            ..Trigger::of(proto::Cause::Notification)
        };
        let covered = self.coalescer.covered(tenant, trigger).await.into_result();
        let outcome = if covered.is_ok() { "covered" } else { "failed" };
        self.notifications.with_label_values(&[outcome]).inc();
        covered?;
        Ok(())
    }
}

/// Handles `SyncRequest`s from `delta-worker.requests` (Sync Now, per-user and per-group sync).
/// A request naming a run (the admin API's) moves it: `running` when taken, `succeeded` with the
/// round's counts, or `failed` with the reason when it can never work; a transient failure
/// leaves it `running` while the request waits for its retry.
#[derive(Debug, Clone)]
pub struct SyncRequestHandler {
    coalescer: Coalescer,
    pool: PgPool,
}

impl SyncRequestHandler {
    /// Runs each request's round through `coalescer` (an incremental Sync Now joins the
    /// tenant's next covering round) or directly; runs are recorded in `pool`.
    pub fn new(coalescer: Coalescer, pool: PgPool) -> Self {
        Self { coalescer, pool }
    }

    async fn sync(
        &self,
        tenant: Uuid,
        request: &proto::SyncRequest,
    ) -> Result<RoundReport, HandlerError> {
        use proto::sync_request::{Depth, Scope};
        let mode = match request.scope() {
            Scope::Tenant | Scope::Unspecified if request.depth() == Depth::Full => Mode::Full,
            Scope::Tenant | Scope::Unspecified => {
                return Ok(self
                    .coalescer
                    .covered(tenant, Trigger::of(proto::Cause::Manual))
                    .await
                    .into_result()?);
            }
            Scope::User => Mode::Users(vec![target_of(request, "user")?]),
            Scope::Group => Mode::Group(target_of(request, "group")?),
        };
        let mut triggers = Triggers::default();
        triggers.add(SpanRef::current(), None);
        let run_id = match request.run_id.as_str() {
            "" => None,
            text => {
                Some(Uuid::parse_str(text).map_err(|_| HandlerError::permanent(Invalid::RunId))?)
            }
        };
        let round = RoundRequest {
            tenant,
            cause: proto::Cause::Manual,
            announced: HashSet::new(),
            mode,
            run_id,
            triggers,
        };
        Ok(self.coalescer.rounds().run(&round).await?)
    }

    /// Records a run that failed for good; a failure to record is logged, never the request's
    /// failure. A run whose round went through was recorded by the round itself (its commands and
    /// figures), and the card-writer ends it once every command is accounted for.
    async fn record(&self, run: Uuid, outcome: &Result<RoundReport, HandlerError>) {
        let recorded = match outcome {
            Ok(_) => Ok(()),
            Err(HandlerError::Permanent(error)) => {
                let detail = cardsync_telemetry::error_chain(error.as_ref());
                let digests = self.coalescer.rounds().digests();
                async {
                    let mut tx = self.pool.begin().await?;
                    runs::end(&mut tx, run, RunStatus::Failed, Some(&detail), digests).await?;
                    tx.commit().await?;
                    Ok::<_, cardsync_store::StoreError>(())
                }
                .await
            }
            Err(_) => Ok(()),
        };
        if let Err(error) = recorded {
            tracing::warn!(%run, error = %error, "run status not recorded");
        }
    }
}

impl Handler for SyncRequestHandler {
    type Message = proto::SyncRequest;

    async fn handle(&self, delivery: Delivery<proto::SyncRequest>) -> Result<(), HandlerError> {
        let request = delivery.message;
        let tenant = tenant_of(request.envelope.as_ref())?;
        let run = Uuid::parse_str(&request.run_id).ok();
        if let Some(run) = run
            && let Err(error) = runs::set_status(&self.pool, run, RunStatus::Running, None).await
        {
            tracing::warn!(%run, error = %error, "run status not recorded");
        }
        let outcome = self.sync(tenant, &request).await;
        if let Some(run) = run {
            self.record(run, &outcome).await;
        }
        outcome.map(|_| ())
    }
}
