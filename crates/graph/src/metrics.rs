//! What the Graph client's requests got back, for Prometheus: every answer by status, and the
//! throttled ones (429, or 503 with `Retry-After`) by tenant, so an alert can tell one tenant
//! over its budget from Graph in trouble.

use prometheus::{IntCounterVec, Opts, Registry};

/// Statuses pre-created so that ratios and alerts see zeros before the first answer of a kind.
const KNOWN_STATUSES: [&str; 6] = ["200", "400", "403", "404", "429", "503"];

/// Handles to the Graph client's metrics.
#[derive(Debug, Clone)]
pub struct GraphMetrics {
    requests: IntCounterVec,
    throttled: IntCounterVec,
}

impl GraphMetrics {
    /// Registers `cardsync_graph_requests_total{status}` (`error` when no answer came) and
    /// `cardsync_graph_throttled_total{tenant}` on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "cardsync_graph_requests_total",
                "Microsoft Graph requests (each attempt) by the status of the answer",
            ),
            &["status"],
        )?;
        let throttled = IntCounterVec::new(
            Opts::new(
                "cardsync_graph_throttled_total",
                "Graph answers that asked cardsync to slow down (429, 503), by tenant",
            ),
            &["tenant"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(throttled.clone()))?;
        for status in KNOWN_STATUSES.into_iter().chain(["error"]) {
            requests.with_label_values(&[status]);
        }
        Ok(Self {
            requests,
            throttled,
        })
    }

    /// One attempt's answer (`None`: no answer, a transport error).
    pub(crate) fn answered(&self, tenant: &str, status: Option<u16>) {
        let label = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
        self.requests.with_label_values(&[&label]).inc();
        if matches!(status, Some(429 | 503)) {
            self.throttled.with_label_values(&[tenant]).inc();
        }
    }
}
