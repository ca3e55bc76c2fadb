//! A graph-sim tenant connected to cardsync, the real webhook receiving Graph's notifications,
//! and a subscription manager on an injected clock, driven pass by pass.

use cardsync_bus::lapin;
use cardsync_bus::lapin::options::BasicGetOptions;
use cardsync_config::Sources;
use cardsync_proto::BusMessage;
use cardsync_store::connections::{self, Connection, CredentialKind};
use cardsync_store::subscription_slots::{self as slots, Slot};
use graph_sim::control_client::{AppRegistration, CARDSYNC_PERMISSIONS, Control};
use graph_sim::{RunningSim, SimConfig};
use reqwest::Method;
use secrecy::SecretString;
use serde_json::{Value, json};
use std::time::Duration;
use subscription_manager::{Application, Clock, Settings};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub struct Env {
    pub sim: RunningSim,
    pub control: Control,
    pub tenant: Uuid,
    pub registration: AppRegistration,
    pub pool: sqlx::PgPool,
    pub prefix: String,
    pub clock: Clock,
    pub app: Application,
    pub webhook_url: String,
    database: cardsync_testkit::FreshDatabase,
    settings: Vec<(String, String)>,
    webhook_stop: CancellationToken,
    amqp: lapin::Connection,
}

pub async fn env() -> Env {
    env_with(&[]).await
}

/// An environment whose managers take these settings on top of the test defaults.
pub async fn env_with(overrides: &[(&str, &str)]) -> Env {
    cardsync_testkit::init();
    let sim = graph_sim::spawn(SimConfig {
        workers: 1,
        ..SimConfig::default()
    })
    .await
    .expect("graph-sim starts");
    let control = Control::new(sim.control_url());
    control
        .set_delivery(json!({"batchWindowMs": 5, "retryBaseMs": 200}))
        .await
        .expect("delivery profile");
    let tenant_text = control.create_tenant().await.expect("tenant");
    let tenant = Uuid::parse_str(&tenant_text).expect("tenant id");
    let registration = control
        .create_secret_app(&tenant_text, CARDSYNC_PERMISSIONS)
        .await
        .expect("app");
    // A database of its own: the manager serves every connected tenant of its database, so
    // tests running side by side must not see each other's tenants.
    let database = cardsync_testkit::FreshDatabase::create().await;
    let pool = database.pool().await;
    cardsync_store::migrate(&pool).await.expect("migrated");
    let prefix = cardsync_testkit::unique_prefix("sm");
    let (webhook_url, webhook_stop) = start_webhook(&prefix, &database.url).await;

    let settings: Vec<(String, String)> = [
        ("CARDSYNC__HTTP__LISTEN", "127.0.0.1:0".to_owned()),
        ("CARDSYNC__TOPOLOGY__PREFIX", prefix.clone()),
        ("CARDSYNC__POSTGRES__URL", database.url.clone()),
        ("CARDSYNC__SECRETS__DEVELOPMENT", "true".to_owned()),
        ("CARDSYNC__BUS__URL", cardsync_testkit::amqp_url()),
        ("CARDSYNC__BUS__CONNECT_TIMEOUT", "20s".to_owned()),
        ("CARDSYNC__BUS__QUEUE_TYPE", "classic".to_owned()),
        ("CARDSYNC__GRAPH__AUTHORITY_URL", sim.graph_url().to_owned()),
        ("CARDSYNC__GRAPH__GRAPH_URL", sim.graph_url().to_owned()),
        ("CARDSYNC__GRAPH__BACKOFF_BASE", "20ms".to_owned()),
        ("CARDSYNC__GRAPH__BACKOFF_CAP", "200ms".to_owned()),
        (
            "CARDSYNC__SUBSCRIPTIONS__PUBLIC_BASE_URL",
            webhook_url.clone(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .chain(
        overrides
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    )
    .collect();
    let loaded = load(&settings);
    let key = loaded.secrets.keyring().expect("key");
    connections::put(
        &pool,
        &key,
        &Connection {
            tenant_id: tenant,
            client_id: registration.client_id.clone(),
            kind: CredentialKind::Secret,
            credential: SecretString::from(registration.secret.clone().expect("secret")),
        },
    )
    .await
    .expect("connection stored");
    let clock = Clock::system();
    let app = Application::build_with_clock(loaded, clock.clone())
        .await
        .expect("the manager builds");
    let amqp = lapin::Connection::connect(
        &cardsync_testkit::amqp_url(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("RabbitMQ must run: run `make services`");
    Env {
        sim,
        control,
        tenant,
        registration,
        pool,
        prefix,
        clock,
        app,
        webhook_url,
        database,
        settings,
        webhook_stop,
        amqp,
    }
}

fn load(settings: &[(String, String)]) -> Settings {
    Settings::load(&Sources {
        file: None,
        env: Some(settings.to_vec()),
    })
    .expect("test settings are valid")
}

/// The real webhook, on port 0, sharing the test's topology prefix and database.
async fn start_webhook(prefix: &str, database_url: &str) -> (String, CancellationToken) {
    let env: Vec<(String, String)> = [
        ("CARDSYNC__HTTP__LISTEN", "127.0.0.1:0".to_owned()),
        ("CARDSYNC__TOPOLOGY__PREFIX", prefix.to_owned()),
        ("CARDSYNC__POSTGRES__URL", database_url.to_owned()),
        ("CARDSYNC__SECRETS__DEVELOPMENT", "true".to_owned()),
        ("CARDSYNC__BUS__URL", cardsync_testkit::amqp_url()),
        ("CARDSYNC__BUS__CONNECT_TIMEOUT", "20s".to_owned()),
        ("CARDSYNC__BUS__QUEUE_TYPE", "classic".to_owned()),
        // Last notification times are written once per refresh.
        ("CARDSYNC__REGISTRY__REFRESH_INTERVAL", "200ms".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let settings = webhook::Settings::load(&Sources {
        file: None,
        env: Some(env),
    })
    .expect("webhook settings");
    let application = webhook::Application::build(&settings)
        .await
        .expect("the webhook builds");
    let url = format!("http://127.0.0.1:{}", application.port());
    let stop = CancellationToken::new();
    tokio::spawn(application.run_until_stopped(stop.clone()));
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !client
        .get(format!("{url}/health/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the webhook did not become ready: run `make services`"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (url, stop)
}

impl Env {
    pub fn tenant_text(&self) -> String {
        self.tenant.to_string()
    }

    /// Another manager replica of this environment, sharing the clock.
    pub async fn replica(&self) -> Application {
        Application::build_with_clock(load(&self.settings), self.clock.clone())
            .await
            .expect("the replica builds")
    }

    /// Moves graph-sim's clock and the manager's forward together.
    pub async fn advance(&self, by: Duration) {
        self.control
            .advance_clock(by.as_secs())
            .await
            .expect("graph-sim clock");
        self.clock.advance(by);
    }

    /// One reconciliation pass.
    pub async fn pass(&self) -> subscription_manager::PassReport {
        self.app.manager().reconcile().await.expect("pass")
    }

    /// The tenant's slots.
    pub async fn slots(&self) -> Vec<Slot> {
        slots::for_tenant(&self.pool, self.tenant)
            .await
            .expect("slots")
    }

    /// The tenant's subscriptions as graph-sim holds them (with their clientState).
    pub async fn graph_subscriptions(&self) -> Vec<Value> {
        let listed = self
            .control
            .call(
                Method::GET,
                &format!("/tenants/{}/subscriptions", self.tenant),
                None,
            )
            .await
            .expect("subscriptions");
        listed["value"].as_array().cloned().unwrap_or_default()
    }

    /// graph-sim's request count for one endpoint of this tenant.
    pub async fn graph_requests(&self, endpoint: &str) -> u64 {
        let counters = self
            .control
            .counters(Some(&self.tenant_text()))
            .await
            .expect("counters");
        counters[self.tenant_text()][endpoint]["requests"]
            .as_u64()
            .unwrap_or(0)
    }

    /// An app-only token for calling graph-sim's Graph API directly.
    pub async fn token(&self) -> String {
        let response: Value = reqwest::Client::new()
            .post(self.sim.token_url(&self.tenant_text()))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.registration.client_id.as_str()),
                (
                    "client_secret",
                    self.registration.secret.as_deref().expect("secret"),
                ),
                ("scope", "https://graph.microsoft.com/.default"),
            ])
            .send()
            .await
            .expect("token")
            .json()
            .await
            .expect("token json");
        response["access_token"]
            .as_str()
            .expect("access token")
            .to_owned()
    }

    /// Creates a subscription in graph-sim directly (as another deployment or app would).
    pub async fn subscribe_directly(&self, resource: &str, notification_url: &str) -> Value {
        let expiry = time::OffsetDateTime::now_utc() + time::Duration::hours(20);
        let response = reqwest::Client::new()
            .post(format!("{}/v1.0/subscriptions", self.sim.graph_url()))
            .bearer_auth(self.token().await)
            .json(&json!({
                "changeType": "updated,deleted",
                "notificationUrl": notification_url,
                "resource": resource,
                "expirationDateTime": expiry
                    .format(&time::format_description::well_known::Rfc3339)
                    .expect("format"),
                "clientState": "not-from-cardsync",
            }))
            .send()
            .await
            .expect("subscribe");
        assert!(response.status().is_success(), "{}", response.status());
        response.json().await.expect("json")
    }

    /// Sends a lifecycle event from graph-sim to the subscription's lifecycle URL (the webhook).
    pub async fn lifecycle(&self, subscription: &str, event: &str) {
        self.control
            .call(
                Method::POST,
                &format!(
                    "/tenants/{}/subscriptions/{subscription}/lifecycle",
                    self.tenant
                ),
                Some(json!({"event": event})),
            )
            .await
            .expect("lifecycle event");
    }

    /// Changes a user's job title in graph-sim; returns the user id.
    pub async fn change_user(&self, user: &str, title: &str) {
        self.control
            .update_user(&self.tenant_text(), user, json!({"jobTitle": title}))
            .await
            .expect("user changed");
    }

    /// Creates a user in graph-sim; returns its id.
    pub async fn create_user(&self, name: &str) -> String {
        let created = self
            .control
            .create_user(
                &self.tenant_text(),
                json!({"displayName": name, "userPrincipalName": format!("{}@{}.example", name.to_lowercase(), self.tenant)}),
            )
            .await
            .expect("user created");
        created["id"].as_str().expect("id").to_owned()
    }

    /// Takes every message now in `queue` (short name), decoded as `M`.
    pub async fn drain<M: BusMessage + Default>(&self, queue: &str) -> Vec<M> {
        let channel = self.amqp.create_channel().await.expect("channel");
        let name = format!("{}{queue}", self.prefix);
        let mut out = Vec::new();
        while let Ok(Some(message)) = channel
            .basic_get(name.as_str().into(), BasicGetOptions { no_ack: true })
            .await
        {
            out.push(M::decode(message.delivery.data.as_slice()).expect("decodes"));
        }
        out
    }

    /// Waits until the webhook published a change of `user` (Graph notified it and the webhook
    /// verified it against the registry); other changes taken meanwhile are returned too.
    pub async fn wait_change_of(&self, user: &str) -> Vec<cardsync_proto::GraphChange> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            seen.extend(
                self.drain::<cardsync_proto::GraphChange>("delta-worker.changes")
                    .await,
            );
            if seen.iter().any(|c| c.resource_id == user) {
                return seen;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for a notification of {user}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the webhook and deletes the test's queues.
    pub async fn teardown(self) {
        self.webhook_stop.cancel();
        self.app.close().await;
        let channel = self.amqp.create_channel().await.expect("channel");
        let _ =
            cardsync_bus::delete(&channel, &cardsync_bus::Topology::cardsync(&self.prefix)).await;
        self.sim.shutdown().await;
        self.pool.close().await;
        self.database.drop_database().await;
    }
}
