//! Coalescing: every trigger for a tenant (notification, safety poll) asks for "a round that
//! starts after I arrived". While a round runs, new triggers gather into the one follow-up round;
//! each trigger's message is acked only when that covering round succeeded. So a burst of 10,000
//! notifications costs one or two rounds, and no trigger is acked before its effect is durable.

use cardsync_bus::Transience;
use cardsync_proto as proto;
use cardsync_rounds::{Mode, RoundError, RoundReport, RoundRequest, Rounds, Triggers};
use cardsync_telemetry::propagation::SpanRef;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;
use tokio::sync::watch;
use uuid::Uuid;

/// How a covering round ended, shared by every trigger it covered.
#[derive(Debug, Clone)]
pub enum Covered {
    /// The round succeeded.
    Done(RoundReport),
    /// The round failed.
    Failed(CoverError),
}

impl Covered {
    /// The report, or why no round covered the trigger.
    pub fn into_result(self) -> Result<RoundReport, CoverError> {
        match self {
            Covered::Done(report) => Ok(report),
            Covered::Failed(error) => Err(error),
        }
    }
}

/// Why no round covered a trigger; shared by every trigger the round would have covered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CoverError {
    /// The covering round failed.
    #[error("the covering delta round failed")]
    Round(#[source] Arc<RoundError>),
    /// The covering round panicked (a bug; retried, bounded by the bus's attempts).
    #[error("the covering delta round panicked")]
    Panicked,
    /// The scheduler went away before the round ended.
    #[error("the covering delta round was abandoned")]
    Abandoned,
}

impl Transience for CoverError {
    fn is_transient(&self) -> bool {
        match self {
            CoverError::Round(error) => error.is_transient(),
            CoverError::Panicked | CoverError::Abandoned => true,
        }
    }

    /// A round stopped by shutdown leaves every trigger it covered for redelivery.
    fn is_interrupted(&self) -> bool {
        matches!(self, CoverError::Round(error) if error.is_interrupted())
    }
}

/// One trigger's ask for a covering round.
#[derive(Debug, Clone)]
pub struct Trigger {
    /// Why (a notification outranks a poll for the round's recorded cause).
    pub cause: proto::Cause,
    /// The user id a notification announced.
    pub announced: Option<String>,
    /// When the webhook received the notification.
    pub notified_at: Option<OffsetDateTime>,
    /// The trigger's span, which the covering round follows.
    pub span: Option<SpanRef>,
}

impl Trigger {
    /// A trigger of `cause` with nothing else to say.
    pub fn of(cause: proto::Cause) -> Self {
        Self {
            cause,
            announced: None,
            notified_at: None,
            span: SpanRef::current(),
        }
    }
}

struct Pending {
    cause: proto::Cause,
    announced: HashSet<String>,
    triggers: Triggers,
    done: watch::Sender<Option<Covered>>,
}

#[derive(Default)]
struct Slot {
    running: bool,
    next: Option<Pending>,
}

/// Per-tenant round scheduling for one process (the Redis lease orders processes).
#[derive(Clone)]
pub struct Coalescer {
    rounds: Arc<Rounds>,
    slots: Arc<Mutex<HashMap<Uuid, Slot>>>,
}

impl std::fmt::Debug for Coalescer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer").finish_non_exhaustive()
    }
}

impl Coalescer {
    /// Schedules rounds with `rounds`.
    pub fn new(rounds: Arc<Rounds>) -> Self {
        Self {
            rounds,
            slots: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The shared round machinery.
    pub fn rounds(&self) -> &Arc<Rounds> {
        &self.rounds
    }

    /// Waits for an incremental round of `tenant` that started after this call.
    pub async fn covered(&self, tenant: Uuid, trigger: Trigger) -> Covered {
        let Trigger {
            cause,
            announced,
            notified_at,
            span,
        } = trigger;
        let mut receiver = {
            let mut slots = self
                .slots
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let slot = slots.entry(tenant).or_default();
            let pending = slot.next.get_or_insert_with(|| Pending {
                cause,
                announced: HashSet::new(),
                triggers: Triggers::default(),
                done: watch::channel(None).0,
            });
            // A notification outranks a poll for the round's recorded cause.
            if cause == proto::Cause::Notification {
                pending.cause = cause;
            }
            pending.announced.extend(announced);
            pending.triggers.add(span, notified_at);
            let receiver = pending.done.subscribe();
            if !slot.running {
                slot.running = true;
                tokio::spawn(self.clone().drive(tenant));
            }
            receiver
        };
        loop {
            if let Some(covered) = receiver.borrow_and_update().clone() {
                return covered;
            }
            if receiver.changed().await.is_err() {
                return Covered::Failed(CoverError::Abandoned);
            }
        }
    }

    /// Runs the tenant's pending rounds one after another until none is left.
    async fn drive(self, tenant: Uuid) {
        loop {
            let pending = {
                let mut slots = self
                    .slots
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let slot = slots.entry(tenant).or_default();
                match slot.next.take() {
                    Some(pending) => pending,
                    None => {
                        slot.running = false;
                        slots.remove(&tenant);
                        return;
                    }
                }
            };
            let request = RoundRequest {
                tenant,
                cause: pending.cause,
                announced: pending.announced,
                mode: Mode::Incremental,
                triggers: pending.triggers,
            };
            // Its own task, so a panic inside a round fails this round instead of wedging the tenant.
            let rounds = self.rounds.clone();
            let outcome = tokio::spawn(async move { rounds.run(&request).await }).await;
            let covered = match outcome {
                Ok(Ok(report)) => Covered::Done(report),
                Ok(Err(error)) => {
                    let reason = cardsync_telemetry::error_chain(&error);
                    tracing::warn!(%tenant, error = %reason, "delta round failed");
                    Covered::Failed(CoverError::Round(Arc::new(error)))
                }
                Err(panic) => {
                    tracing::error!(%tenant, error = %panic, "delta round panicked");
                    Covered::Failed(CoverError::Panicked)
                }
            };
            let _ = pending.done.send(Some(covered));
        }
    }
}
