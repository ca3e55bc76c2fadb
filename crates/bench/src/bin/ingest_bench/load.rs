//! The HTTP load generator: a closed loop (connections posting back to back) for throughput,
//! an open loop (a fixed schedule, times from when each request was due) for latency.

use crate::OPEN_LOOP_MAX_IN_FLIGHT;
use bytes::Bytes;
use cardsync_bench::round2;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Where and what the load generator posts.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) client: reqwest::Client,
    pub(crate) url: String,
    pub(crate) bodies: Arc<Vec<Bytes>>,
    pub(crate) batch: usize,
}

impl Target {
    pub(crate) async fn post(&self, sequence: usize) -> Result<u16, reqwest::Error> {
        let body = self.bodies[sequence % self.bodies.len()].clone();
        let response = self
            .client
            .post(&self.url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            )
            .body(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        // Read the (empty) body to the end so the connection goes back to the pool.
        response.bytes().await?;
        Ok(status)
    }
}

/// Outcomes of one HTTP phase.
#[derive(Debug, Default)]
pub(crate) struct HttpPhase {
    /// Response times in microseconds.
    pub(crate) latencies_us: Vec<u32>,
    pub(crate) statuses: BTreeMap<u16, u64>,
    pub(crate) errors: u64,
    pub(crate) accepted: u64,
    pub(crate) elapsed: Duration,
}

impl HttpPhase {
    pub(crate) fn record(
        &mut self,
        outcome: Result<u16, reqwest::Error>,
        took: Duration,
        batch: usize,
    ) {
        self.latencies_us
            .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        match outcome {
            Ok(status) => {
                *self.statuses.entry(status).or_default() += 1;
                if status == 202 {
                    self.accepted += batch as u64;
                }
            }
            Err(_) => self.errors += 1,
        }
    }

    pub(crate) fn merge(&mut self, other: HttpPhase) {
        self.latencies_us.extend(other.latencies_us);
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        self.errors += other.errors;
        self.accepted += other.accepted;
    }

    pub(crate) fn requests(&self) -> u64 {
        self.latencies_us.len() as u64
    }

    pub(crate) fn per_second(&self, count: u64) -> f64 {
        count as f64 / self.elapsed.as_secs_f64()
    }

    pub(crate) fn non_202(&self) -> BTreeMap<String, u64> {
        let mut other: BTreeMap<String, u64> = self
            .statuses
            .iter()
            .filter(|(status, _)| **status != 202)
            .map(|(status, count)| (status.to_string(), *count))
            .collect();
        if self.errors > 0 {
            other.insert("transport_error".into(), self.errors);
        }
        other
    }

    pub(crate) fn percentiles(&mut self) -> Percentiles {
        Percentiles::of(&mut self.latencies_us)
    }
}

/// p50/p99/max in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Percentiles {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

impl Percentiles {
    pub(crate) fn of(samples_us: &mut [u32]) -> Self {
        if samples_us.is_empty() {
            return Self::default();
        }
        samples_us.sort_unstable();
        // Nearest rank: the smallest sample with at least q of all samples at or below it.
        let rank = |q: f64| {
            let index = (q * samples_us.len() as f64).ceil() as usize;
            f64::from(samples_us[index.clamp(1, samples_us.len()) - 1]) / 1000.0
        };
        Self {
            p50: rank(0.50),
            p99: rank(0.99),
            max: rank(1.0),
        }
    }

    pub(crate) fn json(&self) -> Value {
        json!({ "p50_ms": round2(self.p50), "p99_ms": round2(self.p99), "max_ms": round2(self.max) })
    }
}

/// `concurrency` connections, each posting as soon as its previous answer arrived, until
/// `duration` has passed; the elapsed time includes the last answers.
pub(crate) async fn closed_loop(
    target: &Target,
    concurrency: usize,
    duration: Duration,
) -> HttpPhase {
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = JoinSet::new();
    for worker in 0..concurrency {
        let target = target.clone();
        workers.spawn(async move {
            let mut phase = HttpPhase::default();
            let mut sequence = worker;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let outcome = target.post(sequence).await;
                phase.record(outcome, sent.elapsed(), target.batch);
                sequence += concurrency;
            }
            phase
        });
    }
    let mut total = HttpPhase::default();
    while let Some(done) = workers.join_next().await {
        if let Ok(phase) = done {
            total.merge(phase);
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// Requests sent on a fixed schedule whatever the answers do; each time runs from when the
/// request was due (no coordinated omission).
pub(crate) async fn open_loop(target: &Target, rate: f64, duration: Duration) -> HttpPhase {
    let period = Duration::from_secs_f64(1.0 / rate);
    let count = (rate * duration.as_secs_f64()).round() as usize;
    let shared = Arc::new(Mutex::new(HttpPhase::default()));
    let in_flight = Arc::new(Semaphore::new(OPEN_LOOP_MAX_IN_FLIGHT));
    let started = Instant::now();
    for sequence in 0..count {
        // Absolute due times: a late wake-up sends the overdue requests at once, keeping the rate.
        let due = started + period.mul_f64(sequence as f64);
        tokio::time::sleep_until(due).await;
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let (target, shared) = (target.clone(), shared.clone());
        tokio::spawn(async move {
            let outcome = target.post(sequence).await;
            let took = due.elapsed();
            shared
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .record(outcome, took, target.batch);
            drop(permit);
        });
    }
    // Every request has finished once all permits are back.
    let all = u32::try_from(OPEN_LOOP_MAX_IN_FLIGHT).unwrap_or(u32::MAX);
    let _ = in_flight.acquire_many(all).await;
    let elapsed = started.elapsed();
    let mut phase = std::mem::take(
        &mut *shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    phase.elapsed = elapsed;
    phase
}
