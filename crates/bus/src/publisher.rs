//! Confirmed publishing: every message is `mandatory`, every batch waits for all of its
//! publisher confirms, and nobody is told "done" before the broker has the message on disk.
//!
//! A [`Publisher`] owns one connection and a small pool of confirm channels. A batch checks out
//! one channel for itself, publishes every message without waiting (pipelined), then awaits all
//! confirms together; several batches run in parallel on different channels. Exclusive use of a
//! channel per batch is also what makes "returned as unroutable" attributable to the right
//! caller: lapin attaches a `basic.return` to whichever confirm of the channel resolves next.

use crate::connection;
use crate::error::{BusError, PublishError, Unconfirmed};
use crate::message::Outgoing;
use crate::settings::BusSettings;
use crate::topology::Topology;
use cardsync_telemetry::error_chain;
use futures_util::future::{join_all, try_join_all};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use secrecy::SecretString;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, timeout_at};

/// A message ready for the wire; used for [`Outgoing`] and for the consumer's re-publishing.
#[derive(Debug)]
pub(crate) struct Raw {
    pub(crate) exchange: ShortString,
    pub(crate) routing_key: ShortString,
    pub(crate) payload: Vec<u8>,
    pub(crate) properties: BasicProperties,
}

impl Raw {
    pub(crate) fn new(
        exchange: &str,
        routing_key: &str,
        payload: Vec<u8>,
        properties: BasicProperties,
    ) -> Result<Self, PublishError> {
        Ok(Self {
            exchange: ShortString::try_new(exchange)
                .map_err(|_| PublishError::InvalidMessage { field: "exchange" })?,
            routing_key: ShortString::try_new(routing_key).map_err(|_| {
                PublishError::InvalidMessage {
                    field: "routing key",
                }
            })?,
            payload,
            properties,
        })
    }
}

impl TryFrom<Outgoing> for Raw {
    type Error = PublishError;

    fn try_from(message: Outgoing) -> Result<Self, PublishError> {
        let properties = message
            .properties()
            .map_err(|field| PublishError::InvalidMessage { field })?;
        Raw::new(
            &message.exchange,
            &message.routing_key,
            message.payload,
            properties,
        )
    }
}

/// Publishes batches with confirms. Cheap to clone; clones share the connection and channels.
#[derive(Clone)]
pub struct Publisher {
    shared: Arc<Shared>,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("connection_name", &self.shared.name)
            .field("topology_prefix", &self.shared.topology.prefix())
            .field("connected", &self.shared.live_link().is_some())
            .finish()
    }
}

struct Shared {
    url: SecretString,
    name: String,
    topology: Topology,
    confirm_timeout: Duration,
    connect_timeout: Duration,
    /// The current connection; `None` until the first use and after it broke.
    link: Mutex<Option<Link>>,
    /// Numbers connections, so channels of a dead connection are never handed out again.
    generations: AtomicU64,
    /// One connection attempt at a time; remembers the last failure so callers that queued
    /// behind a failed attempt fail at once instead of each waiting `connect_timeout`.
    gate: tokio::sync::Mutex<Option<(Instant, String)>>,
    /// Where connections are opened: the runtime the publisher was made on, which lives as long
    /// as the service (`None` outside a runtime: opened wherever first used). lapin drives a
    /// connection with tasks on the runtime that opened it, and an HTTP worker's runtime (actix
    /// gives each worker one, where a readiness probe may connect first) stops before the
    /// service's shutdown closes the publisher.
    runtime: Option<tokio::runtime::Handle>,
    /// Confirm channels not in use.
    idle: Mutex<Vec<Pooled>>,
    /// One permit per channel: a batch holds one while it owns a channel.
    slots: Arc<Semaphore>,
}

#[derive(Clone)]
struct Link {
    connection: Arc<Connection>,
    generation: u64,
}

struct Pooled {
    channel: Channel,
    generation: u64,
}

/// A channel checked out for one batch.
struct Lease {
    channel: Channel,
    generation: u64,
    _permit: OwnedSemaphorePermit,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data under these locks stays consistent even if a holder panicked.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Publisher {
    /// A publisher that connects (and declares `topology`) on first use. Never fails, so a
    /// service can start while the broker is down and answer "unavailable" until it is back.
    /// The topology's retry tiers are taken from `settings.retry_delays`.
    pub fn lazy(settings: &BusSettings, topology: Topology) -> Self {
        Self::lazy_named(settings, topology, "publisher")
    }

    pub(crate) fn lazy_named(settings: &BusSettings, topology: Topology, role: &str) -> Self {
        let topology = topology
            .with_retry_delays(&settings.retry_delays)
            .with_queue_type(settings.queue_type);
        let channels = settings.publish_channels.max(1);
        Self {
            shared: Arc::new(Shared {
                url: settings.url.clone(),
                name: connection::connection_name(role),
                topology,
                confirm_timeout: settings.confirm_timeout,
                connect_timeout: settings.connect_timeout,
                link: Mutex::new(None),
                generations: AtomicU64::new(0),
                gate: tokio::sync::Mutex::new(None),
                runtime: tokio::runtime::Handle::try_current().ok(),
                idle: Mutex::new(Vec::with_capacity(channels)),
                slots: Arc::new(Semaphore::new(channels)),
            }),
        }
    }

    /// Connects, declares `topology` and is ready to publish, or says why not.
    pub async fn connect(settings: &BusSettings, topology: Topology) -> Result<Self, BusError> {
        let publisher = Self::lazy(settings, topology);
        publisher
            .shared
            .ensure_link(Instant::now() + publisher.shared.connect_timeout)
            .await?;
        Ok(publisher)
    }

    /// The `connection_name` this publisher shows to the broker.
    pub fn connection_name(&self) -> &str {
        &self.shared.name
    }

    /// Whether the broker is reachable: connected now, or able to connect within `connect_timeout`.
    pub async fn is_ready(&self) -> bool {
        self.shared
            .ensure_link(Instant::now() + self.shared.connect_timeout)
            .await
            .is_ok()
    }

    /// Publishes every message (`mandatory`, persistent) and waits for all their confirms,
    /// `confirm_timeout` at most in total (connecting included). `Ok` only if every message
    /// was acknowledged by the broker and none was returned as unroutable.
    pub async fn publish_all(&self, batch: Vec<Outgoing>) -> Result<(), PublishError> {
        let raw = batch
            .into_iter()
            .map(Raw::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        self.publish_raw(raw).await
    }

    /// Closes the connection politely (shutdown), within [`connection::CLOSE_BUDGET`] in all, or
    /// drops it. Later publishes reconnect.
    pub async fn close(&self) {
        let idle: Vec<Pooled> = std::mem::take(&mut *lock(&self.shared.idle));
        let link = lock(&self.shared.link).take();
        connection::close_politely(
            idle.iter().map(|pooled| &pooled.channel),
            link.as_ref().map(|link| link.connection.as_ref()),
            "shutdown",
        )
        .await;
    }

    pub(crate) async fn publish_raw(&self, batch: Vec<Raw>) -> Result<(), PublishError> {
        if batch.is_empty() {
            return Ok(());
        }
        let shared = &self.shared;
        let deadline = Instant::now() + shared.confirm_timeout;
        let lease = shared.checkout(deadline).await?;
        match timeout_at(deadline, publish_on(&lease.channel, batch)).await {
            Ok(Ok(())) => {
                shared.checkin(lease);
                Ok(())
            }
            Ok(Err(PublishError::Unconfirmed(Unconfirmed::ChannelClosed(error)))) => {
                // The channel is unusable; if its connection is gone too, reconnect next time.
                shared.forget_if_disconnected(lease.generation);
                Err(PublishError::Unconfirmed(Unconfirmed::ChannelClosed(error)))
            }
            Ok(Err(other)) => {
                // Unroutable or nacked: the channel itself is healthy and fully settled.
                shared.checkin(lease);
                Err(other)
            }
            Err(_) => {
                // A silent broker or a half-open TCP connection looks exactly like this; a fresh
                // connection is cheap and the only way to find out.
                shared.forget(lease.generation);
                Err(PublishError::Unconfirmed(Unconfirmed::TimedOut(
                    shared.confirm_timeout,
                )))
            }
        }
    }
}

impl Shared {
    fn live_link(&self) -> Option<Link> {
        lock(&self.link)
            .as_ref()
            .filter(|link| link.connection.status().connected())
            .cloned()
    }

    /// Drops connection `generation` (if still current) and its idle channels.
    fn forget(&self, generation: u64) {
        let mut link = lock(&self.link);
        if link.as_ref().is_some_and(|l| l.generation == generation) {
            *link = None;
        }
        drop(link);
        lock(&self.idle).retain(|pooled| pooled.generation != generation);
    }

    fn forget_if_disconnected(&self, generation: u64) {
        let connected = lock(&self.link)
            .as_ref()
            .is_some_and(|l| l.generation == generation && l.connection.status().connected());
        if !connected {
            self.forget(generation);
        }
    }

    fn checkin(&self, lease: Lease) {
        let Lease {
            channel,
            generation,
            ..
        } = lease;
        if channel.status().connected() {
            lock(&self.idle).push(Pooled {
                channel,
                generation,
            });
        }
    }

    /// A connected link, connecting if needed, by `deadline` and within `connect_timeout`.
    async fn ensure_link(&self, deadline: Instant) -> Result<Link, BusError> {
        if let Some(link) = self.live_link() {
            return Ok(link);
        }
        let started = Instant::now();
        let mut gate = timeout_at(deadline, self.gate.lock())
            .await
            .map_err(|_| BusError::ConnectTimeout(self.connect_timeout))?;
        if let Some((failed_at, reason)) = gate.as_ref()
            && *failed_at >= started
        {
            return Err(BusError::ConnectFailedRecently {
                reason: reason.clone(),
            });
        }
        if let Some(link) = self.live_link() {
            return Ok(link);
        }
        let budget = self
            .connect_timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        let attempt = {
            let (url, name, topology) =
                (self.url.clone(), self.name.clone(), self.topology.clone());
            async move { connection::connect(&url, &name, budget, &topology).await }
        };
        let connected = match &self.runtime {
            Some(runtime) => runtime
                .spawn(attempt)
                .await
                .unwrap_or(Err(BusError::ConnectAborted)),
            None => attempt.await,
        };
        match connected {
            Ok(connection) => {
                let link = Link {
                    connection: Arc::new(connection),
                    generation: self.generations.fetch_add(1, Ordering::Relaxed) + 1,
                };
                *lock(&self.link) = Some(link.clone());
                *gate = None;
                tracing::info!(connection = %self.name, "bus publisher connected");
                Ok(link)
            }
            Err(error) => {
                tracing::warn!(connection = %self.name, error = %error_chain(&error), "bus publisher cannot connect");
                *gate = Some((Instant::now(), error_chain(&error)));
                Err(error)
            }
        }
    }

    /// An idle confirm channel of the live connection, or a new one.
    async fn checkout(&self, deadline: Instant) -> Result<Lease, PublishError> {
        let permit = timeout_at(deadline, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| PublishError::Unconfirmed(Unconfirmed::TimedOut(self.confirm_timeout)))?
            .map_err(|_| PublishError::Unconfirmed(Unconfirmed::TimedOut(self.confirm_timeout)))?;

        let live = self.live_link().map(|link| link.generation);
        loop {
            let pooled = lock(&self.idle).pop();
            let Some(pooled) = pooled else { break };
            if Some(pooled.generation) == live && pooled.channel.status().connected() {
                return Ok(Lease {
                    channel: pooled.channel,
                    generation: pooled.generation,
                    _permit: permit,
                });
            }
        }

        // A link can look connected a moment after the broker dropped it; one retry with a
        // fresh connection covers that without looping on a dead broker.
        let mut last_error = None;
        for _ in 0..2 {
            let link = self
                .ensure_link(deadline)
                .await
                .map_err(PublishError::Unreachable)?;
            match timeout_at(deadline, open_confirm_channel(&link.connection)).await {
                Ok(Ok(channel)) => {
                    return Ok(Lease {
                        channel,
                        generation: link.generation,
                        _permit: permit,
                    });
                }
                Ok(Err(error)) => {
                    self.forget(link.generation);
                    last_error = Some(error);
                }
                Err(_) => {
                    self.forget(link.generation);
                    return Err(PublishError::Unconfirmed(Unconfirmed::TimedOut(
                        self.confirm_timeout,
                    )));
                }
            }
        }
        Err(PublishError::Unreachable(
            last_error.unwrap_or(BusError::ConnectTimeout(self.connect_timeout)),
        ))
    }
}

async fn open_confirm_channel(connection: &Connection) -> Result<Channel, BusError> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|source| BusError::Channel {
            operation: "channel.open",
            source,
        })?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|source| BusError::Channel {
            operation: "confirm.select",
            source,
        })?;
    Ok(channel)
}

/// Sends every message, then awaits every confirm: one round trip per batch, not per message.
async fn publish_on(channel: &Channel, batch: Vec<Raw>) -> Result<(), PublishError> {
    let options = BasicPublishOptions {
        mandatory: true,
        immediate: false,
    };
    let sends = batch.into_iter().map(|message| async move {
        channel
            .basic_publish(
                message.exchange,
                message.routing_key,
                options,
                &message.payload,
                message.properties,
            )
            .await
    });
    let confirms = try_join_all(sends)
        .await
        .map_err(|e| PublishError::Unconfirmed(Unconfirmed::ChannelClosed(e)))?;

    let mut nacked = 0;
    let mut returned = None;
    for confirmation in join_all(confirms).await {
        match confirmation {
            Ok(Confirmation::Ack(None)) => {}
            Ok(Confirmation::Ack(Some(message)) | Confirmation::Nack(Some(message))) => {
                returned.get_or_insert((
                    message.delivery.exchange.to_string(),
                    message.delivery.routing_key.to_string(),
                ));
            }
            Ok(Confirmation::Nack(None) | Confirmation::NotRequested) => nacked += 1,
            Err(error) => return Err(PublishError::Unconfirmed(Unconfirmed::ChannelClosed(error))),
        }
    }
    if let Some((exchange, routing_key)) = returned {
        return Err(PublishError::Unroutable {
            exchange,
            routing_key,
        });
    }
    if nacked > 0 {
        return Err(PublishError::Unconfirmed(Unconfirmed::Nacked {
            count: nacked,
        }));
    }
    Ok(())
}
