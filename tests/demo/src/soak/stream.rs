//! The soak's change stream: the demo's random directory changes ([`Model`]) spread over every
//! tenant at a steady rate, in a task of its own while faults come and go, remembering when each
//! user last changed (a divergent card of a user changed since a fault healed is a change in
//! flight, not a lost one).

use crate::changes::{Applied, Model};
use graph_sim::control_client::Control;
use rand::SeedableRng as _;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

/// Most failed graph-sim control calls in a row before the stream gives up.
const MAX_FAILURES_IN_A_ROW: usize = 50;

/// What the stream (and the faults' bursts) changed so far.
#[derive(Debug, Default)]
pub struct Changes {
    /// Changes applied, by kind.
    pub by_kind: BTreeMap<&'static str, usize>,
    /// Last change of each (tenant, user), graph-sim's `changedAtUnixMs`.
    last: HashMap<(Uuid, String), i64>,
    /// graph-sim control calls that failed (the stream carries on).
    pub failures: usize,
}

impl Changes {
    /// Every change applied.
    pub fn total(&self) -> usize {
        self.by_kind.values().sum()
    }

    /// When `user` of `tenant` last changed (ms since the epoch), if it ever did.
    pub fn last_change(&self, tenant: Uuid, user: &str) -> Option<i64> {
        self.last.get(&(tenant, user.to_owned())).copied()
    }

    /// Records applied changes.
    pub fn record(&mut self, tenant: Uuid, applied: &[Applied]) {
        for change in applied {
            *self.by_kind.entry(change.kind).or_default() += 1;
            let last = self.last.entry((tenant, change.user.clone())).or_default();
            *last = (*last).max(change.changed_at_ms);
        }
    }
}

/// The shared record of changes.
pub type Shared = Arc<Mutex<Changes>>;

/// Locks the record (a panic elsewhere does not make it unreadable).
pub fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Changes> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Changes `tenant` at `rate` per second until told to stop.
async fn change_tenant(
    control: Control,
    tenant: Uuid,
    mut model: Model,
    rate: f64,
    seed: u64,
    record: Shared,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures_in_a_row = 0;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopped.changed() => return Ok(()),
        }
        match model.apply_one(&control, &mut rng).await {
            Ok(applied) => {
                failures_in_a_row = 0;
                lock(&record).record(tenant, applied.as_slice());
            }
            Err(error) => {
                failures_in_a_row += 1;
                lock(&record).failures += 1;
                if failures_in_a_row >= MAX_FAILURES_IN_A_ROW {
                    return Err(error.context(format!(
                        "{failures_in_a_row} changes in a row failed in graph-sim"
                    )));
                }
            }
        }
    }
}

/// The running stream.
#[derive(Debug)]
pub struct Stream {
    /// What it changed so far.
    pub changes: Shared,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Stream {
    /// Starts `rate` changes per second over `models` (each with its tenant and its own share
    /// of the users, changed by a task of its own at its share of the rate, so that one slow
    /// change does not hold up the others), drawn from `seed`.
    pub fn start(control: Control, models: Vec<(Uuid, Model)>, rate: f64, seed: u64) -> Self {
        let changes: Shared = Arc::default();
        let (stop, stopped) = watch::channel(false);
        let share = rate / models.len().max(1) as f64;
        let mut tasks = tokio::task::JoinSet::new();
        for (index, (tenant, model)) in models.into_iter().enumerate() {
            let (control, record, stopped) = (control.clone(), changes.clone(), stopped.clone());
            let seed = seed.wrapping_add(index as u64);
            tasks.spawn(change_tenant(
                control, tenant, model, share, seed, record, stopped,
            ));
        }
        let task = tokio::spawn(async move {
            while let Some(done) = tasks.join_next().await {
                done??;
            }
            Ok(())
        });
        Self {
            changes,
            stop,
            task,
        }
    }

    /// Fails if the stream gave up.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.task.is_finished() && !*self.stop.borrow() {
            anyhow::bail!("the change stream stopped on its own");
        }
        Ok(())
    }

    /// Stops the stream and returns what it changed.
    pub async fn stop(self) -> anyhow::Result<Shared> {
        let _ = self.stop.send(true);
        self.task.await??;
        Ok(self.changes)
    }
}
