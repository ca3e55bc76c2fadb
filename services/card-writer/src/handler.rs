//! The bus handler of both command queues: validate, fast-path dedup, apply, count, wake the
//! relay, remember. Transient versus permanent is decided by [`ApplyError::is_transient`].

use crate::apply::{ApplyError, apply};
use crate::command::{Origin, validate};
use crate::dedup::Dedup;
use crate::metrics::Metrics;
use cardsync_bus::{Delivery, Handler, HandlerError, names};
use cardsync_proto::CardCommand;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Notify;

/// Which command queue a handler serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandQueue {
    /// Real-time commands (`card-writer.live`).
    Live,
    /// Reconcile commands (`card-writer.bulk`).
    Bulk,
}

impl CommandQueue {
    /// The work queue's short name.
    pub fn queue_name(self) -> &'static str {
        match self {
            CommandQueue::Live => names::CARD_WRITER_LIVE,
            CommandQueue::Bulk => names::CARD_WRITER_BULK,
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            CommandQueue::Live => "live",
            CommandQueue::Bulk => "bulk",
        }
    }
}

/// Applies card commands from one queue.
#[derive(Debug, Clone)]
pub struct CommandHandler {
    queue: CommandQueue,
    pool: PgPool,
    dedup: Dedup,
    metrics: Metrics,
    relay_wake: Arc<Notify>,
    events_exchange: String,
}

impl CommandHandler {
    /// A handler for `queue` writing through `pool`; card events go to `events_exchange`
    /// (full name).
    pub fn new(
        queue: CommandQueue,
        pool: PgPool,
        dedup: Dedup,
        metrics: Metrics,
        relay_wake: Arc<Notify>,
        events_exchange: String,
    ) -> Self {
        Self {
            queue,
            pool,
            dedup,
            metrics,
            relay_wake,
            events_exchange,
        }
    }

    fn count(&self, outcome: &str, tenant: &str) {
        self.metrics
            .commands
            .with_label_values(&[self.queue.label(), outcome, tenant])
            .inc();
    }
}

impl Handler for CommandHandler {
    type Message = CardCommand;

    async fn handle(&self, delivery: Delivery<CardCommand>) -> Result<(), HandlerError> {
        let started = Instant::now();
        let routing_key = (!delivery.exchange.is_empty()).then_some(delivery.routing_key.as_str());
        let origin = Origin {
            tenant_header: delivery.tenant_id.as_deref(),
            routing_key,
        };
        let command = match validate(delivery.message, origin) {
            Ok(command) => command,
            Err(error) => {
                self.count("invalid", "unknown");
                return Err(HandlerError::permanent(error));
            }
        };
        let tenant = command.tenant_id.to_string();

        match self
            .dedup
            .seen(command.tenant_id, &command.message_id)
            .await
        {
            Ok(true) => {
                self.count("duplicate_fast", &tenant);
                tracing::debug!(user_id = %command.user_id, "card command already applied (redis)");
                return Ok(());
            }
            Ok(false) => {}
            Err(error) => {
                self.metrics.dedup_errors.inc();
                tracing::debug!(error = %cardsync_bus::error_chain(&error), "redis dedup check skipped");
            }
        }

        let applied = match apply(&self.pool, &command, &self.events_exchange).await {
            Ok(applied) => applied,
            Err(error) => {
                let transient = error.is_transient();
                let outcome = match (&error, transient) {
                    (ApplyError::UnknownTenant(_), _) => "unknown_tenant",
                    (_, true) => "failed",
                    (_, false) => "invalid",
                };
                self.count(outcome, &tenant);
                return Err(if transient {
                    HandlerError::transient(error)
                } else {
                    HandlerError::permanent(error)
                });
            }
        };
        let elapsed = started.elapsed().as_secs_f64();
        self.count(applied.outcome.as_str(), &tenant);
        self.metrics
            .apply_duration
            .with_label_values(&[self.queue.label()])
            .observe(elapsed);
        if applied.outcome.wrote()
            && let Some(observed) = command.observed_at
        {
            let e2e = (time::OffsetDateTime::now_utc() - observed).as_seconds_f64();
            if e2e >= 0.0 {
                self.metrics
                    .end_to_end
                    .with_label_values(&[self.queue.label()])
                    .observe(e2e);
            }
        }
        if applied.events > 0 {
            self.relay_wake.notify_one();
        }
        tracing::debug!(
            user_id = %command.user_id,
            action = command.action.as_str(),
            version = command.version,
            outcome = applied.outcome.as_str(),
            "card command applied"
        );
        if let Err(error) = self
            .dedup
            .remember(command.tenant_id, &command.message_id)
            .await
        {
            self.metrics.dedup_errors.inc();
            tracing::debug!(error = %cardsync_bus::error_chain(&error), "redis dedup key not written");
        }
        Ok(())
    }
}
