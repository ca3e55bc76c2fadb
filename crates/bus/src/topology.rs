//! The broker layout as data: exchanges, work queues with their retry and dead-letter queues,
//! and one idempotent [`declare`] that makes the broker match it.
//!
//! Every name carries the topology's prefix, so tests (and several deployments on one vhost)
//! never collide.

use crate::error::BusError;
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, ExchangeKind};
use std::time::Duration;

/// Short names of the standard cardsync exchanges, queues and routing keys (before the prefix).
pub mod names {
    /// Topic exchange of Graph changes (`change.<tenant>`) and lifecycle events (`lifecycle.<tenant>`).
    pub const GRAPH: &str = "graph";
    /// Topic exchange of sync requests (`request.<tenant>` for the delta-worker,
    /// `reconcile.<tenant>` for the reconciler).
    pub const SYNC: &str = "sync";
    /// Topic exchange of card commands (`command.live.<tenant>`, `command.bulk.<tenant>`).
    pub const CARDS: &str = "cards";
    /// Topic exchange of card events (`event.<kind>.<tenant>`) and run digests
    /// (`digest.run.<tenant>`, `digest.daily.<tenant>`).
    pub const CARD_EVENTS: &str = "card-events";
    /// Direct exchange every work queue dead-letters to, keyed by the work queue's full name.
    pub const DEAD_LETTER: &str = "dlx";

    /// Graph change notifications, consumed by the delta-worker.
    pub const DELTA_WORKER_CHANGES: &str = "delta-worker.changes";
    /// Sync requests (Sync Now, per-user and per-group sync), consumed by the delta-worker.
    /// Apart from changes because a consumer decodes one message type per queue.
    pub const DELTA_WORKER_REQUESTS: &str = "delta-worker.requests";
    /// Reconcile requests (Sync Now once the reconciler exists, schedules that are due), consumed
    /// by the reconciler: full reconciles of a tenant or a group against the cards.
    pub const RECONCILER_REQUESTS: &str = "reconciler.requests";
    /// Lifecycle notifications, consumed by the subscription-manager. Bounded (`.v2`: the
    /// unbounded `subscription-manager.lifecycle` of earlier releases is retired).
    pub const SUBSCRIPTION_MANAGER_LIFECYCLE: &str = "subscription-manager.lifecycle.v2";
    /// Real-time card commands, consumed by the card-writer.
    pub const CARD_WRITER_LIVE: &str = "card-writer.live";
    /// Reconcile (bulk) card commands, consumed by the card-writer apart from live ones.
    pub const CARD_WRITER_BULK: &str = "card-writer.bulk";
    /// Every card event and run digest, so neither is ever unroutable. Nothing consumes it: a bounded sink
    /// (`.v2`: the unbounded `card-events.audit` of earlier releases is retired).
    pub const CARD_EVENTS_AUDIT: &str = "card-events.audit.v2";
    /// Queues of earlier releases, declared without a length limit. A queue's arguments cannot
    /// change in place (the broker answers 406 PRECONDITION_FAILED), so their bounded successors
    /// have new names and [`super::declare`] deletes these, with their retry and dead-letter queues.
    pub const RETIRED_QUEUES: [&str; 2] = ["subscription-manager.lifecycle", "card-events.audit"];
}

/// Most messages the lifecycle queue holds; past it publishes are refused (the webhook answers
/// 503 and Graph redelivers), so a deployment without a running subscription manager cannot fill
/// its broker. Lifecycle events are a few per tenant and day.
pub const LIFECYCLE_MAX_LENGTH: u32 = 10_000;
/// Most card events the audit sink keeps; the oldest are dropped past it (PostgreSQL's audit log
/// is the durable record). The broker counts them in
/// `rabbitmq_global_messages_dead_lettered_maxlen_total{dead_letter_strategy="disabled"}`.
pub const AUDIT_MAX_LENGTH: u32 = 50_000;

/// Routing keys of the standard topology; the tenant is always the last segment.
pub mod routing {
    /// `change.<tenant>` on [`super::names::GRAPH`], carrying a `GraphChange`.
    pub fn change(tenant: &str) -> String {
        format!("change.{tenant}")
    }
    /// `lifecycle.<tenant>` on [`super::names::GRAPH`], carrying a `LifecycleEvent`.
    pub fn lifecycle(tenant: &str) -> String {
        format!("lifecycle.{tenant}")
    }
    /// `request.<tenant>` on [`super::names::SYNC`], carrying a `SyncRequest`.
    pub fn sync_request(tenant: &str) -> String {
        format!("request.{tenant}")
    }
    /// `reconcile.<tenant>` on [`super::names::SYNC`], carrying a `SyncRequest` for the
    /// reconciler (its `run_id` names the run).
    pub fn reconcile_request(tenant: &str) -> String {
        format!("reconcile.{tenant}")
    }
    /// `command.live.<tenant>` on [`super::names::CARDS`], carrying a real-time `CardCommand`.
    pub fn live_command(tenant: &str) -> String {
        format!("command.live.{tenant}")
    }
    /// `command.bulk.<tenant>` on [`super::names::CARDS`], carrying a reconcile `CardCommand`.
    pub fn bulk_command(tenant: &str) -> String {
        format!("command.bulk.{tenant}")
    }
    /// `event.<kind>.<tenant>` on [`super::names::CARD_EVENTS`], carrying a `CardEvent`.
    pub fn card_event(kind: &str, tenant: &str) -> String {
        format!("event.{kind}.{tenant}")
    }
    /// `digest.run.<tenant>` on [`super::names::CARD_EVENTS`], carrying the `RunDigest` of one
    /// finished run.
    pub fn run_digest(tenant: &str) -> String {
        format!("digest.run.{tenant}")
    }
    /// `digest.daily.<tenant>` on [`super::names::CARD_EVENTS`], carrying the `RunDigest` of a
    /// tenant's live runs of one UTC day.
    pub fn daily_digest(tenant: &str) -> String {
        format!("digest.daily.{tenant}")
    }
}

/// Default retry tiers when a topology is not given the service's `retry_delays`.
pub const DEFAULT_RETRY_DELAYS: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(600),
];

/// Redeliveries (consumer crashed or lost its connection before acking) after which the broker
/// itself dead-letters a message: the guard against a poison message that kills every consumer.
pub const DEFAULT_DELIVERY_LIMIT: u32 = 10;

/// A binding of a work queue to an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Full exchange name.
    pub exchange: String,
    /// Topic pattern, e.g. `change.*`.
    pub pattern: String,
}

/// A durable quorum queue that a service consumes, with its bindings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkQueue {
    /// Full queue name.
    pub name: String,
    /// Where its messages come from.
    pub bindings: Vec<Binding>,
    /// Its length limit, if any, and what happens past it.
    pub limit: Option<QueueLimit>,
}

/// A work queue's length limit (`x-max-length`) and its overflow behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueLimit {
    /// Past `n` messages, publishes are refused (nacked): the publisher keeps the message and
    /// retries, nothing is lost. For queues a service consumes.
    RejectPublish(u32),
    /// Past `n` messages, the oldest are dropped. For sinks nothing consumes.
    DropHead(u32),
}

impl WorkQueue {
    /// `{queue}.dlq`: where messages that can never be processed end up, with their error.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dlq", self.name)
    }

    /// `{queue}.retry.{ms}ms`: holds a message for `delay`, then dead-letters it back to the queue.
    pub fn retry_queue(&self, delay: Duration) -> String {
        format!("{}.retry.{}ms", self.name, delay.as_millis())
    }
}

/// The declarative broker layout. Build it once at start-up; [`declare`] makes it so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
    exchanges: Vec<String>,
    queues: Vec<WorkQueue>,
    retired: Vec<String>,
    retry_delays: Vec<Duration>,
    delivery_limit: u32,
    queue_type: QueueType,
}

/// How queues are stored by the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// Replicated Raft queues: what production uses (survive a node loss, poison-message limit).
    #[default]
    Quorum,
    /// Single-node classic queues: for local runs and test suites that declare thousands of
    /// short-lived queues, which is heavy work for a single quorum-queue node.
    Classic,
}

impl Topology {
    /// An empty topology (only the dead-letter exchange) whose names all start with `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            exchanges: Vec::new(),
            queues: Vec::new(),
            retired: Vec::new(),
            retry_delays: DEFAULT_RETRY_DELAYS.to_vec(),
            delivery_limit: DEFAULT_DELIVERY_LIMIT,
            queue_type: QueueType::Quorum,
        }
    }

    /// The standard cardsync layout (see the crate's README) with every name prefixed.
    pub fn cardsync(prefix: &str) -> Self {
        use names::*;
        Self::new(prefix)
            .with_exchange(GRAPH)
            .with_exchange(SYNC)
            .with_exchange(CARDS)
            .with_exchange(CARD_EVENTS)
            .with_queue(DELTA_WORKER_CHANGES, &[(GRAPH, "change.*")])
            .with_queue(DELTA_WORKER_REQUESTS, &[(SYNC, "request.*")])
            .with_queue(RECONCILER_REQUESTS, &[(SYNC, "reconcile.*")])
            .with_queue(SUBSCRIPTION_MANAGER_LIFECYCLE, &[(GRAPH, "lifecycle.*")])
            .with_queue_limit(
                SUBSCRIPTION_MANAGER_LIFECYCLE,
                QueueLimit::RejectPublish(LIFECYCLE_MAX_LENGTH),
            )
            .with_queue(CARD_WRITER_LIVE, &[(CARDS, "command.live.*")])
            .with_queue(CARD_WRITER_BULK, &[(CARDS, "command.bulk.*")])
            .with_queue(
                CARD_EVENTS_AUDIT,
                &[(CARD_EVENTS, "event.#"), (CARD_EVENTS, "digest.#")],
            )
            .with_queue_limit(CARD_EVENTS_AUDIT, QueueLimit::DropHead(AUDIT_MAX_LENGTH))
            .with_retired_queues(&RETIRED_QUEUES)
    }

    /// Adds a durable topic exchange named `{prefix}{short_name}`.
    pub fn with_exchange(mut self, short_name: &str) -> Self {
        let name = self.name(short_name);
        if !self.exchanges.contains(&name) {
            self.exchanges.push(name);
        }
        self
    }

    /// Adds a work queue `{prefix}{short_name}` bound to `(exchange short name, pattern)` pairs.
    pub fn with_queue(mut self, short_name: &str, bindings: &[(&str, &str)]) -> Self {
        let queue = WorkQueue {
            name: self.name(short_name),
            limit: None,
            bindings: bindings
                .iter()
                .map(|(exchange, pattern)| Binding {
                    exchange: self.name(exchange),
                    pattern: (*pattern).to_owned(),
                })
                .collect(),
        };
        self.queues.retain(|q| q.name != queue.name);
        self.queues.push(queue);
        self
    }

    /// Bounds an added work queue (by short name).
    pub fn with_queue_limit(mut self, short_name: &str, limit: QueueLimit) -> Self {
        let name = self.name(short_name);
        if let Some(queue) = self.queues.iter_mut().find(|q| q.name == name) {
            queue.limit = Some(limit);
        }
        self
    }

    /// Queues (short names) that [`declare`] deletes, with their retry and dead-letter queues.
    pub fn with_retired_queues(mut self, short_names: &[&str]) -> Self {
        let names: Vec<String> = short_names.iter().map(|short| self.name(short)).collect();
        self.retired.extend(names);
        self
    }

    /// Replaces the retry tiers (one delayed retry queue per distinct delay).
    pub fn with_retry_delays(mut self, delays: &[Duration]) -> Self {
        self.retry_delays = delays.to_vec();
        self
    }

    /// Chooses how every queue of the topology is stored.
    pub fn with_queue_type(mut self, queue_type: QueueType) -> Self {
        self.queue_type = queue_type;
        self
    }

    /// Sets the broker-side redelivery limit of work queues (quorum queues only).
    pub fn with_delivery_limit(mut self, limit: u32) -> Self {
        self.delivery_limit = limit;
        self
    }

    /// `{prefix}{short_name}`.
    pub fn name(&self, short_name: &str) -> String {
        format!("{}{short_name}", self.prefix)
    }

    /// The prefix every name starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Full name of the dead-letter exchange.
    pub fn dead_letter_exchange(&self) -> String {
        self.name(names::DEAD_LETTER)
    }

    /// Full names of the topic exchanges.
    pub fn exchanges(&self) -> &[String] {
        &self.exchanges
    }

    /// The work queues.
    pub fn queues(&self) -> &[WorkQueue] {
        &self.queues
    }

    /// Retry delays in order: retry `n` waits `retry_delays[min(n, len) - 1]`.
    pub fn retry_delays(&self) -> &[Duration] {
        &self.retry_delays
    }

    /// The distinct retry delays, each of which has its own retry queue per work queue.
    pub fn retry_tiers(&self) -> Vec<Duration> {
        let mut tiers: Vec<Duration> = Vec::new();
        for delay in &self.retry_delays {
            if !tiers.contains(delay) {
                tiers.push(*delay);
            }
        }
        tiers
    }

    /// A work queue by its short name (`card-writer.live`) or full name.
    pub fn queue(&self, name: &str) -> Option<&WorkQueue> {
        let full = self.name(name);
        self.queues
            .iter()
            .find(|q| q.name == full || q.name == name)
    }
}

fn short(name: &str) -> Result<ShortString, BusError> {
    ShortString::try_new(name).map_err(|_| BusError::NameTooLong {
        name: name.to_owned(),
    })
}

fn table(entries: Vec<(&str, AMQPValue)>) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in entries {
        table.insert(key.into(), value);
    }
    table
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.into())
}

fn millis(delay: Duration) -> AMQPValue {
    AMQPValue::LongLongInt(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX))
}

/// Arguments shared by every queue we declare: replicated, and dead-lettering that survives a
/// broker crash mid-way (at-least-once needs `reject-publish` overflow; we set no length limit).
fn queue_arguments(kind: QueueType) -> Vec<(&'static str, AMQPValue)> {
    match kind {
        QueueType::Quorum => vec![("x-queue-type", long_string("quorum"))],
        QueueType::Classic => vec![("x-queue-type", long_string("classic"))],
    }
}

fn dead_lettering(
    kind: QueueType,
    exchange: &str,
    routing_key: &str,
) -> Vec<(&'static str, AMQPValue)> {
    let mut arguments = vec![
        ("x-dead-letter-exchange", long_string(exchange)),
        ("x-dead-letter-routing-key", long_string(routing_key)),
    ];
    // At-least-once dead-lettering exists for quorum queues only.
    if kind == QueueType::Quorum {
        arguments.push(("x-dead-letter-strategy", long_string("at-least-once")));
        arguments.push(("x-overflow", long_string("reject-publish")));
    }
    arguments
}

async fn declare_queue(
    channel: &Channel,
    name: &str,
    arguments: FieldTable,
) -> Result<(), BusError> {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(short(name)?, options, arguments)
        .await
        .map(|_| ())
        .map_err(|source| BusError::Declare {
            what: "queue",
            name: name.to_owned(),
            source,
        })
}

async fn bind_queue(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    key: &str,
) -> Result<(), BusError> {
    channel
        .queue_bind(
            short(queue)?,
            short(exchange)?,
            short(key)?,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|source| BusError::Declare {
            what: "binding",
            name: format!("{exchange} -[{key}]-> {queue}"),
            source,
        })
}

async fn declare_exchange(
    channel: &Channel,
    name: &str,
    kind: ExchangeKind,
) -> Result<(), BusError> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(short(name)?, kind, options, FieldTable::default())
        .await
        .map_err(|source| BusError::Declare {
            what: "exchange",
            name: name.to_owned(),
            source,
        })
}

/// Declares every exchange, queue and binding of `topology`. Idempotent: declaring an existing
/// identical topology changes nothing. A queue that exists with different arguments makes the
/// broker close the channel and this returns [`BusError::Declare`].
pub async fn declare(channel: &Channel, topology: &Topology) -> Result<(), BusError> {
    let dlx = topology.dead_letter_exchange();
    declare_exchange(channel, &dlx, ExchangeKind::Direct).await?;
    for exchange in &topology.exchanges {
        declare_exchange(channel, exchange, ExchangeKind::Topic).await?;
    }
    let tiers = topology.retry_tiers();
    for queue in &topology.queues {
        let dlq = queue.dead_letter_queue();
        let kind = topology.queue_type;
        declare_queue(channel, &dlq, table(queue_arguments(kind))).await?;
        bind_queue(channel, &dlq, &dlx, &queue.name).await?;

        for delay in &tiers {
            let mut arguments = queue_arguments(kind);
            arguments.push(("x-message-ttl", millis(*delay)));
            // Expired messages go back to the work queue through the default exchange.
            arguments.extend(dead_lettering(kind, "", &queue.name));
            declare_queue(channel, &queue.retry_queue(*delay), table(arguments)).await?;
        }

        let mut arguments = queue_arguments(kind);
        match queue.limit {
            // A sink is never consumed, so nothing is dead-lettered from it; the quorum queues'
            // at-least-once dead-lettering would require reject-publish overflow.
            Some(QueueLimit::DropHead(max)) => {
                arguments.push(("x-max-length", AMQPValue::LongLongInt(i64::from(max))));
                arguments.push(("x-overflow", long_string("drop-head")));
            }
            limit => {
                arguments.extend(dead_lettering(kind, &dlx, &queue.name));
                if let Some(QueueLimit::RejectPublish(max)) = limit {
                    arguments.push(("x-max-length", AMQPValue::LongLongInt(i64::from(max))));
                    if kind == QueueType::Classic {
                        arguments.push(("x-overflow", long_string("reject-publish")));
                    }
                }
                if kind == QueueType::Quorum {
                    arguments.push((
                        "x-delivery-limit",
                        AMQPValue::LongLongInt(i64::from(topology.delivery_limit)),
                    ));
                }
            }
        }
        declare_queue(channel, &queue.name, table(arguments)).await?;
        for binding in &queue.bindings {
            bind_queue(channel, &queue.name, &binding.exchange, &binding.pattern).await?;
        }
    }
    for retired in &topology.retired {
        let queue = WorkQueue {
            name: retired.clone(),
            bindings: Vec::new(),
            limit: None,
        };
        delete_queues(channel, &queue, &tiers).await?;
    }
    Ok(())
}

/// Deletes a work queue with its dead-letter and retry queues; missing ones are skipped.
async fn delete_queues(
    channel: &Channel,
    queue: &WorkQueue,
    tiers: &[Duration],
) -> Result<(), BusError> {
    let mut names = vec![queue.name.clone(), queue.dead_letter_queue()];
    names.extend(tiers.iter().map(|delay| queue.retry_queue(*delay)));
    for name in names {
        channel
            .queue_delete(short(&name)?, QueueDeleteOptions::default())
            .await
            .map_err(|source| BusError::Declare {
                what: "queue deletion",
                name,
                source,
            })?;
    }
    Ok(())
}

/// Deletes every exchange and queue of `topology` (messages included). For tests and teardown;
/// missing ones are skipped.
pub async fn delete(channel: &Channel, topology: &Topology) -> Result<(), BusError> {
    let tiers = topology.retry_tiers();
    for queue in &topology.queues {
        delete_queues(channel, queue, &tiers).await?;
    }
    let mut exchanges = topology.exchanges.clone();
    exchanges.push(topology.dead_letter_exchange());
    for name in exchanges {
        channel
            .exchange_delete(short(&name)?, ExchangeDeleteOptions::default())
            .await
            .map_err(|source| BusError::Declare {
                what: "exchange deletion",
                name,
                source,
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_topology_prefixes_every_name() {
        let topology = Topology::cardsync("t1-");
        assert_eq!(topology.exchanges().len(), 4);
        assert!(topology.exchanges().iter().all(|e| e.starts_with("t1-")));
        assert_eq!(topology.dead_letter_exchange(), "t1-dlx");
        let changes = topology.queue(names::DELTA_WORKER_CHANGES).unwrap();
        assert_eq!(changes.name, "t1-delta-worker.changes");
        assert_eq!(changes.bindings.len(), 1);
        assert_eq!(changes.bindings[0].exchange, "t1-graph");
        let requests = topology.queue(names::DELTA_WORKER_REQUESTS).unwrap();
        assert_eq!(requests.bindings[0].exchange, "t1-sync");
        assert_eq!(changes.dead_letter_queue(), "t1-delta-worker.changes.dlq");
        assert_eq!(
            changes.retry_queue(Duration::from_millis(200)),
            "t1-delta-worker.changes.retry.200ms"
        );
        assert!(topology.queue("t1-card-writer.live").is_some());
        assert!(topology.queue("nope").is_none());
    }

    #[test]
    fn repeated_delays_share_one_retry_queue() {
        let d = Duration::from_secs;
        let topology = Topology::new("p").with_retry_delays(&[d(1), d(5), d(5), d(1)]);
        assert_eq!(topology.retry_tiers(), vec![d(1), d(5)]);
        assert_eq!(topology.retry_delays().len(), 4);
    }
}
