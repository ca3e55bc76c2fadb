//! A graph-sim tenant, a reconciler wired to it, the delta-worker's rounds to set the tenant up,
//! cards written as the card-writer writes them, and readers for the commands and runs.

use cardsync_bus::lapin;
use cardsync_config::Sources;
use cardsync_proto::{BusMessage, CardCommand, Message as _};
use cardsync_rounds::{Mode, RoundReport, RoundRequest};
use cardsync_rules::{FieldName, FieldRules, MappedCard, plan_create, plan_update};
use cardsync_store::connections::{self, Connection, CredentialKind};
use cardsync_store::runs::{self, NewRun, Run};
use cardsync_store::tenants::{self, TenantConfig};
use graph_sim::control_client::{CARDSYNC_PERMISSIONS, Control};
use graph_sim::{RunningSim, SimConfig};
use reconciler::{Application, Settings};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use uuid::Uuid;

pub struct Env {
    pub _sim: RunningSim,
    pub control: Control,
    pub tenant: Uuid,
    pub app: Application,
    pub prefix: String,
    pub pool: sqlx::PgPool,
    amqp: lapin::Connection,
    settings: Vec<(String, String)>,
}

/// An environment on the shared test database.
pub async fn env() -> Env {
    let pool = cardsync_testkit::test_pool().await;
    env_on(pool, &cardsync_testkit::database_url(), &[]).await
}

/// An environment on the database at `url` (already migrated, reached by `pool`), whose
/// reconcilers take these settings (`CARDSYNC__…` variables) on top of the test defaults.
pub async fn env_on(pool: sqlx::PgPool, url: &str, overrides: &[(&str, &str)]) -> Env {
    cardsync_testkit::init();
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
    let prefix = cardsync_testkit::unique_prefix("rc");
    let settings: Vec<(String, String)> = [
        ("CARDSYNC__HTTP__LISTEN", "127.0.0.1:0".to_owned()),
        ("CARDSYNC__TOPOLOGY__PREFIX", prefix.clone()),
        ("CARDSYNC__POSTGRES__URL", url.to_owned()),
        ("CARDSYNC__SECRETS__DEVELOPMENT", "true".to_owned()),
        ("CARDSYNC__REDIS__URL", cardsync_testkit::redis_url()),
        ("CARDSYNC__REDIS__KEY_PREFIX", prefix.clone()),
        ("CARDSYNC__BUS__URL", cardsync_testkit::amqp_url()),
        ("CARDSYNC__BUS__CONNECT_TIMEOUT", "20s".to_owned()),
        ("CARDSYNC__BUS__QUEUE_TYPE", "classic".to_owned()),
        ("CARDSYNC__BUS__RETRY_DELAYS", "200ms".to_owned()),
        ("CARDSYNC__GRAPH__AUTHORITY_URL", https.clone()),
        ("CARDSYNC__GRAPH__GRAPH_URL", https),
        ("CARDSYNC__GRAPH__EXTRA_CA_FILE", ca_file),
        ("CARDSYNC__GRAPH__BACKOFF_BASE", "20ms".to_owned()),
        ("CARDSYNC__GRAPH__BACKOFF_CAP", "500ms".to_owned()),
        ("CARDSYNC__WORKER__LEASE_WAIT", "60s".to_owned()),
        ("CARDSYNC__RECONCILER__HEARTBEAT", "200ms".to_owned()),
        ("CARDSYNC__RECONCILER__STALE_AFTER", "3s".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .chain(
        overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    )
    .collect();
    let loaded = load(&settings, &[]);
    let key = loaded.secrets.keyring().unwrap();
    tenants::put(
        &pool,
        &TenantConfig {
            id: tenant,
            name: "Contoso".into(),
            rules: FieldRules::default(),
            invites_enabled: false,
            admin_roles_enabled: false,
        },
    )
    .await
    .unwrap();
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
    let app = Application::build(loaded).await.unwrap();
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

fn load(env: &[(String, String)], overrides: &[(&str, &str)]) -> Settings {
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

    /// Another reconciler replica of this environment (same tenant, database, keys, queues).
    /// The settings of this environment's reconcilers, with `overrides` on top.
    pub fn settings_with(&self, overrides: &[(&str, &str)]) -> Settings {
        load(&self.settings, overrides)
    }

    pub async fn replica(&self) -> Application {
        Application::build(load(&self.settings, &[])).await.unwrap()
    }

    /// A delta round, as the delta-worker runs it (same crate, same lease and versions).
    pub async fn round(&self, cause: cardsync_proto::Cause, mode: Mode) -> RoundReport {
        self.app
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

    /// Records a run of this tenant, as the admin API does for a Sync Now, and returns its id.
    pub async fn new_run(&self) -> Uuid {
        let run_id = Uuid::now_v7();
        runs::create(
            &self.pool,
            &NewRun {
                run_id,
                tenant_id: self.tenant,
                kind: "reconcile".into(),
                cause: "reconcile".into(),
                started_by: "admin@contoso.test".into(),
                target: None,
            },
        )
        .await
        .unwrap();
        run_id
    }

    /// Publishes the reconcile request of `run_id`.
    pub async fn request(&self, run_id: Uuid) {
        let settings = load(&self.settings, &[]);
        let topology = settings.topology.topology();
        let publisher = cardsync_bus::Publisher::connect(&settings.bus, topology.clone())
            .await
            .unwrap();
        publisher
            .publish_all(vec![cardsync_bus::Outgoing::new(
                &topology.name(cardsync_bus::names::SYNC),
                &cardsync_bus::routing::reconcile_request(&self.tenant_text()),
                &reconciler::due::request(&self.tenant_text(), run_id),
            )])
            .await
            .unwrap();
        publisher.close().await;
    }

    pub async fn run(&self, run_id: Uuid) -> Run {
        runs::get(&self.pool, run_id)
            .await
            .unwrap()
            .expect("the run exists")
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

    /// Takes every card command on the live and bulk queues, with the queue's short name.
    pub async fn commands(&self) -> Vec<(&'static str, CardCommand)> {
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
                out.push((
                    queue,
                    CardCommand::decode(message.delivery.data.as_slice()).unwrap(),
                ));
            }
        }
        let _ = channel.close(200, "done".into()).await;
        out
    }

    /// Applies upserts and deactivations to the cards as the card-writer does (newer versions
    /// only, the tenant's merge policy), standing in for it, and adds each outcome to the
    /// command's run as it does.
    pub async fn apply(&self, commands: &[(&'static str, CardCommand)]) {
        use cardsync_proto::card_command::Action;
        let rules = FieldRules::default();
        for (_, command) in commands {
            let card = cardsync_store::cards::of_users(
                &self.pool,
                self.tenant,
                std::slice::from_ref(&command.user_id),
            )
            .await
            .unwrap()
            .pop();
            let version = i64::try_from(command.version).unwrap();
            let outcome = match (&card, command.action()) {
                (Some(card), _) if card.applied_version >= version => "superseded",
                (_, Action::Deactivate | Action::Delete) => "deactivated",
                (None, _) => "created",
                (Some(_), _) => "updated",
            };
            if !command.run_id.is_empty() {
                let mut tx = self.pool.begin().await.unwrap();
                let digests = cardsync_cards::DigestEvents::new(format!(
                    "{}{}",
                    self.prefix,
                    cardsync_bus::names::CARD_EVENTS
                ));
                runs::record_applied(
                    &mut tx,
                    command.run_id.parse().unwrap(),
                    &[(outcome, 1)],
                    &[],
                    &digests,
                )
                .await
                .unwrap();
                tx.commit().await.unwrap();
            }
            if outcome == "superseded" {
                continue;
            }
            let fields: BTreeMap<FieldName, Option<String>> = command
                .fields
                .iter()
                .map(|f| (FieldName::from(f.name.as_str()), f.value.clone()))
                .collect();
            let incoming = MappedCard::from_parts(&command.user_id, &command.uid, fields);
            let states = match &card {
                Some(card) => plan_update(&rules, &card.fields, &incoming).states,
                None => plan_create(&rules, &incoming),
            };
            let status = match command.action() {
                Action::Deactivate | Action::Delete => "deactivated",
                _ => "active",
            };
            sqlx::query(
                "INSERT INTO cards (tenant_id, card_id, user_id, uid, email, status, fields, applied_version)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (tenant_id, user_id) WHERE user_id IS NOT NULL DO UPDATE
                    SET status = EXCLUDED.status, fields = EXCLUDED.fields,
                        applied_version = EXCLUDED.applied_version",
            )
            .bind(self.tenant)
            .bind(Uuid::now_v7())
            .bind(&command.user_id)
            .bind(&command.uid)
            .bind(&incoming.link_email)
            .bind(status)
            .bind(sqlx::types::Json(&states))
            .bind(version)
            .execute(&self.pool)
            .await
            .unwrap();
        }
    }

    /// The card value of `field` of `user`'s card.
    pub async fn card_value(&self, user: &str, field: &str) -> Option<String> {
        let card = cardsync_store::cards::of_users(&self.pool, self.tenant, &[user.to_owned()])
            .await
            .unwrap()
            .pop()?;
        card.fields.value(field).map(str::to_owned)
    }

    /// Creates the user `name` (UPN `name@contoso.test`) and returns its id.
    pub async fn create_user(&self, name: &str) -> String {
        let user = json!({
            "displayName": name,
            "jobTitle": "Engineer",
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

    pub async fn update_user(&self, user: &str, changes: Value) {
        self.control
            .update_user(&self.tenant_text(), user, changes)
            .await
            .unwrap();
    }

    /// Users `names`, synced by the delta-worker's first round and applied to the cards.
    pub async fn synced_users(&self, names: &[&str]) -> Vec<String> {
        let mut ids = Vec::new();
        for name in names {
            ids.push(self.create_user(name).await);
        }
        self.round(cardsync_proto::Cause::Notification, Mode::Incremental)
            .await;
        let commands = self.commands().await;
        assert_eq!(commands.len(), names.len(), "one command per user");
        self.apply(&commands).await;
        ids
    }

    /// Handles the next reconcile request with `app`, as `reconciler serve` does.
    pub async fn reconcile_with(&self, app: &Application) -> cardsync_bus::Processed {
        app.requests_consumer()
            .process_next(&app.handler(), Duration::from_secs(30))
            .await
            .unwrap()
    }

    pub async fn teardown(self) {
        let channel = self.amqp.create_channel().await.unwrap();
        let _ =
            cardsync_bus::delete(&channel, &cardsync_bus::Topology::cardsync(&self.prefix)).await;
        self.app.close().await;
    }
}

/// Polls `check` until it holds; fails the test naming `what` after `within`.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
        .or(value["id"].as_str())
        .unwrap()
        .to_owned()
}

impl Env {
    /// Takes every reconcile request waiting on `reconciler.requests`.
    pub async fn take_requests(&self) -> Vec<cardsync_proto::SyncRequest> {
        let channel = self.amqp.create_channel().await.unwrap();
        let name = format!("{}reconciler.requests", self.prefix);
        let mut out = Vec::new();
        while let Ok(Some(message)) = channel
            .basic_get(
                name.as_str().into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
        {
            out.push(
                cardsync_proto::SyncRequest::decode(message.delivery.data.as_slice()).unwrap(),
            );
        }
        let _ = channel.close(200, "done".into()).await;
        out
    }

    /// Creates the group `name` with `members` in graph-sim and returns its id.
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
}
