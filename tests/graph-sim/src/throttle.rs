//! Throttling and fault injection for the Graph and token endpoints (graph-facts §8).
//!
//! A resource-unit token bucket per app and tenant with the documented costs and limits, and a list of fault rules
//! (503, 429, slow responses, dropped connections) matched by endpoint name.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How `Retry-After` is written on a 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum RetryAfterStyle {
    /// Whole seconds, rounded up (`Retry-After: 3`).
    #[default]
    Integer,
    /// Seconds with three decimals, like the documented sample (`Retry-After: 2.128`).
    Fractional,
    /// No header at all (as some identity limits do).
    Absent,
}

/// Throttling settings (control API `PUT /control/throttle`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ThrottleProfile {
    /// Enforce the bucket at all.
    pub enabled: bool,
    /// Override the per-app-and-tenant limit (RU per window); `None` uses S 3,500 / M 5,000 / L 8,000 by tenant size.
    pub limit: Option<u32>,
    /// Window length in seconds (10 in Graph).
    pub window_secs: f64,
    /// `Retry-After` format on 429.
    pub retry_after: RetryAfterStyle,
}

impl Default for ThrottleProfile {
    fn default() -> Self {
        Self {
            enabled: true,
            limit: None,
            window_secs: 10.0,
            retry_after: RetryAfterStyle::Integer,
        }
    }
}

/// The documented per-app-and-tenant limit for a tenant of this many users (graph-facts §8).
pub fn tenant_limit(users: usize) -> u32 {
    match users {
        0..50 => 3_500,
        50..=500 => 5_000,
        _ => 8_000,
    }
}

/// Resource-unit cost: base cost, −1 with `$select`, −1 with `$top` below 20, minimum 1.
pub fn ru_cost(base: u32, has_select: bool, top: Option<usize>) -> u32 {
    let mut cost = base;
    if has_select {
        cost = cost.saturating_sub(1);
    }
    if top.is_some_and(|t| t < 20) {
        cost = cost.saturating_sub(1);
    }
    cost.max(1)
}

#[derive(Debug)]
struct Bucket {
    used: f64,
    last: Instant,
}

/// The outcome of charging a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Charge {
    /// Admitted; `used_fraction` is how full the bucket now is (for `x-ms-throttle-limit-percentage`).
    Admitted {
        /// Fraction of the limit in use after this request.
        used_fraction: f64,
    },
    /// Refused with a 429; `retry_after` is how long until the request would fit.
    Throttled {
        /// Seconds until enough units have drained.
        retry_after: f64,
    },
}

/// Buckets per (tenant, app).
#[derive(Debug, Default)]
pub struct Throttle {
    buckets: HashMap<(String, String), Bucket>,
}

impl Throttle {
    /// Charges `cost` units to the tenant+app bucket.
    pub fn charge(
        &mut self,
        profile: &ThrottleProfile,
        tenant: &str,
        app: &str,
        users: usize,
        cost: u32,
    ) -> Charge {
        let limit = f64::from(profile.limit.unwrap_or_else(|| tenant_limit(users)).max(1));
        let window = profile.window_secs.max(0.001);
        let rate = limit / window;
        let now = Instant::now();
        let b = self
            .buckets
            .entry((tenant.to_owned(), app.to_owned()))
            .or_insert(Bucket {
                used: 0.0,
                last: now,
            });
        b.used = (b.used - now.duration_since(b.last).as_secs_f64() * rate).max(0.0);
        b.last = now;
        let cost = f64::from(cost);
        if !profile.enabled {
            return Charge::Admitted { used_fraction: 0.0 };
        }
        if b.used + cost > limit {
            return Charge::Throttled {
                retry_after: ((b.used + cost - limit) / rate).max(0.001),
            };
        }
        b.used += cost;
        Charge::Admitted {
            used_fraction: b.used / limit,
        }
    }
}

/// Formats `Retry-After` per style; `None` means no header.
pub fn format_retry_after(style: RetryAfterStyle, secs: f64) -> Option<String> {
    match style {
        RetryAfterStyle::Integer => Some(format!("{}", secs.ceil().max(1.0))),
        RetryAfterStyle::Fractional => Some(format!("{secs:.3}")),
        RetryAfterStyle::Absent => None,
    }
}

/// What an injected fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FaultKind {
    /// `503 Service Unavailable` with `serviceNotAvailable` (and `Retry-After` if set).
    Unavailable,
    /// `429 Too Many Requests` regardless of the bucket.
    Throttle,
    /// The response is delayed by `delayMs`, then served normally.
    Slow,
    /// The connection is cut: headers go out, then the body stream fails.
    Drop,
}

/// One fault rule (control API `PUT /control/faults`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultRule {
    /// Endpoint name (`users.delta`, `token`, ...) or `*`.
    pub endpoint: String,
    /// The fault.
    pub kind: FaultKind,
    /// How many matching requests it still applies to; `None` = all.
    #[serde(default)]
    pub remaining: Option<u32>,
    /// Delay for `slow`.
    #[serde(default)]
    pub delay_ms: u64,
    /// `Retry-After` for `unavailable`/`throttle`, written verbatim (`"2.128"`); `None` = no header.
    #[serde(default)]
    pub retry_after: Option<String>,
}

/// The faults to apply to one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultPlan {
    /// Delay before answering.
    pub delay: Duration,
    /// A failing outcome, if any.
    pub outcome: Option<(FaultKind, Option<String>)>,
}

/// Takes the faults matching an endpoint, consuming counted rules.
pub fn plan_faults(rules: &mut Vec<FaultRule>, endpoint: &str) -> FaultPlan {
    let mut plan = FaultPlan::default();
    for rule in rules.iter_mut() {
        if rule.endpoint != "*" && rule.endpoint != endpoint {
            continue;
        }
        if rule.remaining == Some(0) {
            continue;
        }
        let applies = match rule.kind {
            FaultKind::Slow => {
                plan.delay += Duration::from_millis(rule.delay_ms);
                true
            }
            _ if plan.outcome.is_none() => {
                plan.outcome = Some((rule.kind, rule.retry_after.clone()));
                true
            }
            _ => false,
        };
        if applies && let Some(n) = rule.remaining.as_mut() {
            *n -= 1;
        }
    }
    rules.retain(|r| r.remaining != Some(0));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_follow_the_documented_adjustments() {
        assert_eq!(ru_cost(2, false, None), 2);
        assert_eq!(ru_cost(2, true, None), 1);
        assert_eq!(ru_cost(1, true, Some(5)), 1);
        assert_eq!(ru_cost(5, true, Some(5)), 3);
    }

    #[test]
    fn tenant_size_picks_the_limit() {
        assert_eq!(tenant_limit(10), 3_500);
        assert_eq!(tenant_limit(50), 5_000);
        assert_eq!(tenant_limit(501), 8_000);
    }

    #[test]
    fn a_full_bucket_throttles_with_a_positive_retry_after() {
        let profile = ThrottleProfile {
            limit: Some(3),
            ..ThrottleProfile::default()
        };
        let mut t = Throttle::default();
        for _ in 0..3 {
            assert!(matches!(
                t.charge(&profile, "t", "a", 1, 1),
                Charge::Admitted { .. }
            ));
        }
        match t.charge(&profile, "t", "a", 1, 1) {
            Charge::Throttled { retry_after } => assert!(retry_after > 0.0 && retry_after <= 10.0),
            other => panic!("expected a 429, got {other:?}"),
        }
        assert!(matches!(
            t.charge(&profile, "t", "other-app", 1, 1),
            Charge::Admitted { .. }
        ));
    }

    #[test]
    fn counted_fault_rules_run_out() {
        let mut rules = vec![FaultRule {
            endpoint: "users.delta".into(),
            kind: FaultKind::Unavailable,
            remaining: Some(1),
            delay_ms: 0,
            retry_after: None,
        }];
        assert!(plan_faults(&mut rules, "users.list").outcome.is_none());
        assert_eq!(
            plan_faults(&mut rules, "users.delta").outcome,
            Some((FaultKind::Unavailable, None))
        );
        assert!(plan_faults(&mut rules, "users.delta").outcome.is_none());
    }

    #[test]
    fn retry_after_styles_render_as_documented() {
        assert_eq!(
            format_retry_after(RetryAfterStyle::Integer, 2.128).as_deref(),
            Some("3")
        );
        assert_eq!(
            format_retry_after(RetryAfterStyle::Fractional, 2.128).as_deref(),
            Some("2.128")
        );
        assert_eq!(format_retry_after(RetryAfterStyle::Absent, 2.128), None);
    }
}
