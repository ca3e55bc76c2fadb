//! `spawn_app()` and the other shared pieces of the webhook's integration tests.

use cardsync_config::Sources;
use cardsync_proto::BusMessage;
use cardsync_store::subscriptions::{self, ClientStateHash, Subscription};
pub use cardsync_testkit::notifications::user_change;
use cardsync_testkit::{amqp_url, database_url, test_pool, unique_prefix};
use lapin::options::BasicGetOptions;
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use webhook::{Application, Settings};

pub const CLIENT_STATE: &str = "s3cret-client-state-for-tests";

/// A running webhook plus what a test needs to observe its effects.
pub struct TestApp {
    pub address: String,
    pub prefix: String,
    pub pool: PgPool,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
    pub server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    amqp: Option<lapin::Connection>,
}

/// The test database server's `host:port` (for a test that puts a proxy in front of it).
pub fn database_server() -> String {
    let options: sqlx::postgres::PgConnectOptions = database_url()
        .parse()
        .expect("the test database URL is a PostgreSQL URL");
    format!("{}:{}", options.get_host(), options.get_port())
}

/// Starts the webhook on port 0 with a unique topology prefix.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Starts the webhook with extra `CARDSYNC__…` overrides and waits until it is ready.
pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    let app = spawn_app_unready(overrides).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready = app
            .client
            .get(format!("{}/health/ready", app.address))
            .send()
            .await;
        if ready.is_ok_and(|r| r.status() == 200) {
            return app;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the webhook did not become ready: run `make services`"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts the webhook without waiting for its broker and database.
pub async fn spawn_app_unready(overrides: &[(&str, &str)]) -> TestApp {
    let pool = test_pool().await;
    let prefix = unique_prefix("t");
    let mut env: Vec<(String, String)> = vec![
        ("CARDSYNC__HTTP__LISTEN".into(), "127.0.0.1:0".into()),
        ("CARDSYNC__TOPOLOGY__PREFIX".into(), prefix.clone()),
        ("CARDSYNC__POSTGRES__URL".into(), database_url()),
        ("CARDSYNC__BUS__URL".into(), amqp_url()),
        ("CARDSYNC__HTTP__SHUTDOWN_TIMEOUT".into(), "5s".into()),
        // Tests run in parallel, each declaring a whole topology of quorum queues: on 2 cores
        // the first connection can take longer than production's 1 s.
        ("CARDSYNC__BUS__CONNECT_TIMEOUT".into(), "20s".into()),
        // Thousands of short-lived test queues are heavy work for a single quorum-queue node;
        // the bus crate's own tests cover quorum queues.
        ("CARDSYNC__BUS__QUEUE_TYPE".into(), "classic".into()),
    ];
    env.extend(
        overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let settings = Settings::load(&Sources {
        file: None,
        env: Some(env),
    })
    .expect("test settings are valid");
    let application = Application::build(&settings)
        .await
        .expect("the webhook builds");
    let address = format!("http://127.0.0.1:{}", application.port());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(application.run_until_stopped(shutdown.clone()));
    TestApp {
        address,
        prefix,
        pool,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .expect("client"),
        shutdown,
        server: Some(server),
        amqp: None,
    }
}

impl TestApp {
    /// Registers a subscription for `tenant` with the test clientState.
    pub async fn register(&self, tenant: Uuid) -> Uuid {
        let id = Uuid::new_v4();
        let subscription = Subscription {
            id,
            tenant_id: tenant,
            resource: "/users".into(),
            client_state: ClientStateHash::of(CLIENT_STATE),
            expires_at: time::OffsetDateTime::now_utc() + time::Duration::days(2),
        };
        subscriptions::register(&self.pool, &subscription)
            .await
            .expect("registered");
        id
    }

    /// POSTs `body` as JSON to `path`.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.address))
            .header("content-type", "application/json; charset=utf-8")
            .body(serde_json::to_vec(body).expect("json"))
            .send()
            .await
            .expect("request sent")
    }

    pub fn queue(&self, short: &str) -> String {
        format!("{}{short}", self.prefix)
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

    /// Takes every message currently in `queue` (waiting briefly for late arrivals to settle).
    pub async fn drain(&mut self, short: &str) -> Vec<lapin::message::Delivery> {
        let queue = self.queue(short);
        let channel = self.channel().await;
        let mut messages = Vec::new();
        loop {
            match channel
                .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await
            {
                Ok(Some(message)) => messages.push(message.delivery),
                Ok(None) => break,
                // The queue does not exist: nothing was ever published to this topology.
                Err(_) => break,
            }
        }
        messages
    }

    /// Reads one metric sample from `/metrics`, e.g. `cardsync_webhook_notifications_rejected_total{reason="malformed"}`.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.address))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        text.lines()
            .find_map(|line| {
                line.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    /// Stops the server and deletes the queues the test created.
    pub async fn teardown(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        }
        let channel = self.channel().await;
        let _ =
            cardsync_bus::delete(&channel, &cardsync_bus::Topology::cardsync(&self.prefix)).await;
    }
}

/// Decodes a delivery as `M`, checking the AMQP `type` property first.
pub fn decode<M: BusMessage>(delivery: &lapin::message::Delivery) -> M {
    let kind = delivery.properties.kind().as_ref().map(|k| k.to_string());
    assert_eq!(kind.as_deref(), Some(M::TYPE), "message type property");
    M::decode(delivery.data.as_slice()).expect("decodes")
}

/// A string header of a delivery.
pub fn header(delivery: &lapin::message::Delivery, name: &str) -> Option<String> {
    cardsync_bus::header_str(&delivery.properties, name).map(str::to_owned)
}
