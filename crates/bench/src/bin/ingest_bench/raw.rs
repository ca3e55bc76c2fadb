//! The raw publisher the webhook is measured against: the minimal lapin publisher, sending the
//! very bytes and properties the webhook published, to the same exchange and queue.

use cardsync_bus::lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use cardsync_bus::lapin::{BasicProperties, Confirmation, Connection};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// What the raw publisher sends: a message exactly as the webhook published it.
pub(crate) struct RawTemplate {
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) properties: BasicProperties,
}

/// Outcomes of one raw publishing phase.
#[derive(Debug, Default)]
pub(crate) struct RawPhase {
    pub(crate) confirmed: u64,
    pub(crate) failed: u64,
    /// Publish-to-last-confirm time of each window, in microseconds.
    pub(crate) windows_us: Vec<u32>,
    pub(crate) elapsed: Duration,
}

impl RawPhase {
    pub(crate) fn per_second(&self) -> f64 {
        self.confirmed as f64 / self.elapsed.as_secs_f64()
    }
}

/// The minimal lapin publisher: one connection, `channels` confirm channels, each publishing a
/// window of `batch` messages (`mandatory`, pipelined) and then awaiting all of its confirms,
/// until `duration` has passed.
pub(crate) async fn raw_publish(
    connection: &Connection,
    template: &RawTemplate,
    batch: usize,
    channels: usize,
    duration: Duration,
) -> anyhow::Result<RawPhase> {
    let mut opened = Vec::with_capacity(channels);
    for _ in 0..channels {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        opened.push(channel);
    }
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = JoinSet::new();
    for channel in opened {
        let exchange = template.exchange.clone();
        let routing_key = template.routing_key.clone();
        let payload = template.payload.clone();
        let properties = template.properties.clone();
        workers.spawn(async move {
            let mut phase = RawPhase::default();
            let options = BasicPublishOptions {
                mandatory: true,
                immediate: false,
            };
            while Instant::now() < deadline {
                let window = Instant::now();
                let sends = (0..batch).map(|_| {
                    channel.basic_publish(
                        exchange.as_str().into(),
                        routing_key.as_str().into(),
                        options,
                        &payload,
                        properties.clone(),
                    )
                });
                let confirms = futures_util::future::try_join_all(sends).await?;
                for confirmation in futures_util::future::join_all(confirms).await {
                    match confirmation? {
                        Confirmation::Ack(None) => phase.confirmed += 1,
                        _ => phase.failed += 1,
                    }
                }
                phase
                    .windows_us
                    .push(u32::try_from(window.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
            let _ = channel.close(200, "bench done".into()).await;
            Ok::<_, cardsync_bus::lapin::Error>(phase)
        });
    }
    let mut total = RawPhase::default();
    while let Some(done) = workers.join_next().await {
        let phase = done??;
        total.confirmed += phase.confirmed;
        total.failed += phase.failed;
        total.windows_us.extend(phase.windows_us);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}
