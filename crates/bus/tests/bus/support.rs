//! Shared fixtures: a real RabbitMQ, unique names per test, a cuttable TCP proxy, scripted handlers.

use cardsync_bus::lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use cardsync_bus::lapin::types::FieldTable;
use cardsync_bus::lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use cardsync_bus::{
    BusSettings, Delivery, Handler, HandlerError, Outgoing, Publisher, Topology, routing,
};
use cardsync_proto::{Cause, Envelope, GraphChange};
use secrecy::SecretString;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub const BROKER: &str = "127.0.0.1:5672";

pub fn url_for(addr: &str) -> String {
    format!("amqp://guest:guest@{addr}/%2f")
}

/// Settings with short delays so retries are observable within a test.
pub fn settings_for(addr: &str) -> BusSettings {
    let mut settings = BusSettings::new(SecretString::from(url_for(addr)));
    settings.connect_timeout = Duration::from_secs(2);
    settings.confirm_timeout = Duration::from_secs(3);
    settings.retry_delays = vec![Duration::from_millis(200)];
    settings.max_attempts = 3;
    settings.prefetch = 8;
    settings.concurrency = 4;
    settings.reconnect_max_backoff = Duration::from_millis(500);
    settings.drain_timeout = Duration::from_secs(5);
    settings.publish_channels = 4;
    settings
}

pub fn settings() -> BusSettings {
    settings_for(BROKER)
}

/// A direct connection for arranging and inspecting; fails the test (never skips) without a broker.
pub async fn admin() -> (Connection, Channel) {
    let connection = Connection::connect(&url_for(BROKER), ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| {
            panic!("RabbitMQ is not reachable on {BROKER} ({e}); run `make services` first")
        });
    let channel = connection.create_channel().await.unwrap();
    (connection, channel)
}

/// A unique prefix so parallel tests never share a queue.
pub fn prefix() -> String {
    format!("test-bus-{:08x}-", rand::random::<u32>())
}

/// The small topology most tests use: exchange `graph`, work queue `work` bound to `change.*`.
pub fn small_topology(prefix: &str) -> Topology {
    Topology::new(prefix)
        .with_exchange("graph")
        .with_queue("work", &[("graph", "change.*")])
        .with_retry_delays(&settings().retry_delays)
}

/// A test's broker objects, deleted by [`Fixture::cleanup`].
pub struct Fixture {
    pub topology: Topology,
    pub connection: Connection,
    pub channel: Channel,
}

impl Fixture {
    pub async fn new() -> Self {
        Self::with_topology(small_topology(&prefix())).await
    }

    pub async fn with_topology(topology: Topology) -> Self {
        let (connection, channel) = admin().await;
        cardsync_bus::declare(&channel, &topology).await.unwrap();
        Self {
            topology,
            connection,
            channel,
        }
    }

    pub fn graph(&self) -> String {
        self.topology.name("graph")
    }

    pub fn work(&self) -> String {
        self.topology.name("work")
    }

    pub fn dlq(&self) -> String {
        self.topology.queue("work").unwrap().dead_letter_queue()
    }

    /// Ready messages in `queue` (unacknowledged ones are not counted).
    pub async fn ready(&self, queue: &str) -> u32 {
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        self.channel
            .queue_declare(queue.into(), options, FieldTable::default())
            .await
            .unwrap()
            .message_count()
    }

    /// Waits until `queue` holds `count` ready messages, or fails after `within`.
    pub async fn wait_ready(&self, queue: &str, count: u32, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let ready = self.ready(queue).await;
            if ready == count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{queue} holds {ready} messages, expected {count}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Takes one message off `queue` (auto-ack).
    pub async fn take(&self, queue: &str) -> Option<cardsync_bus::lapin::message::Delivery> {
        self.channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .map(|m| m.delivery)
    }

    /// Publishes raw bytes straight to the work queue (through the default exchange).
    pub async fn put_raw(&self, payload: &[u8], properties: BasicProperties) {
        self.channel
            .basic_publish(
                "".into(),
                self.work().as_str().into(),
                BasicPublishOptions::default(),
                payload,
                properties,
            )
            .await
            .unwrap();
    }

    pub async fn cleanup(self) {
        cardsync_bus::delete(&self.channel, &self.topology)
            .await
            .unwrap();
        let _ = self.connection.close(200, "done".into()).await;
    }
}

pub fn change(tenant: &str) -> GraphChange {
    GraphChange {
        envelope: Some(Envelope::new(tenant, Cause::Notification)),
        subscription_id: "sub-1".into(),
        resource: "Users/u1".into(),
        resource_id: "u1".into(),
        ..Default::default()
    }
}

pub fn outgoing(fixture: &Fixture, tenant: &str) -> Outgoing {
    Outgoing::new(&fixture.graph(), &routing::change(tenant), &change(tenant))
}

pub async fn publish_one(fixture: &Fixture, tenant: &str) {
    let publisher = Publisher::connect(&settings(), fixture.topology.clone())
        .await
        .unwrap();
    publisher
        .publish_all(vec![outgoing(fixture, tenant)])
        .await
        .unwrap();
    publisher.close().await;
}

/// What a handler saw of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub attempt: u32,
    pub redelivered: bool,
    pub tenant: Option<String>,
}

/// A handler whose answer is computed from the attempt number; records every call.
pub struct Scripted<F> {
    pub answer: F,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl<F> Scripted<F>
where
    F: Fn(u32) -> Result<(), HandlerError> + Send + Sync + 'static,
{
    pub fn new(answer: F) -> Self {
        Self {
            answer,
            seen: Arc::default(),
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl<F> Handler for Scripted<F>
where
    F: Fn(u32) -> Result<(), HandlerError> + Send + Sync + 'static,
{
    type Message = GraphChange;

    fn handle(
        &self,
        delivery: Delivery<GraphChange>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        self.seen.lock().unwrap().push(Seen {
            attempt: delivery.attempt,
            redelivered: delivery.redelivered,
            tenant: delivery.tenant_id.clone(),
        });
        std::future::ready((self.answer)(delivery.attempt))
    }
}

/// Polls `condition` until it holds, or fails with `what` after `within`.
pub async fn eventually(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP proxy in front of the broker whose connections the test can cut.
pub struct Proxy {
    pub addr: SocketAddr,
    live: Arc<Mutex<CancellationToken>>,
    refusing: Arc<std::sync::atomic::AtomicBool>,
    frozen: CancellationToken,
    stop: CancellationToken,
}

impl Proxy {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let live = Arc::new(Mutex::new(CancellationToken::new()));
        let refusing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = CancellationToken::new();
        let frozen = CancellationToken::new();
        let (live2, refusing2, stop2) = (live.clone(), refusing.clone(), stop.clone());
        let frozen2 = frozen.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop2.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut inbound, _)) = accepted else {
                    continue;
                };
                if refusing2.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection closed at once
                }
                let cut = live2.lock().unwrap().clone();
                let frozen = frozen2.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(BROKER).await else {
                        return;
                    };
                    tokio::select! {
                        _ = cut.cancelled() => return,
                        _ = frozen.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
                    }
                    // Frozen: both sockets stay open and nothing passes, until cut.
                    cut.cancelled().await;
                    drop((inbound, outbound));
                });
            }
        });
        Self {
            addr,
            live,
            refusing,
            frozen,
            stop,
        }
    }

    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Drops every proxied connection (both sides see it closed); new ones are still accepted.
    pub fn cut(&self) {
        let mut live = self.live.lock().unwrap();
        live.cancel();
        *live = CancellationToken::new();
    }

    /// Every proxied connection stops passing bytes but stays open: a broker that stopped
    /// answering.
    pub fn freeze(&self) {
        self.frozen.cancel();
    }

    /// From now on, accepted connections are closed at once.
    pub fn refuse(&self) {
        self.refusing
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut();
    }
}
