//! The outbox relay: takes the oldest outbox rows (deleted in its transaction, skipping rows
//! another relay holds), publishes them with confirms, and commits only then. A failed publish
//! rolls the delete back; a crash after the broker's confirm and before the commit publishes the
//! same rows again with the same message ids: at least once, and recognisably so.

use crate::metrics::Metrics;
use crate::settings::RelaySettings;
use cardsync_bus::{Outgoing, PublishError, Publisher, Topology, names};
use cardsync_store::{StoreError, outbox};
use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often the backlog gauges are refreshed.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);

/// How far below the highest id it published a relay woken by a commit looks for rows. Ids are
/// taken when rows are inserted, but rows become visible when their transaction commits, so a
/// batch that committed late can hold ids below ones already published; a few batches' worth of
/// ids covers that, and the sweep every poll interval covers everything else.
const CLAIM_WINDOW: i64 = 10_000;

/// Why a batch was not published.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// PostgreSQL failed.
    #[error("outbox query failed")]
    Store(#[from] StoreError),
    /// The broker did not confirm the batch; it stays unpublished.
    #[error("publishing card events failed")]
    Publish(#[from] PublishError),
}

impl From<sqlx::Error> for RelayError {
    fn from(error: sqlx::Error) -> Self {
        RelayError::Store(StoreError::Query(error))
    }
}

/// The message an outbox row is published as: its exchange, routing key, type, fixed message
/// id, body and headers, exactly as stored.
pub fn outgoing(row: outbox::Message) -> Outgoing {
    Outgoing {
        exchange: row.exchange,
        routing_key: row.routing_key,
        message_type: row.message_type,
        message_id: row.message_id.to_string(),
        payload: row.payload,
        headers: row.headers.into_iter().collect(),
    }
}

/// Publishes the outbox; cheap to clone.
#[derive(Debug, Clone)]
pub struct Relay {
    pool: PgPool,
    publisher: Publisher,
    topology: Topology,
    metrics: Metrics,
    settings: RelaySettings,
    wake: Arc<Notify>,
    /// The highest outbox id this relay published.
    highest: Arc<AtomicI64>,
}

impl Relay {
    /// A relay over `pool`, publishing with `publisher` to `topology`'s exchanges.
    pub fn new(
        pool: PgPool,
        publisher: Publisher,
        topology: Topology,
        metrics: Metrics,
        settings: RelaySettings,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            pool,
            publisher,
            topology,
            metrics,
            settings,
            wake,
            highest: Arc::new(AtomicI64::new(0)),
        }
    }

    /// The exchanges this relay publishes rows of (its own deployment's).
    fn exchanges(&self) -> Vec<String> {
        vec![self.topology.name(names::CARD_EVENTS)]
    }

    /// Publishes one batch of the oldest unpublished rows; returns how many were published.
    pub async fn publish_batch(&self) -> Result<usize, RelayError> {
        self.publish_after(0).await
    }

    /// Publishes one batch of the oldest unpublished rows with an id above `after`.
    async fn publish_after(&self, after: i64) -> Result<usize, RelayError> {
        let mut tx = self.pool.begin().await?;
        let rows = outbox::take(
            &mut tx,
            &self.exchanges(),
            after,
            i64::from(self.settings.batch_size),
        )
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        // `take` returns the rows in id order.
        let (count, highest) = (rows.len(), rows.last().map(|row| row.id));
        let batch: Vec<Outgoing> = rows.into_iter().map(outgoing).collect();
        if let Err(error) = self.publisher.publish_all(batch).await {
            self.metrics.outbox_publish_failures.inc();
            return Err(error.into());
        }
        tx.commit().await?;
        if let Some(highest) = highest {
            self.highest.fetch_max(highest, Ordering::Relaxed);
        }
        self.metrics.outbox_published.inc_by(count as u64);
        Ok(count)
    }

    /// Publishes batches until the outbox is empty; returns how many were published.
    pub async fn drain(&self) -> Result<usize, RelayError> {
        self.drain_after(|| 0).await
    }

    /// Publishes batches of the rows near the newest ones published (see [`CLAIM_WINDOW`])
    /// until there are none.
    async fn drain_recent(&self) -> Result<usize, RelayError> {
        self.drain_after(|| {
            self.highest
                .load(Ordering::Relaxed)
                .saturating_sub(CLAIM_WINDOW)
        })
        .await
    }

    async fn drain_after(&self, after: impl Fn() -> i64) -> Result<usize, RelayError> {
        let mut total = 0;
        loop {
            let published = self.publish_after(after()).await?;
            total += published;
            if published < self.settings.batch_size as usize {
                return Ok(total);
            }
        }
    }

    /// Updates the backlog gauges.
    pub async fn observe_backlog(&self) -> Result<(), RelayError> {
        let backlog = outbox::backlog(&self.pool, &self.exchanges()).await?;
        self.metrics.outbox_pending.set(backlog.pending);
        let lag = backlog.oldest.map_or(0.0, |oldest| {
            (OffsetDateTime::now_utc() - oldest).as_seconds_f64()
        });
        self.metrics.outbox_lag_seconds.set(lag.max(0.0));
        Ok(())
    }

    /// Runs until `shutdown`: drains the newest rows whenever a commit wakes it and the whole
    /// outbox every poll interval, and backs off while PostgreSQL or RabbitMQ fail.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut failures: u32 = 0;
        let mut last_observed: Option<tokio::time::Instant> = None;
        let mut last_sweep: Option<tokio::time::Instant> = None;
        while !shutdown.is_cancelled() {
            let sweep = last_sweep.is_none_or(|at| at.elapsed() >= self.settings.poll_interval);
            let drained = if sweep {
                last_sweep = Some(tokio::time::Instant::now());
                self.drain().await
            } else {
                self.drain_recent().await
            };
            let wait = match drained {
                Ok(_) => {
                    failures = 0;
                    self.settings.poll_interval
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let delay = Duration::from_millis(100)
                        .saturating_mul(2u32.saturating_pow(failures.min(8)))
                        .min(Duration::from_secs(10));
                    tracing::warn!(error = %cardsync_telemetry::error_chain(&error), retry_in = ?delay, "outbox relay failed");
                    delay
                }
            };
            // The backlog gauges are scraped every few seconds; counting the backlog after
            // every drain would cost PostgreSQL a scan per commit under load.
            if last_observed.is_none_or(|at| at.elapsed() >= BACKLOG_EVERY) {
                last_observed = Some(tokio::time::Instant::now());
                if let Err(error) = self.observe_backlog().await {
                    tracing::debug!(error = %cardsync_telemetry::error_chain(&error), "outbox backlog unknown");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified() => {
                    // Let the commits of a busy moment gather: one claim and one confirm wait
                    // for many events instead of one per commit.
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = tokio::time::sleep(self.settings.linger) => {}
                    }
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
        // A last pass so events of commands applied during the drain are not left waiting.
        if let Err(error) = self.drain().await {
            tracing::warn!(error = %cardsync_telemetry::error_chain(&error), "outbox not drained at shutdown; published on next start");
        }
    }
}
