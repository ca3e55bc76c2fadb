//! The one consumer loop. It owns connecting, prefetch, decoding, acknowledging, retry routing,
//! dead-lettering, reconnecting and graceful shutdown; a service only implements [`Handler`].
//!
//! A delivery is acknowledged only after its fate is durable: the handler returned `Ok`, or the
//! message was re-published (with a confirm) to its retry or dead-letter queue. A handler
//! interrupted by shutdown has its delivery returned to the queue (`nack` with requeue). Anything
//! else leaves it unacknowledged, so the broker redelivers it when the channel closes.

use crate::acks::AckGroup;
use crate::backoff::Backoff;
use crate::connection;
use crate::decision::{DeadLetterReason, Decision, Outcome, decide};
use crate::error::BusError;
use crate::message::{header_int, header_str, headers};
use crate::metrics::BusMetrics;
use crate::publisher::{Publisher, Raw};
use crate::settings::BusSettings;
use crate::topology::{Topology, WorkQueue};
use cardsync_proto::{BusMessage, Message as _};
use cardsync_telemetry::error_chain;
use cardsync_telemetry::propagation;
use futures_util::{FutureExt as _, StreamExt as _};
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicQosOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection};
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// What a service implements to consume one queue. Handlers know nothing of AMQP, so they are
/// testable without RabbitMQ.
pub trait Handler: Send + Sync + 'static {
    /// The message type of the queue; any other `type` is dead-lettered before decoding.
    type Message: BusMessage + Send + 'static;

    /// Makes the message's effect durable, or says whether trying again later can help.
    fn handle(
        &self,
        delivery: Delivery<Self::Message>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// A decoded message and what the broker and the sender said about it.
#[derive(Debug, Clone)]
pub struct Delivery<M> {
    /// The decoded message.
    pub message: M,
    /// 1 on the first try, incremented by every retry.
    pub attempt: u32,
    /// The broker delivered it before to a consumer that did not acknowledge it.
    pub redelivered: bool,
    /// The AMQP `message_id`.
    pub message_id: Option<String>,
    /// The tenant header.
    pub tenant_id: Option<String>,
    /// The exchange it was published to (empty for retries, which use the default exchange).
    pub exchange: String,
    /// Its routing key.
    pub routing_key: String,
}

type BoxError = Box<dyn StdError + Send + Sync>;

/// Why a handler failed, and therefore what happens next.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Might work later (a dependency is down, a lease is held, throttled): retried after a delay.
    #[error("transient failure")]
    Transient(#[source] BoxError),
    /// Can never work (invalid content, unknown tenant): dead-lettered with the error at once.
    #[error("permanent failure")]
    Permanent(#[source] BoxError),
    /// Stopped before any effect because the process is shutting down: the delivery goes back
    /// to its queue unacknowledged, at once and without counting an attempt, so another replica
    /// (or this one after its restart) takes it.
    #[error("interrupted by shutdown")]
    Interrupted(#[source] BoxError),
}

/// An error that knows whether trying again later can help: the one classification every
/// handler's failure goes through (`?` turns it into the matching [`HandlerError`]).
pub trait Transience {
    /// `true`: retry after a delay; `false`: dead-letter at once.
    fn is_transient(&self) -> bool;

    /// `true`: the handler stopped before any effect because its process is shutting down, and
    /// the delivery should go back to its queue as it is ([`HandlerError::Interrupted`]). Only
    /// errors that can mean that override it.
    fn is_interrupted(&self) -> bool {
        false
    }
}

impl<E> From<E> for HandlerError
where
    E: Transience + StdError + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        if error.is_interrupted() {
            Self::Interrupted(Box::new(error))
        } else if error.is_transient() {
            Self::Transient(Box::new(error))
        } else {
            Self::Permanent(Box::new(error))
        }
    }
}

impl HandlerError {
    /// A failure worth retrying.
    pub fn transient(error: impl Into<BoxError>) -> Self {
        Self::Transient(error.into())
    }

    /// A failure not worth retrying.
    pub fn permanent(error: impl Into<BoxError>) -> Self {
        Self::Permanent(error.into())
    }

    /// Work given up, before any effect, because the process is shutting down.
    pub fn interrupted(error: impl Into<BoxError>) -> Self {
        Self::Interrupted(error.into())
    }
}

/// What [`Consumer::process_next`] did with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Processed {
    /// Handled and acknowledged.
    Acked,
    /// Sent to the retry queue of `delay`, where it will come back as `attempt`.
    Retried {
        /// The attempt it will be on when it comes back.
        attempt: u32,
        /// How long it waits first.
        delay: Duration,
    },
    /// Returned to its queue unacknowledged (the handler was interrupted by shutdown).
    Requeued,
    /// Sent to the dead-letter queue.
    DeadLettered {
        /// Why.
        reason: DeadLetterReason,
        /// The last error.
        error: String,
    },
    /// The queue stayed empty for the whole wait.
    Empty,
}

/// Consumes one work queue of a topology with a [`Handler`].
pub struct Consumer {
    core: Arc<Core>,
    /// The `basic.get` session of [`Consumer::process_next`].
    stepper: tokio::sync::Mutex<Option<Session>>,
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("queue", &self.core.queue_name)
            .field("connection_name", &self.core.name)
            .finish()
    }
}

struct Core {
    settings: BusSettings,
    topology: Topology,
    queue_name: String,
    queue: Option<WorkQueue>,
    name: String,
    /// Moves messages to retry and dead-letter queues, on its own connection (RabbitMQ may
    /// block a publishing connection under memory pressure; acks must still flow).
    republisher: Publisher,
    metrics: std::sync::OnceLock<BusMetrics>,
}

struct Session {
    connection: Connection,
    channel: Channel,
}

impl Session {
    /// Closes politely within [`connection::CLOSE_BUDGET`], or drops the connection.
    async fn close(self) {
        connection::close_politely([&self.channel], Some(&self.connection), "shutdown").await;
    }
}

impl Consumer {
    /// A consumer of `queue` (short name like `card-writer.live`, or full name) of `topology`.
    /// Nothing connects until [`Consumer::run`] or [`Consumer::process_next`]. The topology's
    /// retry tiers are taken from `settings.retry_delays`.
    pub fn new(settings: BusSettings, topology: Topology, queue: &str) -> Self {
        let topology = topology
            .with_retry_delays(&settings.retry_delays)
            .with_queue_type(settings.queue_type);
        let work_queue = topology.queue(queue).cloned();
        let name = connection::connection_name(&format!("consumer {queue}"));
        let republisher =
            Publisher::lazy_named(&settings, topology.clone(), &format!("republisher {queue}"));
        Self {
            core: Arc::new(Core {
                settings,
                topology,
                queue_name: queue.to_owned(),
                queue: work_queue,
                name,
                republisher,
                metrics: std::sync::OnceLock::new(),
            }),
            stepper: tokio::sync::Mutex::new(None),
        }
    }

    /// Counts what this consumer does in `metrics` (shared by the process's consumers).
    pub fn with_metrics(self, metrics: &BusMetrics) -> Self {
        metrics.start(&self.core.queue_name);
        let _ = self.core.metrics.set(metrics.clone());
        self
    }

    /// The `connection_name` the consuming connection shows to the broker.
    pub fn connection_name(&self) -> &str {
        &self.core.name
    }

    /// Consumes until `shutdown` is cancelled, reconnecting with capped exponential backoff
    /// whenever the connection drops. On cancellation it stops consuming, lets in-flight
    /// handlers finish for up to `drain_timeout` (unfinished ones are not acknowledged, so the
    /// broker redelivers them), then closes. Errors only for a queue missing from the topology.
    pub async fn run<H: Handler>(
        &self,
        handler: Arc<H>,
        shutdown: CancellationToken,
    ) -> Result<(), BusError> {
        let core = &self.core;
        let queue = core.work_queue()?.name.clone();
        let queue_name =
            ShortString::try_new(queue.as_str()).map_err(|_| BusError::NameTooLong {
                name: queue.clone(),
            })?;
        let tag: ShortString =
            format!("{}-{:08x}", core.settings_tag(), rand::random::<u32>()).into();
        let limit = Arc::new(Semaphore::new(core.settings.concurrency.max(1)));
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut backoff = Backoff::new(core.settings.reconnect_max_backoff);
        let mut last_session = None;
        let mut last_acks = None;

        'connect: while !shutdown.is_cancelled() {
            let opened = tokio::select! {
                _ = shutdown.cancelled() => break 'connect,
                opened = core.open_session() => opened,
            };
            let consumer = match opened {
                Ok(session) => match session
                    .channel
                    .basic_consume(
                        queue_name.clone(),
                        tag.clone(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                {
                    Ok(consumer) => Ok((session, consumer)),
                    Err(source) => Err(BusError::Channel {
                        operation: "basic.consume",
                        source,
                    }),
                },
                Err(error) => Err(error),
            };
            let (session, mut consumer) = match consumer {
                Ok(pair) => pair,
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(queue = %queue, error = %error_chain(&error), retry_in = ?delay, "bus consumer cannot start");
                    tokio::select! {
                        _ = shutdown.cancelled() => break 'connect,
                        _ = tokio::time::sleep(delay) => continue 'connect,
                    }
                }
            };
            backoff.reset();
            tracing::info!(queue = %queue, connection = %core.name, "bus consumer started");
            // Delivery tags count from 1 on every channel, so every session groups its own acks.
            let (acks, acks_sent) = AckGroup::start();
            let mut depth_tick = tokio::time::interval(crate::metrics::DEPTH_INTERVAL);

            loop {
                tokio::select! {
                    biased;
                    _ = depth_tick.tick(), if core.metrics.get().is_some() => {
                        if let Some(metrics) = core.metrics.get() {
                            metrics.sample_depth(&session.channel, &queue_name, &core.queue_name).await;
                        }
                    }
                    _ = shutdown.cancelled() => {
                        let _ = session.channel.basic_cancel(tag.clone(), BasicCancelOptions::default()).await;
                        last_session = Some(session);
                        last_acks = Some((acks, acks_sent));
                        break 'connect;
                    }
                    Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                    next = consumer.next() => match next {
                        Some(Ok(delivery)) => {
                            let permit = tokio::select! {
                                biased;
                                // The delivery stays unacknowledged and is redelivered after close.
                                _ = shutdown.cancelled() => {
                                    let _ = session.channel.basic_cancel(tag.clone(), BasicCancelOptions::default()).await;
                                    last_session = Some(session);
                                    last_acks = Some((acks, acks_sent));
                                    break 'connect;
                                }
                                permit = limit.clone().acquire_owned() => permit,
                            };
                            let core = core.clone();
                            let handler = handler.clone();
                            let acks = acks.clone();
                            tasks.spawn(async move {
                                let _permit = permit;
                                if let Err(error) = process(&core, handler.as_ref(), delivery, Some(&acks)).await {
                                    tracing::warn!(error = %error_chain(&error), "bus delivery left for redelivery");
                                }
                            });
                        }
                        Some(Err(error)) => {
                            tracing::warn!(queue = %queue, error = %error_chain(&error), "bus consumer lost its connection");
                            break;
                        }
                        None => {
                            tracing::warn!(queue = %queue, "bus consumer was cancelled by the broker");
                            break;
                        }
                    }
                }
            }
            drop(consumer);
            // Handlers still running ack into a closed channel; the broker redelivers.
            drop(acks);
            drop(session);
            let delay = backoff.next_delay();
            tokio::select! {
                _ = shutdown.cancelled() => break 'connect,
                _ = tokio::time::sleep(delay) => {}
            }
        }

        let in_flight = tasks.len();
        let drained = tokio::time::timeout(core.settings.drain_timeout, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(queue = %queue, unfinished = tasks.len(), "bus consumer drain timed out; unfinished deliveries will be redelivered");
            tasks.shutdown().await;
        }
        if let Some((acks, acks_sent)) = last_acks {
            // The last handlers are done or abandoned: their acks leave before the channel closes.
            drop(acks);
            let _ = acks_sent.await;
        }
        if let Some(session) = last_session {
            session.close().await;
        }
        core.republisher.close().await;
        tracing::info!(queue = %queue, drained = in_flight, "bus consumer stopped");
        Ok(())
    }

    /// Fetches one message (`basic.get`, polling for up to `wait`) and processes it exactly as
    /// [`Consumer::run`] would. For tests and tools that drive a worker step by step.
    pub async fn process_next<H: Handler>(
        &self,
        handler: &H,
        wait: Duration,
    ) -> Result<Processed, BusError> {
        let core = &self.core;
        let queue = core.work_queue()?.name.clone();
        let queue_name =
            ShortString::try_new(queue.as_str()).map_err(|_| BusError::NameTooLong {
                name: queue.clone(),
            })?;
        let deadline = Instant::now() + wait;
        let mut stepper = self.stepper.lock().await;
        loop {
            let session = match stepper.take() {
                Some(session) if session.channel.status().connected() => session,
                _ => core.open_session().await?,
            };
            let got = session
                .channel
                .basic_get(queue_name.clone(), BasicGetOptions { no_ack: false })
                .await;
            match got {
                Ok(Some(message)) => {
                    let processed = process(core, handler, message.delivery, None).await;
                    *stepper = Some(session);
                    return processed;
                }
                Ok(None) => {
                    *stepper = Some(session);
                    let now = Instant::now();
                    if now >= deadline {
                        return Ok(Processed::Empty);
                    }
                    tokio::time::sleep(Duration::from_millis(20).min(deadline - now)).await;
                }
                Err(source) => {
                    return Err(BusError::Channel {
                        operation: "basic.get",
                        source,
                    });
                }
            }
        }
    }

    /// Closes the connections of [`Consumer::process_next`] and of re-publishing.
    pub async fn close(&self) {
        if let Some(session) = self.stepper.lock().await.take() {
            session.close().await;
        }
        self.core.republisher.close().await;
    }
}

impl Core {
    fn work_queue(&self) -> Result<&WorkQueue, BusError> {
        self.queue
            .as_ref()
            .ok_or_else(|| BusError::UnknownQueue(self.queue_name.clone()))
    }

    fn settings_tag(&self) -> String {
        let queue: String = self.queue_name.chars().take(100).collect();
        format!("cardsync-{queue}")
    }

    async fn open_session(&self) -> Result<Session, BusError> {
        let connection = connection::connect(
            &self.settings.url,
            &self.name,
            self.settings.connect_timeout,
            &self.topology,
        )
        .await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|source| BusError::Channel {
                operation: "channel.open",
                source,
            })?;
        channel
            .basic_qos(self.settings.prefetch, BasicQosOptions::default())
            .await
            .map_err(|source| BusError::Channel {
                operation: "basic.qos",
                source,
            })?;
        Ok(Session {
            connection,
            channel,
        })
    }
}

/// Decodes, runs the handler under a span that continues the sender's trace, and settles:
/// through `acks` when the delivery came from a consumer's channel, else on its own.
async fn process<H: Handler>(
    core: &Core,
    handler: &H,
    delivery: lapin::message::Delivery,
    acks: Option<&AckGroup>,
) -> Result<Processed, BusError> {
    let properties = &delivery.properties;
    let attempt = header_int(properties, headers::ATTEMPT)
        .and_then(|a| u32::try_from(a).ok())
        .unwrap_or(1)
        .max(1);
    let message_id = properties.message_id().as_ref().map(ShortString::to_string);
    let tenant_id = header_str(properties, headers::TENANT_ID).map(str::to_owned);
    let queue = core.work_queue()?;
    if let Some(metrics) = core.metrics.get() {
        metrics.taken(&core.queue_name, *properties.timestamp());
    }
    let span = tracing::info_span!(
        "bus.consume",
        otel.kind = "consumer",
        queue = %queue.name,
        message_type = H::Message::TYPE,
        message_id = message_id.as_deref().unwrap_or(""),
        tenant_id = tenant_id.as_deref().unwrap_or(""),
        attempt,
        redelivered = delivery.redelivered,
    );
    propagation::set_parent_from(&span, |key| header_str(properties, key));

    let found_type = properties.kind().as_ref().map_or("", ShortString::as_str);
    let outcome = if found_type != H::Message::TYPE {
        Outcome::WrongType(found_type.to_owned())
    } else {
        match H::Message::decode(delivery.data.as_slice()) {
            Err(error) => Outcome::Undecodable(error.to_string()),
            Ok(message) => {
                let input = Delivery {
                    message,
                    attempt,
                    redelivered: delivery.redelivered,
                    message_id,
                    tenant_id,
                    exchange: delivery.exchange.to_string(),
                    routing_key: delivery.routing_key.to_string(),
                };
                // Entered for the synchronous part of `handle` too, not only the future's polls.
                let run = span.in_scope(|| AssertUnwindSafe(handler.handle(input)).catch_unwind());
                match run.instrument(span.clone()).await {
                    Ok(Ok(())) => Outcome::Handled,
                    Ok(Err(HandlerError::Transient(error))) => {
                        Outcome::Transient(error_chain(error.as_ref()))
                    }
                    Ok(Err(HandlerError::Permanent(error))) => {
                        Outcome::Permanent(error_chain(error.as_ref()))
                    }
                    Ok(Err(HandlerError::Interrupted(error))) => {
                        Outcome::Interrupted(error_chain(error.as_ref()))
                    }
                    // A panic is a bug that may depend on state; retrying bounds it with max_attempts.
                    Err(_) => Outcome::Transient("the handler panicked".to_owned()),
                }
            }
        }
    };
    let decision = decide(
        outcome,
        attempt,
        core.settings.max_attempts,
        &core.settings.retry_delays,
    );
    let processed = settle(core, queue, delivery, attempt, decision, acks)
        .instrument(span)
        .await?;
    if let Some(metrics) = core.metrics.get() {
        metrics.processed(&core.queue_name, &processed);
    }
    Ok(processed)
}

/// Carries out a decision; the original is acknowledged only after its new copy is confirmed.
/// A handled delivery's ack goes to `acks` (grouped, sent soon after) when there is one.
async fn settle(
    core: &Core,
    queue: &WorkQueue,
    delivery: lapin::message::Delivery,
    attempt: u32,
    decision: Decision,
    acks: Option<&AckGroup>,
) -> Result<Processed, BusError> {
    let (exchange, routing_key, target, headers, processed) = match decision {
        Decision::Ack => {
            if let Some(acks) = acks {
                acks.ack(delivery.delivery_tag, delivery.acker);
                return Ok(Processed::Acked);
            }
            delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(BusError::Ack)?;
            return Ok(Processed::Acked);
        }
        Decision::Requeue { error } => {
            tracing::info!(error = %error, "bus message returned to its queue");
            // A failed nack leaves it unacknowledged: the broker returns it when the channel closes.
            return_to_queue(&delivery, acks)
                .await
                .map_err(BusError::Ack)?;
            return Ok(Processed::Requeued);
        }
        Decision::Retry {
            next_attempt,
            delay,
            error,
        } => {
            tracing::info!(next_attempt, ?delay, error = %error, "bus message retried");
            let target = queue.retry_queue(delay);
            let headers = vec![
                (
                    headers::ATTEMPT,
                    AMQPValue::LongLongInt(i64::from(next_attempt)),
                ),
                (headers::ERROR, AMQPValue::LongString(clip(&error).into())),
                (
                    headers::SOURCE_QUEUE,
                    AMQPValue::LongString(queue.name.as_str().into()),
                ),
            ];
            let processed = Processed::Retried {
                attempt: next_attempt,
                delay,
            };
            // The default exchange routes straight to the retry queue by its name.
            (String::new(), target.clone(), target, headers, processed)
        }
        Decision::DeadLetter { reason, error } => {
            tracing::warn!(%reason, error = %error, "bus message dead-lettered");
            let headers = vec![
                (headers::ATTEMPT, AMQPValue::LongLongInt(i64::from(attempt))),
                (headers::ERROR, AMQPValue::LongString(clip(&error).into())),
                (
                    headers::DEAD_LETTER_REASON,
                    AMQPValue::LongString(reason.as_str().into()),
                ),
                (
                    headers::SOURCE_QUEUE,
                    AMQPValue::LongString(queue.name.as_str().into()),
                ),
            ];
            let processed = Processed::DeadLettered { reason, error };
            (
                core.topology.dead_letter_exchange(),
                queue.name.clone(),
                queue.dead_letter_queue(),
                headers,
                processed,
            )
        }
    };

    let mut table = delivery.properties.headers().clone().unwrap_or_default();
    for (name, value) in headers {
        table.insert(name.into(), value);
    }
    let properties = delivery.properties.clone().with_headers(table);
    let republished = match Raw::new(&exchange, &routing_key, delivery.data.clone(), properties) {
        Ok(raw) => core.republisher.publish_raw(vec![raw]).await,
        Err(error) => Err(error),
    };
    if let Err(error) = republished {
        // Back to the queue: it will be tried again, and the delivery limit ends a loop.
        let _ = return_to_queue(&delivery, acks).await;
        return Err(BusError::Republish {
            target,
            source: Box::new(error),
        });
    }
    let acked = delivery.acker.ack(BasicAckOptions::default()).await;
    if let Some(acks) = acks {
        acks.settled(delivery.delivery_tag);
    }
    acked.map_err(BusError::Ack)?;
    Ok(processed)
}

/// `nack` with requeue: the broker puts the delivery back on its queue for the next consumer.
async fn return_to_queue(
    delivery: &lapin::message::Delivery,
    acks: Option<&AckGroup>,
) -> Result<(), lapin::Error> {
    let returned = delivery
        .acker
        .nack(BasicNackOptions {
            multiple: false,
            requeue: true,
        })
        .await;
    if let Some(acks) = acks {
        acks.settled(delivery.delivery_tag);
    }
    returned.map(|_| ())
}

/// Error text short enough for a header.
fn clip(text: &str) -> String {
    const LIMIT: usize = 2048;
    if text.len() <= LIMIT {
        return text.to_owned();
    }
    let mut end = LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests;
