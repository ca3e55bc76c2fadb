//! `spawn_app()` and the other shared pieces of the card-writer's integration tests.

use card_writer::relay::Relay;
use card_writer::{Application, CommandHandler, CommandQueue, Settings};
use cardsync_bus::{Consumer, Outgoing, Processed, Publisher, Topology, names, routing};
use cardsync_config::Sources;
use cardsync_proto::{
    BusMessage, CardCommand, CardEvent, Cause, Envelope, FieldValue, Message as _,
    card_command::Action,
};
use cardsync_rules::FieldRules;
use cardsync_store::cards::{self, Card};
use cardsync_store::tenants::{self, TenantConfig};
use cardsync_testkit::{amqp_url, database_url, redis_url, test_pool, unique_prefix};
use lapin::options::BasicGetOptions;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A running card-writer (HTTP only; consumers and relay are driven by the test).
pub struct TestApp {
    pub address: String,
    pub redis_prefix: String,
    pub pool: PgPool,
    pub client: reqwest::Client,
    pub topology: Topology,
    pub publisher: Publisher,
    pub live: Arc<CommandHandler>,
    pub live_consumer: Consumer,
    pub relay: Relay,
    pub tenant: Uuid,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    amqp: Option<lapin::Connection>,
}

/// Starts the card-writer with default rules for a fresh tenant.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(FieldRules::default(), false).await
}

/// Starts the card-writer for a fresh tenant with `rules` (and invites when `invites`).
pub async fn spawn_app_with(rules: FieldRules, invites: bool) -> TestApp {
    let pool = test_pool().await;
    let prefix = unique_prefix("t");
    let redis_prefix = unique_prefix("test-cw-").trim_end_matches('.').to_owned();
    let env: Vec<(String, String)> = vec![
        ("CARDSYNC__HTTP__LISTEN".into(), "127.0.0.1:0".into()),
        ("CARDSYNC__TOPOLOGY__PREFIX".into(), prefix.clone()),
        ("CARDSYNC__POSTGRES__URL".into(), database_url()),
        ("CARDSYNC__POSTGRES__MAX_CONNECTIONS".into(), "4".into()),
        (
            "CARDSYNC__CARD_WRITER__BULK_MAX_CONNECTIONS".into(),
            "2".into(),
        ),
        ("CARDSYNC__BUS__URL".into(), amqp_url()),
        ("CARDSYNC__REDIS__URL".into(), redis_url()),
        ("CARDSYNC__REDIS__KEY_PREFIX".into(), redis_prefix.clone()),
        ("CARDSYNC__CARD_WRITER__CONSUME".into(), "false".into()),
        ("CARDSYNC__RELAY__ENABLED".into(), "false".into()),
        ("CARDSYNC__HTTP__SHUTDOWN_TIMEOUT".into(), "5s".into()),
        // Tests run in parallel, each declaring a whole topology of quorum queues: on 2 cores
        // the first connection can take longer than production's 1 s.
        ("CARDSYNC__BUS__CONNECT_TIMEOUT".into(), "20s".into()),
        // Short-lived test queues are classic: quorum-queue churn is heavy for one node.
        ("CARDSYNC__BUS__QUEUE_TYPE".into(), "classic".into()),
        ("CARDSYNC__BUS__CONFIRM_TIMEOUT".into(), "20s".into()),
    ];
    let settings = Settings::load(&Sources {
        file: None,
        env: Some(env),
    })
    .expect("test settings are valid");
    let application = Application::build(&settings)
        .await
        .expect("the card-writer builds");
    let address = format!("http://127.0.0.1:{}", application.port());
    let live = application.handler(CommandQueue::Live);
    let live_consumer = application.consumer(CommandQueue::Live);
    let relay = application.relay();
    let topology = Topology::cardsync(&prefix).with_retry_delays(&settings.bus.retry_delays);
    let publisher = Publisher::connect(&settings.bus, topology.clone())
        .await
        .expect("RabbitMQ must run on 127.0.0.1:5672: run `make services`");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(application.run_until_stopped(shutdown.clone()));

    let tenant = Uuid::new_v4();
    tenants::put(
        &pool,
        &TenantConfig {
            id: tenant,
            name: format!("test tenant {tenant}"),
            rules,
            invites_enabled: invites,
            admin_roles_enabled: false,
        },
    )
    .await
    .expect("tenant stored");

    TestApp {
        address,
        redis_prefix,
        pool,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .expect("client"),
        topology,
        publisher,
        live,
        live_consumer,
        relay,
        tenant,
        shutdown,
        server: Some(server),
        amqp: None,
    }
}

/// A card command for `user` at `version` with `fields`.
pub fn upsert(
    tenant: Uuid,
    user: &str,
    version: u64,
    fields: &[(&str, Option<&str>)],
) -> CardCommand {
    command(tenant, Action::Upsert, user, version, fields)
}

/// A card command of any action.
pub fn command(
    tenant: Uuid,
    action: Action,
    user: &str,
    version: u64,
    fields: &[(&str, Option<&str>)],
) -> CardCommand {
    CardCommand {
        envelope: Some(Envelope::new(tenant.to_string(), Cause::Notification)),
        action: action as i32,
        user_id: user.into(),
        uid: user.into(),
        version,
        fields: fields
            .iter()
            .map(|(name, value)| FieldValue {
                name: (*name).into(),
                value: value.map(str::to_owned),
            })
            .collect(),
        observed_at: Some(cardsync_proto::timestamp(time::OffsetDateTime::now_utc())),
        notified_at: None,
        ..Default::default()
    }
}

impl TestApp {
    /// Publishes a command on the live routing key of its tenant (confirmed).
    pub async fn send(&self, command: &CardCommand) {
        let tenant = &command.envelope.as_ref().expect("envelope").tenant_id;
        self.publisher
            .publish_all(vec![Outgoing::new(
                &self.topology.name(names::CARDS),
                &routing::live_command(tenant),
                command,
            )])
            .await
            .expect("command published");
    }

    /// Takes one command from the live queue and handles it as the consumer would.
    pub async fn step(&self) -> Processed {
        self.live_consumer
            .process_next(self.live.as_ref(), Duration::from_secs(10))
            .await
            .expect("the live queue is reachable")
    }

    /// Publishes and processes one command; asserts it was acknowledged.
    pub async fn apply(&self, command: &CardCommand) {
        self.send(command).await;
        assert_eq!(self.step().await, Processed::Acked);
    }

    /// Every card of the test tenant, tombstones included.
    pub async fn cards(&self) -> Vec<Card> {
        cards::list(&self.pool, self.tenant).await.expect("cards")
    }

    /// The card of a directory user.
    pub async fn card_of(&self, user: &str) -> Card {
        self.cards()
            .await
            .into_iter()
            .find(|card| card.user_id.as_deref() == Some(user))
            .unwrap_or_else(|| panic!("no card for {user}"))
    }

    /// A local edit of one field, as the admin API makes it (`cardsync_cards::edit`).
    pub async fn edit(
        &self,
        card: Uuid,
        field: &str,
        value: Option<&str>,
    ) -> Result<Card, cardsync_cards::edit::EditError> {
        let exchange = self.topology.name(names::CARD_EVENTS);
        cardsync_cards::edit::edit_field(&self.pool, &exchange, self.tenant, card, field, value)
            .await
    }

    /// A card made locally (no directory user yet), as the admin API makes it.
    pub async fn create_local(&self, fields: &[(&str, Option<&str>)]) -> Card {
        let exchange = self.topology.name(names::CARD_EVENTS);
        let values = fields
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.map(str::to_owned)))
            .collect();
        cardsync_cards::edit::create_local_card(&self.pool, &exchange, self.tenant, &values)
            .await
            .expect("local card created")
    }

    /// The writer's `/metrics` scrape.
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.address))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// The value of the sample `name{…}` whose labels include every one of `labels`.
    pub async fn sample(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let text = self.metrics_text().await;
        let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        text.lines()
            .filter(|line| line.starts_with(&format!("{name}{{")))
            .find(|line| wanted.iter().all(|label| line.contains(label.as_str())))
            .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
    }

    /// The sum of `cardsync_card_writer_commands_total` for this tenant and `outcome`.
    pub async fn counted(&self, outcome: &str) -> f64 {
        let text = self.metrics_text().await;
        let outcome = format!("outcome=\"{outcome}\"");
        let tenant = format!("tenant=\"{}\"", self.tenant);
        text.lines()
            .filter(|line| line.starts_with("cardsync_card_writer_commands_total{"))
            .filter(|line| line.contains(&outcome) && line.contains(&tenant))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    async fn channel(&mut self) -> lapin::Channel {
        if self.amqp.is_none() {
            let connection =
                lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
                    .await
                    .expect("RabbitMQ must run on 127.0.0.1:5672: run `make services`");
            self.amqp = Some(connection);
        }
        self.amqp
            .as_ref()
            .expect("connected")
            .create_channel()
            .await
            .expect("channel")
    }

    /// Publishes the whole outbox, then takes every card event from `card-events.audit`.
    pub async fn events(&mut self) -> Vec<(String, CardEvent)> {
        self.relay.drain().await.expect("outbox published");
        self.take_events().await
    }

    /// Takes every card event waiting in `card-events.audit` (publishing nothing).
    pub async fn take_events(&mut self) -> Vec<(String, CardEvent)> {
        let queue = self.topology.name(names::CARD_EVENTS_AUDIT);
        let channel = self.channel().await;
        let mut events = Vec::new();
        while let Some(message) = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            // Run digests share the sink: they are not card events.
            let kind = message
                .delivery
                .properties
                .kind()
                .as_ref()
                .map(|k| k.to_string());
            if kind.as_deref() == Some(cardsync_proto::RunDigest::TYPE) {
                continue;
            }
            events.push(decode_event(&message.delivery));
        }
        events
    }

    /// A consumer of `card-events.audit` (auto-acknowledged), for tests that wait for events
    /// the running relay publishes: see [`next_event`].
    pub async fn event_stream(&mut self) -> lapin::Consumer {
        let queue = self.topology.name(names::CARD_EVENTS_AUDIT);
        self.channel()
            .await
            .basic_consume(
                queue.as_str().into(),
                "test-events".into(),
                lapin::options::BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .expect("basic.consume")
    }

    /// A fresh channel for tests that need raw AMQP.
    pub async fn raw_channel(&mut self) -> lapin::Channel {
        self.channel().await
    }

    /// Deletes every Redis key this test wrote (the test's own "flush").
    pub async fn flush_redis(&self) -> usize {
        let client = redis::Client::open(redis_url()).expect("redis url");
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("Redis must run on 127.0.0.1:6379: run `make services`");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.redis_prefix))
            .query_async(&mut connection)
            .await
            .expect("keys");
        if !keys.is_empty() {
            let _: usize = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut connection)
                .await
                .expect("del");
        }
        keys.len()
    }

    /// Stops the server and deletes the queues the test created.
    pub async fn teardown(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        }
        self.live_consumer.close().await;
        self.publisher.close().await;
        let channel = self.channel().await;
        let _ = cardsync_bus::delete(&channel, &self.topology).await;
    }
}

/// The next card event of `stream`, waiting up to `within`; `None` if none came.
pub async fn next_event(
    stream: &mut lapin::Consumer,
    within: Duration,
) -> Option<(String, CardEvent)> {
    use futures_util::StreamExt as _;
    let delivery = tokio::time::timeout(within, stream.next())
        .await
        .ok()??
        .expect("event delivery");
    Some(decode_event(&delivery))
}

/// The message id and the decoded event of a card-event delivery (its type checked).
fn decode_event(delivery: &lapin::message::Delivery) -> (String, CardEvent) {
    let kind = delivery.properties.kind().as_ref().map(|k| k.to_string());
    assert_eq!(kind.as_deref(), Some(CardEvent::TYPE));
    let id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.to_string())
        .expect("message id");
    let event = CardEvent::decode(delivery.data.as_slice()).expect("decodes");
    (id, event)
}

/// The kinds of events, in order.
pub fn kinds(events: &[(String, CardEvent)]) -> Vec<&'static str> {
    events
        .iter()
        .map(|(_, event)| {
            cardsync_proto::card_event::Kind::try_from(event.kind)
                .unwrap_or(cardsync_proto::card_event::Kind::Unspecified)
                .as_str()
        })
        .collect()
}
