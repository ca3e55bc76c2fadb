//! Coalescing: every trigger for a tenant (notification, safety poll) asks for "a round that
//! starts after I arrived". While a round runs, new triggers gather into the one follow-up round;
//! each trigger's message is acked only when that covering round succeeded. So a burst of 10,000
//! notifications costs one or two rounds, and no trigger is acked before its effect is durable.

use crate::round::{Mode, RoundReport, RoundRequest, Rounds};
use cardsync_proto as proto;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use uuid::Uuid;

/// How a covering round ended, shared by every trigger it covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Covered {
    /// The round succeeded.
    Done(RoundReport),
    /// The round failed; `transient` says whether retrying the trigger may help.
    Failed {
        /// Retry later (true) or dead-letter (false).
        transient: bool,
        /// What failed, for the dead-letter header and logs.
        reason: String,
    },
}

struct Pending {
    cause: proto::Cause,
    announced: HashSet<String>,
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
    pub async fn covered(
        &self,
        tenant: Uuid,
        cause: proto::Cause,
        announced: Option<String>,
    ) -> Covered {
        let mut receiver = {
            let mut slots = self
                .slots
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let slot = slots.entry(tenant).or_default();
            let pending = slot.next.get_or_insert_with(|| Pending {
                cause,
                announced: HashSet::new(),
                done: watch::channel(None).0,
            });
            // A notification outranks a poll for the round's recorded cause.
            if cause == proto::Cause::Notification {
                pending.cause = cause;
            }
            pending.announced.extend(announced);
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
                return Covered::Failed {
                    transient: true,
                    reason: "the round was abandoned".into(),
                };
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
            };
            // Its own task, so a panic inside a round fails this round instead of wedging the tenant.
            let rounds = self.rounds.clone();
            let outcome = tokio::spawn(async move { rounds.run(&request).await }).await;
            let covered = match outcome {
                Ok(Ok(report)) => Covered::Done(report),
                Ok(Err(error)) => {
                    let reason = cardsync_telemetry::error_chain(&error);
                    tracing::warn!(%tenant, error = %reason, "delta round failed");
                    Covered::Failed {
                        transient: error.is_transient(),
                        reason,
                    }
                }
                Err(panic) => {
                    tracing::error!(%tenant, error = %panic, "delta round panicked");
                    Covered::Failed {
                        transient: true,
                        reason: "the round panicked".into(),
                    }
                }
            };
            let _ = pending.done.send(Some(covered));
        }
    }
}
