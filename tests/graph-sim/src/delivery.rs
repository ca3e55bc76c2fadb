//! Webhook delivery of change and lifecycle notifications (graph-facts §2).
//!
//! Each notification URL has a worker that batches queued notifications into one `{"value":[...]}` POST. A 2xx
//! within the first-attempt timeout (3 s) counts as delivered; anything else is retried with exponential back-off
//! (10 s timeout per retry) until four simulated hours have passed. Per endpoint, the newest slow/drop state
//! machine of §2.3 delays or drops new notifications. Switches inject loss, duplicates, delay and reordering.
//! Every notification gets a record in the delivery log with its attempts and outcome.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::{SimClock, graph_time};

/// Delivery switches (control API `PUT /control/delivery`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeliveryProfile {
    /// Timeout of the first attempt; a 2xx inside it counts (3 s).
    pub first_timeout_ms: u64,
    /// Timeout of each retry (10 s).
    pub retry_timeout_ms: u64,
    /// First retry delay in simulated milliseconds; doubles per retry (default 1 min).
    pub retry_base_ms: u64,
    /// Give up after this much simulated time (4 h).
    pub retry_horizon_ms: u64,
    /// How long a worker waits to gather a batch (real milliseconds).
    pub batch_window_ms: u64,
    /// Most notifications per POST.
    pub max_batch: usize,
    /// Extra delay before the first attempt (real milliseconds).
    pub delay_ms: u64,
    /// Probability that a notification is lost (never sent, never resent).
    pub loss_probability: f64,
    /// The next n notifications are lost.
    pub lose_next: u32,
    /// Probability that a notification is sent twice.
    pub duplicate_probability: f64,
    /// The next n notifications are sent twice.
    pub duplicate_next: u32,
    /// Send each batch's notifications one per POST in reverse order.
    pub reorder: bool,
    /// Run the slow/drop state machine of §2.3 (newest revision).
    pub endpoint_throttling: bool,
    /// Minimum responses in a window before the state machine judges an endpoint.
    pub min_samples: u32,
    /// The slow/drop evaluation window and the slow delay, in simulated milliseconds (10 min).
    pub window_ms: u64,
    /// While dropping, every n-th notification is still sent as a probe.
    pub probe_every: u32,
    /// Seed of the loss/duplicate random generator.
    pub seed: u64,
}

impl Default for DeliveryProfile {
    fn default() -> Self {
        Self {
            first_timeout_ms: 3_000,
            retry_timeout_ms: 10_000,
            retry_base_ms: 60_000,
            retry_horizon_ms: 4 * 3_600_000,
            batch_window_ms: 20,
            max_batch: 100,
            delay_ms: 0,
            loss_probability: 0.0,
            lose_next: 0,
            duplicate_probability: 0.0,
            duplicate_next: 0,
            reorder: false,
            endpoint_throttling: true,
            min_samples: 10,
            window_ms: 600_000,
            probe_every: 10,
            seed: 7,
        }
    }
}

/// What happened to a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// Queued or being sent.
    Pending,
    /// Failed at least once; a retry is scheduled.
    Retrying,
    /// A 2xx arrived in time.
    Delivered,
    /// Lost by the loss switch; never sent, never resent.
    Lost,
    /// Dropped because the endpoint is in the drop state (§2.3).
    DroppedEndpointThrottled,
    /// Retries ran out (4 h); discarded.
    GaveUp,
    /// Never sent: the subscription waited for reauthorization (graph-facts §5); never resent.
    PausedReauthorizationRequired,
}

/// One attempt to POST a notification.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// When it started (sim clock).
    pub at: String,
    /// HTTP status, if a response arrived.
    pub status: Option<u16>,
    /// How long it took.
    pub duration_ms: u64,
    /// Transport error or timeout, if any.
    pub error: Option<String>,
}

/// A delivery-log entry: one notification, its attempts and outcome.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRecord {
    /// Log id.
    pub id: u64,
    /// Tenant.
    pub tenant_id: String,
    /// Subscription.
    pub subscription_id: String,
    /// Where it goes.
    pub url: String,
    /// The notification as sent inside `value[]`.
    pub notification: Value,
    /// When the change happened / the notification was created (sim clock).
    pub created_at: String,
    /// Set when this is an injected duplicate of another record.
    pub duplicate_of: Option<u64>,
    /// Endpoint state when it was queued (`normal`, `slow`, `drop`).
    pub endpoint_state: EndpointState,
    /// Attempts so far.
    pub attempts: Vec<Attempt>,
    /// Current outcome.
    pub outcome: Outcome,
}

/// The §2.3 state of a notification endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum EndpointState {
    /// Notifications go out at once.
    Normal,
    /// New notifications wait a (scaled) 10 minutes.
    Slow,
    /// New notifications are dropped, except periodic probes.
    Drop,
}

#[derive(Debug)]
struct Health {
    state: EndpointState,
    window_start: Instant,
    total: u32,
    over_first: u32,
    over_retry: u32,
    dropped_since_probe: u32,
}

impl Health {
    fn new() -> Self {
        Self {
            state: EndpointState::Normal,
            window_start: Instant::now(),
            total: 0,
            over_first: 0,
            over_retry: 0,
            dropped_since_probe: 0,
        }
    }

    fn judge(&mut self, min_samples: u32) {
        if self.total == 0 || self.total < min_samples {
            return;
        }
        let total = f64::from(self.total);
        self.state = if f64::from(self.over_retry) / total > 0.15 {
            EndpointState::Drop
        } else if f64::from(self.over_first) / total > 0.10 {
            EndpointState::Slow
        } else {
            EndpointState::Normal
        };
    }

    /// Rolls the window if it elapsed: the state is re-judged on what the window saw.
    fn roll(&mut self, window: Duration) {
        if self.window_start.elapsed() < window {
            return;
        }
        if self.total > 0 {
            self.judge(1);
        }
        self.window_start = Instant::now();
        self.total = 0;
        self.over_first = 0;
        self.over_retry = 0;
    }
}

struct Queued {
    record: u64,
    notification: Value,
}

struct Endpoint {
    tx: mpsc::UnboundedSender<Queued>,
    health: Health,
}

struct Inner {
    client: reqwest::Client,
    clock: Arc<SimClock>,
    profile: Mutex<DeliveryProfile>,
    rng: Mutex<StdRng>,
    log: Mutex<Vec<DeliveryRecord>>,
    endpoints: Mutex<HashMap<String, Endpoint>>,
    cancel: CancellationToken,
    runtime: tokio::runtime::Handle,
}

/// The delivery engine; cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One notification to queue.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Tenant id.
    pub tenant_id: String,
    /// Subscription id.
    pub subscription_id: String,
    /// Notification or lifecycle URL.
    pub url: String,
    /// The `value[]` item.
    pub notification: Value,
}

impl Notifier {
    /// A notifier whose workers run on `runtime` until `cancel` fires.
    pub fn new(
        client: reqwest::Client,
        clock: Arc<SimClock>,
        runtime: tokio::runtime::Handle,
        cancel: CancellationToken,
    ) -> Self {
        let profile = DeliveryProfile::default();
        let rng = StdRng::seed_from_u64(profile.seed);
        Self {
            inner: Arc::new(Inner {
                client,
                clock,
                profile: Mutex::new(profile),
                rng: Mutex::new(rng),
                log: Mutex::new(Vec::new()),
                endpoints: Mutex::new(HashMap::new()),
                cancel,
                runtime,
            }),
        }
    }

    /// Replaces the delivery profile (and reseeds its random generator).
    pub fn set_profile(&self, profile: DeliveryProfile) {
        *lock(&self.inner.rng) = StdRng::seed_from_u64(profile.seed);
        *lock(&self.inner.profile) = profile;
    }

    /// The current delivery profile.
    pub fn profile(&self) -> DeliveryProfile {
        lock(&self.inner.profile).clone()
    }

    /// The delivery log, optionally for one tenant.
    pub fn log(&self, tenant: Option<&str>) -> Vec<DeliveryRecord> {
        lock(&self.inner.log)
            .iter()
            .filter(|r| tenant.is_none_or(|t| r.tenant_id == t))
            .cloned()
            .collect()
    }

    /// The §2.3 state of each endpoint.
    pub fn endpoint_states(&self) -> HashMap<String, EndpointState> {
        lock(&self.inner.endpoints)
            .iter()
            .map(|(url, e)| (url.clone(), e.health.state))
            .collect()
    }

    /// Queues a notification, applying the loss/duplicate switches and the endpoint state.
    pub fn send(&self, out: Outgoing) {
        let profile = self.profile();
        let (lost, duplicate) = self.roll_switches(&profile);
        let state = self.endpoint_admission(&out.url, &profile);
        let outcome = match (lost, state) {
            (true, _) => Outcome::Lost,
            (false, Admission::Drop) => Outcome::DroppedEndpointThrottled,
            _ => Outcome::Pending,
        };
        let endpoint_state = match state {
            Admission::Send => EndpointState::Normal,
            Admission::Delay => EndpointState::Slow,
            Admission::Drop | Admission::Probe => EndpointState::Drop,
        };
        let id = self.record(&out, None, endpoint_state, outcome);
        if outcome != Outcome::Pending {
            return;
        }
        let mut delay = Duration::from_millis(profile.delay_ms);
        if state == Admission::Delay {
            delay += self
                .inner
                .clock
                .scaled(Duration::from_millis(profile.window_ms));
        }
        self.enqueue(
            &out.url,
            Queued {
                record: id,
                notification: out.notification.clone(),
            },
            delay,
        );
        if duplicate {
            let dup = self.record(&out, Some(id), endpoint_state, Outcome::Pending);
            self.enqueue(
                &out.url,
                Queued {
                    record: dup,
                    notification: out.notification,
                },
                delay,
            );
        }
    }

    /// Logs a notification that is not sent at all (never queued, never resent), with why.
    pub fn withhold(&self, out: Outgoing, outcome: Outcome) {
        self.record(&out, None, EndpointState::Normal, outcome);
    }

    fn roll_switches(&self, profile: &DeliveryProfile) -> (bool, bool) {
        let mut p = lock(&self.inner.profile);
        let mut rng = lock(&self.inner.rng);
        let lost = if p.lose_next > 0 {
            p.lose_next -= 1;
            true
        } else {
            profile.loss_probability > 0.0 && rng.random_bool(profile.loss_probability.min(1.0))
        };
        let duplicate = if p.duplicate_next > 0 {
            p.duplicate_next -= 1;
            true
        } else {
            profile.duplicate_probability > 0.0
                && rng.random_bool(profile.duplicate_probability.min(1.0))
        };
        (lost, duplicate)
    }

    fn endpoint_admission(&self, url: &str, profile: &DeliveryProfile) -> Admission {
        if !profile.endpoint_throttling {
            return Admission::Send;
        }
        let window = self
            .inner
            .clock
            .scaled(Duration::from_millis(profile.window_ms));
        let mut endpoints = lock(&self.inner.endpoints);
        let Some(e) = endpoints.get_mut(url) else {
            return Admission::Send;
        };
        e.health.roll(window);
        e.health.judge(profile.min_samples);
        match e.health.state {
            EndpointState::Normal => Admission::Send,
            EndpointState::Slow => Admission::Delay,
            EndpointState::Drop => {
                e.health.dropped_since_probe += 1;
                if e.health.dropped_since_probe >= profile.probe_every.max(1) {
                    e.health.dropped_since_probe = 0;
                    Admission::Probe
                } else {
                    Admission::Drop
                }
            }
        }
    }

    fn record(
        &self,
        out: &Outgoing,
        duplicate_of: Option<u64>,
        endpoint_state: EndpointState,
        outcome: Outcome,
    ) -> u64 {
        let mut log = lock(&self.inner.log);
        let id = log.len() as u64;
        log.push(DeliveryRecord {
            id,
            tenant_id: out.tenant_id.clone(),
            subscription_id: out.subscription_id.clone(),
            url: out.url.clone(),
            notification: out.notification.clone(),
            created_at: graph_time(self.inner.clock.now()),
            duplicate_of,
            endpoint_state,
            attempts: Vec::new(),
            outcome,
        });
        id
    }

    fn enqueue(&self, url: &str, item: Queued, delay: Duration) {
        let tx = {
            let mut endpoints = lock(&self.inner.endpoints);
            let e = endpoints.entry(url.to_owned()).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                let worker = Worker {
                    notifier: self.clone(),
                    url: url.to_owned(),
                };
                self.inner.runtime.spawn(worker.run(rx));
                Endpoint {
                    tx,
                    health: Health::new(),
                }
            });
            e.tx.clone()
        };
        if delay.is_zero() {
            let _ = tx.send(item);
            return;
        }
        let cancel = self.inner.cancel.clone();
        self.inner.runtime.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = tokio::time::sleep(delay) => { let _ = tx.send(item); }
            }
        });
    }

    fn note_attempt(&self, records: &[u64], attempt: &Attempt, outcome: Outcome) {
        let mut log = lock(&self.inner.log);
        for &id in records {
            if let Some(r) = log.get_mut(usize::try_from(id).unwrap_or(usize::MAX)) {
                r.attempts.push(attempt.clone());
                r.outcome = outcome;
            }
        }
    }

    fn note_health(&self, url: &str, first: bool, slow: bool) {
        let mut endpoints = lock(&self.inner.endpoints);
        if let Some(e) = endpoints.get_mut(url) {
            e.health.total += 1;
            if slow && first {
                e.health.over_first += 1;
            }
            if slow && !first {
                e.health.over_retry += 1;
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    Send,
    Delay,
    Drop,
    Probe,
}

struct Worker {
    notifier: Notifier,
    url: String,
}

impl Worker {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Queued>) {
        let cancel = self.notifier.inner.cancel.clone();
        loop {
            let first = tokio::select! {
                () = cancel.cancelled() => return,
                item = rx.recv() => match item { Some(i) => i, None => return },
            };
            let profile = self.notifier.profile();
            tokio::time::sleep(Duration::from_millis(profile.batch_window_ms)).await;
            let mut batch = vec![first];
            while batch.len() < profile.max_batch.max(1) {
                match rx.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
            if profile.reorder {
                // One POST per notification, newest first, each sent after the previous one answered.
                let worker = Worker {
                    notifier: self.notifier.clone(),
                    url: self.url.clone(),
                };
                self.notifier.inner.runtime.spawn(async move {
                    for item in batch.into_iter().rev() {
                        worker.attempt(vec![item], 1, Duration::ZERO).await;
                    }
                });
            } else {
                self.spawn_attempt(batch, 1, Duration::ZERO);
            }
        }
    }

    /// Starts an attempt after `delay` (real time) on the runtime, unless the simulator shuts down first.
    fn spawn_attempt(&self, batch: Vec<Queued>, attempt: u32, elapsed: Duration) {
        self.spawn_attempt_after(batch, attempt, elapsed, Duration::ZERO);
    }

    fn spawn_attempt_after(
        &self,
        batch: Vec<Queued>,
        attempt: u32,
        elapsed: Duration,
        delay: Duration,
    ) {
        let worker = Worker {
            notifier: self.notifier.clone(),
            url: self.url.clone(),
        };
        let cancel = self.notifier.inner.cancel.clone();
        self.notifier.inner.runtime.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = tokio::time::sleep(delay) => worker.attempt(batch, attempt, elapsed).await,
            }
        });
    }

    /// Sends one POST; on failure schedules the next attempt or gives up.
    async fn attempt(&self, batch: Vec<Queued>, attempt: u32, elapsed: Duration) {
        let profile = self.notifier.profile();
        let ids: Vec<u64> = batch.iter().map(|q| q.record).collect();
        let body =
            json!({ "value": batch.iter().map(|q| q.notification.clone()).collect::<Vec<_>>() });
        let timeout = Duration::from_millis(if attempt == 1 {
            profile.first_timeout_ms
        } else {
            profile.retry_timeout_ms
        });
        let at = graph_time(self.notifier.inner.clock.now());
        let started = Instant::now();
        let result = self
            .notifier
            .inner
            .client
            .post(&self.url)
            .timeout(timeout)
            .json(&body)
            .send()
            .await;
        let took = started.elapsed();
        let (status, error) = match &result {
            Ok(r) => (Some(r.status().as_u16()), None),
            Err(e) if e.is_timeout() => (
                None,
                Some(format!("timed out after {} ms", timeout.as_millis())),
            ),
            Err(e) => (None, Some(e.to_string())),
        };
        let ok = status.is_some_and(|s| (200..300).contains(&s)) && took <= timeout;
        self.notifier
            .note_health(&self.url, attempt == 1, took >= timeout);
        let record = Attempt {
            at,
            status,
            duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            error,
        };
        if ok {
            self.notifier
                .note_attempt(&ids, &record, Outcome::Delivered);
            return;
        }
        let backoff = Duration::from_millis(
            profile
                .retry_base_ms
                .saturating_mul(1 << (attempt - 1).min(20)),
        );
        let next_elapsed = elapsed + backoff;
        if next_elapsed > Duration::from_millis(profile.retry_horizon_ms) {
            self.notifier.note_attempt(&ids, &record, Outcome::GaveUp);
            return;
        }
        self.notifier.note_attempt(&ids, &record, Outcome::Retrying);
        let wait = self.notifier.inner.clock.scaled(backoff);
        self.spawn_attempt_after(batch, attempt + 1, next_elapsed, wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_with_many_slow_first_attempts_is_judged_slow() {
        let mut h = Health::new();
        h.total = 10;
        h.over_first = 2;
        h.judge(10);
        assert_eq!(h.state, EndpointState::Slow);
        h.over_retry = 2;
        h.judge(10);
        assert_eq!(h.state, EndpointState::Drop);
    }

    #[test]
    fn too_few_samples_keep_the_current_state() {
        let mut h = Health::new();
        h.total = 3;
        h.over_first = 3;
        h.judge(10);
        assert_eq!(h.state, EndpointState::Normal);
    }

    #[test]
    fn rolling_a_window_with_healthy_probes_leaves_the_drop_state() {
        let mut h = Health::new();
        h.state = EndpointState::Drop;
        h.total = 2;
        h.roll(Duration::ZERO);
        assert_eq!(h.state, EndpointState::Normal);
        assert_eq!(h.total, 0);
    }
}
