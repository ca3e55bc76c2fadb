//! What the consumers of one process did, for Prometheus: messages by queue and outcome, how old
//! they were when consumed, and each consumed queue's depth. The queue label is the short name
//! (`card-writer.live`), the same in every deployment whatever its topology prefix.

use crate::consumer::Processed;
use lapin::Channel;
use lapin::options::QueueDeclareOptions;
use lapin::types::{FieldTable, ShortString};
use std::time::Duration;

/// How often a consumer with metrics looks at its queue's depth.
pub(crate) const DEPTH_INTERVAL: Duration = Duration::from_secs(15);
use cardsync_telemetry::metrics::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, MetricsError, Opts, Registry, register,
};

/// Outcomes of `cardsync_bus_messages_total`, pre-created for every queue so that an alert on
/// dead letters sees a zero before the first one.
pub const OUTCOMES: [&str; 4] = ["acked", "retried", "requeued", "dead_lettered"];

/// Ages (seconds) of a message when its consumer took it: a healthy queue is read within a
/// second, a backlog shows as minutes.
const AGE_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Handles to the consumers' metrics, registered once per process and shared by its consumers.
#[derive(Debug, Clone)]
pub struct BusMetrics {
    messages: IntCounterVec,
    age: HistogramVec,
    depth: IntGaugeVec,
}

impl BusMetrics {
    /// Registers `cardsync_bus_messages_total{queue,outcome}`,
    /// `cardsync_bus_message_age_seconds{queue}` and `cardsync_bus_queue_messages{queue}`.
    pub fn register(registry: &Registry) -> Result<Self, MetricsError> {
        Ok(Self {
            messages: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "cardsync_bus_messages_total",
                        "Messages consumed, by queue and what became of them",
                    ),
                    &["queue", "outcome"],
                )?,
            )?,
            age: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "cardsync_bus_message_age_seconds",
                        "How long a message waited in its queue (publish to consume, whole seconds)",
                    )
                    .buckets(AGE_BUCKETS.to_vec()),
                    &["queue"],
                )?,
            )?,
            depth: register(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "cardsync_bus_queue_messages",
                        "Messages ready in a consumed queue at the last look",
                    ),
                    &["queue"],
                )?,
            )?,
        })
    }

    /// Creates every series of `queue`, so dashboards and alerts see zeros from the start.
    pub(crate) fn start(&self, queue: &str) {
        for outcome in OUTCOMES {
            self.messages.with_label_values(&[queue, outcome]);
        }
        self.age.with_label_values(&[queue]);
        self.depth.with_label_values(&[queue]).set(0);
    }

    /// A message published at `published` (Unix seconds, the AMQP timestamp) was taken now.
    pub(crate) fn taken(&self, queue: &str, published: Option<u64>) {
        if let Some(published) = published {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let age = now.saturating_sub(i64::try_from(published).unwrap_or(i64::MAX));
            self.age
                .with_label_values(&[queue])
                .observe(age.max(0) as f64);
        }
    }

    /// What became of a message.
    pub(crate) fn processed(&self, queue: &str, processed: &Processed) {
        let outcome = match processed {
            Processed::Acked => "acked",
            Processed::Retried { .. } => "retried",
            Processed::Requeued => "requeued",
            Processed::DeadLettered { .. } => "dead_lettered",
            Processed::Empty => return,
        };
        self.messages.with_label_values(&[queue, outcome]).inc();
    }

    /// Records how many messages wait in `queue` (labelled `label`): a passive declare on the
    /// consuming channel; a failure leaves the last value, and the connection's own errors
    /// surface in the consumer loop.
    pub(crate) async fn sample_depth(&self, channel: &Channel, queue: &ShortString, label: &str) {
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        match channel
            .queue_declare(queue.clone(), options, FieldTable::default())
            .await
        {
            Ok(declared) => self
                .depth
                .with_label_values(&[label])
                .set(i64::from(declared.message_count())),
            Err(error) => tracing::debug!(error = %error, "queue depth not sampled"),
        }
    }
}
