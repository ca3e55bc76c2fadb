//! The reconcile request handler: one `SyncRequest` from `reconciler.requests` is one run (a
//! reconcile; for a tenant at depth `cards`, a rules apply: `Mode::Apply`, run kind
//! `rules_apply`). The run is claimed (so a duplicate request never runs it twice), kept alive
//! by a heartbeat while the round runs under the tenant's lease, and ended with its counts.
//!
//! A killed reconciler leaves its run `running` with a heartbeat that stops; the broker
//! redelivers the unacknowledged request, which is retried until the heartbeat is stale and
//! then takes the run over. If no request comes back, `reconciler due` fails the run.

use crate::settings::ReconcilerSettings;
use cardsync_bus::{Delivery, Handler, HandlerError, Transience as _};
use cardsync_proto as proto;
use cardsync_rounds::{Mode, RoundError, RoundRequest, Rounds, Triggers};
use cardsync_store::runs::{self, Claim, NewRun, RunStatus};
use cardsync_telemetry::metrics::{IntCounterVec, MetricsError, Opts, Registry, register};
use sqlx::PgPool;
use std::collections::HashSet;
use std::sync::Arc;
use uuid::Uuid;

/// The kind of run a reconcile is recorded as.
pub const KIND: &str = "reconcile";

/// The kind of run a rules apply is recorded as.
pub const APPLY_KIND: &str = "rules_apply";

/// The longest failure detail recorded on a run (the column allows 4096 bytes).
const MAX_DETAIL: usize = 1024;

/// Why a request cannot be processed, ever.
#[derive(Debug, thiserror::Error)]
enum Invalid {
    #[error("the request has no valid tenant id")]
    Tenant,
    #[error("the request's run id is not a UUID")]
    RunId,
    #[error("a {0} reconcile needs a target id")]
    Target(&'static str),
}

/// Another reconciler runs this run (its heartbeat is fresh): try again later, by when it has
/// ended or its heartbeat has stopped.
#[derive(Debug, thiserror::Error)]
#[error("run {0} is running elsewhere")]
struct RunBusy(Uuid);

/// Registers `cardsync_reconciler_runs_total` (reconciles by outcome: `emitted`, every command
/// out; `retried`; `failed`; `dropped`, a request of an unknown or offboarded tenant).
pub fn register_runs(registry: &Registry) -> Result<IntCounterVec, MetricsError> {
    let runs = register(
        registry,
        IntCounterVec::new(
            Opts::new("cardsync_reconciler_runs_total", "Reconciles by outcome"),
            &["outcome"],
        )?,
    )?;
    // Every outcome from the start, so the failed-run alert and the dashboards see zeros.
    for outcome in ["emitted", "retried", "failed", "dropped"] {
        runs.with_label_values(&[outcome]);
    }
    Ok(runs)
}

/// Handles `SyncRequest`s from `reconciler.requests`.
#[derive(Debug, Clone)]
pub struct ReconcileHandler {
    rounds: Arc<Rounds>,
    pool: PgPool,
    settings: ReconcilerSettings,
    runs: IntCounterVec,
}

impl ReconcileHandler {
    /// Runs reconciles with `rounds`, recording runs in `pool`; `runs` from [`register_runs`].
    pub fn new(
        rounds: Arc<Rounds>,
        pool: PgPool,
        settings: ReconcilerSettings,
        runs: IntCounterVec,
    ) -> Self {
        Self {
            rounds,
            pool,
            settings,
            runs,
        }
    }

    /// Runs the claimed run `run_id` and records how it ended.
    async fn run(&self, run_id: Uuid, round: &RoundRequest) -> Result<(), HandlerError> {
        let beating = Heartbeat::start(self.pool.clone(), run_id, self.settings.heartbeat);
        let outcome = self.rounds.run(round).await;
        drop(beating);
        match outcome {
            Ok(report) => {
                // The round recorded its counts and that its commands are out; the run ends
                // when the card-writer has accounted for every one (at once when there is none).
                self.runs.with_label_values(&["emitted"]).inc();
                tracing::info!(tenant = %round.tenant, %run_id, unannounced = report.unannounced,
                    repaired = report.repaired, commands = report.commands, "reconcile done");
                Ok(())
            }
            Err(error) => Err(self.failed(run_id, error).await),
        }
    }

    /// Records a failed round: a transient failure (or a shutdown) puts the run back in the
    /// queue for the retried request to claim at once; a permanent one fails it.
    async fn failed(&self, run_id: Uuid, error: RoundError) -> HandlerError {
        let mut detail = cardsync_telemetry::error_chain(&error);
        if detail.len() > MAX_DETAIL {
            let mut end = MAX_DETAIL;
            while !detail.is_char_boundary(end) {
                end -= 1;
            }
            detail.truncate(end);
        }
        let (status, outcome) = if error.is_transient() || error.is_interrupted() {
            (RunStatus::Queued, "retried")
        } else {
            (RunStatus::Failed, "failed")
        };
        let recorded = async {
            let mut tx = self.pool.begin().await?;
            let digests = self.rounds.digests();
            runs::end(&mut tx, run_id, status, Some(detail.as_str()), digests).await?;
            tx.commit().await?;
            Ok::<_, cardsync_store::StoreError>(())
        }
        .await;
        if let Err(store_error) = recorded {
            // The heartbeat has stopped: the retry takes the run over once it is stale.
            tracing::warn!(%run_id, error = %store_error, "run status not recorded");
        }
        self.runs.with_label_values(&[outcome]).inc();
        HandlerError::from(error)
    }
}

impl Handler for ReconcileHandler {
    type Message = proto::SyncRequest;

    async fn handle(&self, delivery: Delivery<proto::SyncRequest>) -> Result<(), HandlerError> {
        use proto::sync_request::{Depth, Scope};
        let request = delivery.message;
        let tenant = request
            .envelope
            .as_ref()
            .and_then(|envelope| Uuid::parse_str(&envelope.tenant_id).ok())
            .ok_or_else(|| HandlerError::permanent(Invalid::Tenant))?;
        let run_id = match request.run_id.as_str() {
            // A request without a run (an operator's tool) gets one, named by the message.
            "" => Uuid::now_v7(),
            text => Uuid::parse_str(text).map_err(|_| HandlerError::permanent(Invalid::RunId))?,
        };
        let target = |scope| {
            if request.target_id.is_empty() {
                Err(HandlerError::permanent(Invalid::Target(scope)))
            } else {
                Ok(request.target_id.clone())
            }
        };
        let (mode, target) = match request.scope() {
            // The tenant's cards from the snapshot under the rules in force: a rules apply.
            Scope::Tenant | Scope::Unspecified if request.depth() == Depth::Cards => {
                (Mode::Apply, None)
            }
            Scope::Tenant | Scope::Unspecified => (Mode::Reconcile, None),
            Scope::Group => {
                let group = target("group")?;
                (Mode::Group(group.clone()), Some(group))
            }
            Scope::User => {
                let user = target("user")?;
                (Mode::Users(vec![user.clone()]), Some(user))
            }
        };
        if !cardsync_store::connections::is_usable(&self.pool, tenant)
            .await
            .map_err(store)?
        {
            // An unknown or offboarded tenant: its requests still queued are consumed and
            // counted, and no run of it is recorded again.
            tracing::warn!(%tenant, %run_id, "reconcile request of a tenant without a usable connection dropped");
            self.runs.with_label_values(&["dropped"]).inc();
            return Ok(());
        }
        let (kind, cause) = if mode == Mode::Apply {
            (APPLY_KIND, proto::Cause::Manual)
        } else {
            (KIND, proto::Cause::Reconcile)
        };
        // Recording an existing run changes nothing: the asker (admin API, `due`) made it.
        runs::create(
            &self.pool,
            &NewRun {
                run_id,
                tenant_id: tenant,
                kind: kind.into(),
                cause: cause.as_str().into(),
                started_by: "system".into(),
                target,
            },
        )
        .await
        .map_err(store)?;
        match runs::claim(&self.pool, run_id, self.settings.stale_after)
            .await
            .map_err(store)?
        {
            Claim::Claimed => {}
            Claim::Busy => return Err(HandlerError::transient(RunBusy(run_id))),
            // A duplicate of a run that ended, whose commands are out, or that an admin holds:
            // nothing to do here.
            Claim::Finished(_) | Claim::Applying | Claim::Held | Claim::Missing => return Ok(()),
        }
        let round = RoundRequest {
            tenant,
            cause,
            announced: HashSet::new(),
            mode,
            triggers: Triggers::default(),
            run_id: Some(run_id),
        };
        self.run(run_id, &round).await
    }
}

fn store(error: impl Into<cardsync_store::StoreError>) -> HandlerError {
    let error: cardsync_store::StoreError = error.into();
    if error.is_transient() {
        HandlerError::transient(error)
    } else {
        HandlerError::permanent(error)
    }
}

/// Renews a run's heartbeat until dropped (also when the handler's future is dropped).
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    fn start(pool: PgPool, run_id: Uuid, every: std::time::Duration) -> Self {
        Self(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if let Err(error) = runs::heartbeat(&pool, run_id).await {
                    tracing::debug!(%run_id, error = %error, "heartbeat not renewed");
                }
            }
        }))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}
