//! A graph-sim tenant, a delta-worker wired to it, and readers for the commands it emits.

use cardsync_bus::lapin;
use cardsync_config::Sources;
use cardsync_proto::{BusMessage, CardCommand, Message as _};
use cardsync_rounds::{Mode, RoundReport, RoundRequest};
use cardsync_store::connections::{self, Connection, CredentialKind};
use delta_worker::{Application, Settings};
use graph_sim::control_client::{CARDSYNC_PERMISSIONS, Control};
use graph_sim::{RunningSim, SimConfig};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::collections::HashSet;
use uuid::Uuid;

pub struct Env {
    pub _sim: RunningSim,
    pub control: Control,
    pub tenant: Uuid,
    pub app: Application,
    pub prefix: String,
    pub pool: sqlx::PgPool,
    amqp: lapin::Connection,
    /// The settings every worker of this environment is built from.
    pub settings: Vec<(String, String)>,
}

pub async fn env() -> Env {
    env_with(&[]).await
}

/// An environment whose workers take these settings (`CARDSYNC__…` variables) on top of the
/// test defaults. The lease TTL is the shipped default unless a test sets it.
pub async fn env_with(overrides: &[(&str, &str)]) -> Env {
    cardsync_testkit::init();
    // Graph over HTTPS, trusting graph-sim's CA through configuration as a deployment would.
    let sim = graph_sim::spawn(SimConfig {
        workers: 1,
        tls: true,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let https = sim.https_url().expect("graph-sim serves HTTPS").to_owned();
    let ca_file = sim
        .ca_file()
        .expect("graph-sim wrote its CA")
        .display()
        .to_string();
    let control = Control::new(sim.control_url());
    let tenant_text = control.create_tenant().await.unwrap();
    let tenant = Uuid::parse_str(&tenant_text).unwrap();
    let registration = control
        .create_secret_app(&tenant_text, CARDSYNC_PERMISSIONS)
        .await
        .unwrap();

    let pool = cardsync_testkit::test_pool().await;
    let prefix = cardsync_testkit::unique_prefix("dw");
    let env: Vec<(String, String)> = [
        ("CARDSYNC__HTTP__LISTEN", "127.0.0.1:0".to_owned()),
        ("CARDSYNC__TOPOLOGY__PREFIX", prefix.clone()),
        ("CARDSYNC__POSTGRES__URL", cardsync_testkit::database_url()),
        ("CARDSYNC__SECRETS__DEVELOPMENT", "true".to_owned()),
        ("CARDSYNC__REDIS__URL", cardsync_testkit::redis_url()),
        ("CARDSYNC__REDIS__KEY_PREFIX", prefix.clone()),
        ("CARDSYNC__BUS__URL", cardsync_testkit::amqp_url()),
        ("CARDSYNC__BUS__CONNECT_TIMEOUT", "20s".to_owned()),
        // Short-lived test queues are classic: quorum-queue churn is heavy for one node.
        ("CARDSYNC__BUS__QUEUE_TYPE", "classic".to_owned()),
        ("CARDSYNC__GRAPH__AUTHORITY_URL", https.clone()),
        ("CARDSYNC__GRAPH__GRAPH_URL", https.clone()),
        ("CARDSYNC__GRAPH__EXTRA_CA_FILE", ca_file),
        ("CARDSYNC__GRAPH__BACKOFF_BASE", "20ms".to_owned()),
        ("CARDSYNC__GRAPH__BACKOFF_CAP", "500ms".to_owned()),
        ("CARDSYNC__WORKER__LEASE_WAIT", "20s".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .chain(
        overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    )
    .collect();
    let settings = load(&env, &[]);
    let key = settings.secrets.keyring().unwrap();
    connections::put(
        &pool,
        &key,
        &Connection {
            tenant_id: tenant,
            client_id: registration.client_id,
            kind: CredentialKind::Secret,
            credential: SecretString::from(registration.secret.unwrap()),
        },
    )
    .await
    .unwrap();
    let app = Application::build(settings).await.unwrap();
    let settings = env;
    let amqp = lapin::Connection::connect(
        &cardsync_testkit::amqp_url(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("RabbitMQ must run (CARDSYNC_TEST_AMQP_URL or 127.0.0.1:5672): run `make services`");
    Env {
        _sim: sim,
        control,
        tenant,
        app,
        prefix,
        pool,
        amqp,
        settings,
    }
}

pub fn load(env: &[(String, String)], overrides: &[(&str, &str)]) -> Settings {
    let env = env
        .iter()
        .cloned()
        .chain(
            overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .collect();
    Settings::load(&Sources {
        file: None,
        env: Some(env),
    })
    .unwrap()
}

impl Env {
    pub fn tenant_text(&self) -> String {
        self.tenant.to_string()
    }

    /// Another delta-worker replica of this environment (same tenant, database, Redis keys and
    /// queues), with these settings on top.
    pub async fn replica(&self, overrides: &[(&str, &str)]) -> Application {
        Application::build(load(&self.settings, overrides))
            .await
            .unwrap()
    }

    /// The token of whoever holds the tenant's lease in Redis, if anyone does.
    pub async fn lease_holder(&self) -> Option<i64> {
        let client = redis::Client::open(cardsync_testkit::redis_url()).unwrap();
        let mut redis = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("GET")
            .arg(format!("{}{{{}}}:lease", self.prefix, self.tenant))
            .query_async(&mut redis)
            .await
            .unwrap()
    }

    /// Publishes a change notification for `user_id`, as the webhook does.
    pub async fn publish_change(&self, user_id: &str) {
        let settings = load(&self.settings, &[]);
        let topology = settings.topology.topology();
        let publisher = cardsync_bus::Publisher::connect(&settings.bus, topology.clone())
            .await
            .unwrap();
        let change = cardsync_proto::GraphChange {
            envelope: Some(cardsync_proto::Envelope::new(
                self.tenant_text(),
                cardsync_proto::Cause::Notification,
            )),
            resource: format!("Users/{user_id}"),
            resource_id: user_id.to_owned(),
            ..Default::default()
        };
        publisher
            .publish_all(vec![cardsync_bus::Outgoing::new(
                &topology.name(cardsync_bus::names::GRAPH),
                &cardsync_bus::routing::change(&self.tenant_text()),
                &change,
            )])
            .await
            .unwrap();
        publisher.close().await;
    }

    /// Runs one round directly.
    pub async fn round(&self, cause: cardsync_proto::Cause, mode: Mode) -> RoundReport {
        self.app
            .coalescer()
            .rounds()
            .run(&RoundRequest {
                tenant: self.tenant,
                cause,
                announced: HashSet::new(),
                mode,
                triggers: Default::default(),
                run_id: None,
            })
            .await
            .unwrap()
    }

    /// How many messages wait, ready, on this environment's queue `queue` (short name).
    pub async fn ready(&self, queue: &str) -> u32 {
        let channel = self.amqp.create_channel().await.unwrap();
        let options = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let declared = channel
            .queue_declare(
                format!("{}{queue}", self.prefix).as_str().into(),
                options,
                Default::default(),
            )
            .await
            .unwrap();
        let _ = channel.close(200, "done".into()).await;
        declared.message_count()
    }

    /// Takes every card command currently on the live and bulk queues.
    pub async fn commands(&self) -> Vec<CardCommand> {
        let channel = self.amqp.create_channel().await.unwrap();
        let mut out = Vec::new();
        for queue in ["card-writer.live", "card-writer.bulk"] {
            let name = format!("{}{queue}", self.prefix);
            while let Ok(Some(message)) = channel
                .basic_get(
                    name.as_str().into(),
                    lapin::options::BasicGetOptions { no_ack: true },
                )
                .await
            {
                let kind = message
                    .delivery
                    .properties
                    .kind()
                    .as_ref()
                    .map(|k| k.to_string());
                assert_eq!(kind.as_deref(), Some(CardCommand::TYPE));
                out.push(CardCommand::decode(message.delivery.data.as_slice()).unwrap());
            }
        }
        out
    }

    /// Seeds `users` users and returns their ids.
    pub async fn seed(&self, users: usize) -> Vec<String> {
        self.control
            .seed(&self.tenant_text(), users, 11)
            .await
            .unwrap();
        let snapshot = self.control.snapshot(&self.tenant_text()).await.unwrap();
        snapshot["directory"]["users"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|u| u["id"].as_str())
            .map(str::to_owned)
            .collect()
    }

    /// Creates the user `name` (UPN `name@contoso.test`) and returns its id.
    pub async fn create_user(&self, name: &str) -> String {
        let user = json!({
            "displayName": name,
            "userPrincipalName": format!("{}@contoso.test", name.to_lowercase()),
        });
        id_of(
            &self
                .control
                .create_user(&self.tenant_text(), user)
                .await
                .unwrap(),
        )
    }

    /// Creates the group `name` with these members (users or groups) and returns its id.
    pub async fn create_group(&self, name: &str, members: &[&str]) -> String {
        let tenant = self.tenant_text();
        let group = id_of(
            &self
                .control
                .create_group(&tenant, json!({"displayName": name}))
                .await
                .unwrap(),
        );
        for member in members {
            self.control
                .add_member(&tenant, &group, member)
                .await
                .unwrap();
        }
        group
    }

    pub async fn teardown(self) {
        let channel = self.amqp.create_channel().await.unwrap();
        let _ =
            cardsync_bus::delete(&channel, &cardsync_bus::Topology::cardsync(&self.prefix)).await;
        self.app.close().await;
    }
}

/// Polls `check` until it holds; fails the test naming `what` after `within`.
pub async fn eventually<F, Fut>(what: &str, within: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

pub fn action(command: &CardCommand) -> cardsync_proto::card_command::Action {
    command.action()
}

pub fn field<'a>(command: &'a CardCommand, name: &str) -> Option<&'a str> {
    command
        .fields
        .iter()
        .find(|f| f.name == name)
        .and_then(|f| f.value.as_deref())
}

pub fn id_of(value: &Value) -> String {
    value["user"]["id"]
        .as_str()
        .or(value["group"]["id"].as_str())
        .or(value["id"].as_str())
        .unwrap()
        .to_owned()
}
