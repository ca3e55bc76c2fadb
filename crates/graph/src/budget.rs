//! A resource-unit budget per tenant: a token bucket refilled continuously, sized below Graph's
//! per-app-and-tenant limit, so a busy tenant waits on its own budget instead of drawing 429s
//! that would slow every tenant of the app.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug)]
struct Bucket {
    units: f64,
    refilled_at: Instant,
}

/// Budgets of every tenant seen so far.
#[derive(Debug)]
pub struct TenantBudgets {
    capacity: f64,
    per_second: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl TenantBudgets {
    /// `units` resource units per `window`, as a bucket that starts full.
    pub fn new(units: u32, window: Duration) -> Self {
        let capacity = f64::from(units.max(1));
        Self {
            capacity,
            per_second: capacity / window.as_secs_f64().max(0.001),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Waits until `tenant` can spend `cost` units, then spends them.
    pub async fn spend(&self, tenant: &str, cost: u32) {
        let cost = f64::from(cost).min(self.capacity);
        loop {
            let wait = {
                let mut buckets = self
                    .buckets
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let now = Instant::now();
                let bucket = buckets.entry(tenant.to_owned()).or_insert(Bucket {
                    units: self.capacity,
                    refilled_at: now,
                });
                let refill = now.duration_since(bucket.refilled_at).as_secs_f64() * self.per_second;
                bucket.units = (bucket.units + refill).min(self.capacity);
                bucket.refilled_at = now;
                if bucket.units >= cost {
                    bucket.units -= cost;
                    return;
                }
                Duration::from_secs_f64((cost - bucket.units) / self.per_second)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_tenant_past_its_budget_waits_and_others_do_not() {
        let budgets = TenantBudgets::new(10, Duration::from_secs(10));
        let started = Instant::now();
        for _ in 0..10 {
            budgets.spend("a", 1).await;
        }
        assert_eq!(started.elapsed(), Duration::ZERO);
        budgets.spend("a", 2).await;
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let before_b = Instant::now();
        budgets.spend("b", 5).await;
        assert_eq!(before_b.elapsed(), Duration::ZERO);
    }
}
