//! The whole of cardsync on this machine: graph-sim (Graph over HTTPS) and the webhook, the
//! delta-worker and the card-writer as child processes (the real binaries), one seeded tenant
//! with its Graph connection, card tenant and Graph subscription. `make demo` and the pipeline
//! integration tests both run it through [`Pipeline`], so what the tests prove is what the demo
//! shows.
//!
//! Everything a pipeline names is unique to its run (topology prefix, Redis key prefix, tenant,
//! optionally a database of its own), so several pipelines can run side by side on one broker,
//! one Redis and one PostgreSQL server.

use crate::check::{self, Report};
use crate::operator::{self, Operator};
use crate::procs::{Binaries, Children, log_tail};
use anyhow::{Context as _, bail, ensure};
use cardsync_bench::free_port;
use cardsync_bus::{BusSettings, Outgoing, Publisher, QueueType, Topology, lapin, names, routing};
use cardsync_proto as proto;
use graph_sim::control_client::{CARDSYNC_PERMISSIONS, Control};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Prints a section title, as the demo's readable output is laid out.
pub fn section(title: &str) {
    println!("\n== {title}");
}

/// One of the cardsync services a pipeline runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Receives Graph's notifications and publishes them.
    Webhook,
    /// Runs the delta rounds and emits card commands.
    DeltaWorker,
    /// Applies card commands to PostgreSQL.
    CardWriter,
    /// Creates and renews the tenant's Graph subscription.
    SubscriptionManager,
    /// Runs full reconciles against the cards.
    Reconciler,
}

impl Service {
    /// Every service, in start order.
    pub const ALL: [Service; 5] = [
        Service::Webhook,
        Service::DeltaWorker,
        Service::CardWriter,
        Service::SubscriptionManager,
        Service::Reconciler,
    ];

    /// The binary's (and the log file's) name.
    pub fn name(self) -> &'static str {
        match self {
            Service::Webhook => "webhook",
            Service::DeltaWorker => "delta-worker",
            Service::CardWriter => "card-writer",
            Service::SubscriptionManager => "subscription-manager",
            Service::Reconciler => "reconciler",
        }
    }
}

/// Which PostgreSQL database the services use.
#[derive(Debug, Clone)]
pub enum Database {
    /// An existing database, shared with whatever else uses it (the demo's `cardsync`); the
    /// pipeline only ever touches its own tenant's rows.
    Shared(String),
    /// A database created for this pipeline on the server of `server_url` (which names any
    /// existing database to connect to for `CREATE DATABASE`), dropped when it stops. The
    /// delta-worker's safety poll visits every tenant of its database, so pipelines that run
    /// side by side would otherwise run rounds for each other's tenants.
    Fresh {
        /// A URL of the server, e.g. `postgres://postgres@127.0.0.1:5432/cardsync_test`.
        server_url: String,
    },
}

/// How to run a pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Names the run's resources: `{label}-{run_id}` prefixes queues and Redis keys.
    pub label: String,
    /// Short random id of the run.
    pub run_id: String,
    /// Where the binaries are.
    pub bin_dir: PathBuf,
    /// Where each child's log goes (`<name>.log`), and graph-sim's CA.
    pub logs: PathBuf,
    /// Users graph-sim seeds the tenant with.
    pub users: usize,
    /// Seed of the directory.
    pub seed: u64,
    /// RabbitMQ.
    pub amqp_url: String,
    /// PostgreSQL.
    pub database: Database,
    /// Redis (a database index of its own lets a test flush it without touching others).
    pub redis_url: String,
    /// How the services declare their queues (must be the same for every declarer).
    pub queue_type: QueueType,
    /// The delta-worker's idle-tenant safety poll interval (`"30s"`).
    pub safety_poll_interval: String,
    /// How often the delta-worker looks for idle tenants.
    pub safety_poll_tick: String,
    /// The mass-change safety rail of every tenant, `(removal %, update %, minimum)` as
    /// `cardsync tenant safety` sets it; none keeps the defaults.
    pub rail: Option<(f32, f32, i32)>,
    /// Further `CARDSYNC__…` settings given to every service.
    pub service_env: Vec<(String, String)>,
    /// Delete the run's exchanges and queues when the pipeline stops.
    pub delete_topology: bool,
}

impl PipelineConfig {
    /// The demo's settings for a new run labelled `label`, with a fresh run id and log directory
    /// (`$TMPDIR/cardsync-{label}-{run_id}`).
    pub fn new(label: &str, bin_dir: PathBuf) -> anyhow::Result<Self> {
        let run_id = Uuid::new_v4().simple().to_string()[..8].to_owned();
        let logs = std::env::temp_dir().join(format!("cardsync-{label}-{run_id}"));
        std::fs::create_dir_all(&logs)
            .with_context(|| format!("creating the log directory {}", logs.display()))?;
        Ok(Self {
            label: label.to_owned(),
            run_id,
            bin_dir,
            logs,
            users: 1000,
            seed: 42,
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
            database: Database::Shared("postgres://postgres@127.0.0.1:5432/cardsync".to_owned()),
            redis_url: "redis://127.0.0.1:6379/0".to_owned(),
            queue_type: QueueType::default(),
            safety_poll_interval: "30s".to_owned(),
            safety_poll_tick: "5s".to_owned(),
            rail: None,
            service_env: Vec::new(),
            delete_topology: false,
        })
    }

    /// A benchmark's settings: the binaries in `bin_dir` (default: next to this one), `users`
    /// users, a database of the run's own on `server_url`, the topology deleted at the end, and a
    /// safety poll that stays out of the measurement.
    pub fn benchmark(
        label: &str,
        bin_dir: Option<&PathBuf>,
        users: usize,
        server_url: &str,
    ) -> anyhow::Result<Self> {
        let bin_dir = match bin_dir {
            Some(dir) => dir.clone(),
            None => crate::procs::own_dir()?,
        };
        let mut config = Self::new(label, bin_dir)?;
        config.users = users;
        config.database = Database::Fresh {
            server_url: server_url.to_owned(),
        };
        config.delete_topology = true;
        config.safety_poll_interval = "1h".to_owned();
        Ok(config)
    }

    /// `{label}-{run_id}`: the run's name in queues, keys and the card tenant.
    pub fn name(&self) -> String {
        format!("{}-{}", self.label, self.run_id)
    }
}

/// The tail of a benchmark's `main`: runs `run` with a slot for its pipeline until it ends or
/// Ctrl-C, stops whatever pipeline it started, and prints the summary (the last line, JSON) or
/// the error under `name`.
pub async fn run_benchmark(
    name: &str,
    run: impl AsyncFnOnce(&mut Option<Pipeline>) -> anyhow::Result<serde_json::Value>,
) -> std::process::ExitCode {
    let mut pipeline = None;
    let outcome = tokio::select! {
        outcome = run(&mut pipeline) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Some(pipeline) = pipeline {
        pipeline.stop().await;
    }
    match outcome {
        Ok(summary) => {
            println!("{summary}");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{name}: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A started service: how to start it again after a crash.
#[derive(Debug, Clone)]
struct Running {
    service: Service,
    port: u16,
    env: Vec<(String, String)>,
}

/// A running pipeline. [`Pipeline::stop`] stops every process it started (dropping it does
/// too, without the topology and database clean-up).
#[derive(Debug)]
pub struct Pipeline {
    /// How it was started.
    pub config: PipelineConfig,
    /// The tenant (graph-sim's and cardsync's).
    pub tenant: Uuid,
    /// graph-sim's control API.
    pub control: Control,
    /// The Graph surface over HTTPS.
    pub graph_url: String,
    /// The client secret of the tenant's app registration (for tests that look for leaks).
    pub client_secret: secrecy::SecretString,
    /// The run's PostgreSQL database.
    pub pool: PgPool,
    /// The run's broker layout.
    pub topology: Topology,
    /// Every tenant the pipeline serves: [`Pipeline::tenant`] first, then those added with
    /// [`Pipeline::add_tenant`](crate::tenants).
    pub tenants: Vec<Uuid>,
    pub(crate) children: Children,
    pub(crate) binaries: Binaries,
    pub(crate) bus: BusSettings,
    /// The admin API's base URL and graph-sim's plain-HTTP Graph URL (the operator's issuer).
    pub(crate) admin_url: String,
    pub(crate) graph_plain_url: String,
    operator: Operator,
    services: Vec<Running>,
    fresh_database: Option<(String, String)>,
    http: reqwest::Client,
}

impl Pipeline {
    /// Starts graph-sim, seeds the tenant, registers the app, stores the tenant's connection and
    /// card tenant (operator commands), starts the four services and waits until the
    /// subscription manager created and registered the Graph subscription (graph-sim performs
    /// the validation handshake against the webhook). The initial sync is left to the caller
    /// ([`Pipeline::initial_sync`]).
    pub async fn start(config: PipelineConfig) -> anyhow::Result<Self> {
        let (postgres_url, fresh_database) = match &config.database {
            Database::Shared(url) => (url.clone(), None),
            Database::Fresh { server_url } => {
                let name = format!("cardsync_{}_{}", config.label, config.run_id)
                    .replace(|c: char| !c.is_ascii_alphanumeric(), "_");
                create_database(server_url, &name).await?;
                let url = with_database(server_url, &name)?;
                (url, Some((server_url.clone(), name)))
            }
        };
        let started = Self::start_in(config, postgres_url, fresh_database.clone()).await;
        if started.is_err()
            && let Some((server_url, name)) = &fresh_database
            && let Err(error) = drop_database(server_url, name).await
        {
            eprintln!("could not drop database {name}: {error:#}");
        }
        started
    }

    async fn start_in(
        config: PipelineConfig,
        postgres_url: String,
        fresh_database: Option<(String, String)>,
    ) -> anyhow::Result<Self> {
        let binaries = Binaries {
            dir: config.bin_dir.clone(),
            logs: config.logs.clone(),
        };
        let mut children = Children::default();
        let name = config.name();
        let topology_prefix = format!("{name}.");

        section("1. graph-sim");
        let (graph_port, control_port, https_port) = (free_port()?, free_port()?, free_port()?);
        // Graph over HTTPS with graph-sim's own CA, trusted through configuration exactly as a
        // deployment behind a TLS-inspecting proxy would trust that proxy's CA.
        let ca_file = binaries.logs.join("graph-sim-ca.pem");
        children.start(
            &binaries,
            "graph-sim",
            &[
                "--graph-listen",
                &format!("127.0.0.1:{graph_port}"),
                "--control-listen",
                &format!("127.0.0.1:{control_port}"),
                "--tls",
                "--https-listen",
                &format!("127.0.0.1:{https_port}"),
                "--ca-out",
                &ca_file.display().to_string(),
                // An hour of simulated retry back-off per second: a failed delivery is retried fast.
                "--time-scale",
                "3600",
            ],
            &[],
        )?;
        let graph_url = format!("https://127.0.0.1:{https_port}");
        let control_url = format!("http://127.0.0.1:{control_port}");
        let plain = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        wait_ok(
            &plain,
            &format!("{control_url}/control/health"),
            &mut children,
        )
        .await?;
        let ca_pem = std::fs::read(&ca_file).context("graph-sim's CA certificate")?;
        // Idle connections are dropped before the services' 5 s keep-alive closes them, so a
        // scrape never goes out on a connection the server is closing at that moment.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(2))
            .add_root_certificate(
                reqwest::Certificate::from_pem(&ca_pem).context("graph-sim's CA is not PEM")?,
            )
            .build()?;
        let control = Control::new(&control_url);
        let tenant_text = control.create_tenant().await?;
        let tenant = Uuid::parse_str(&tenant_text).context("graph-sim tenant id")?;
        let started = Instant::now();
        control
            .seed(&tenant_text, config.users, config.seed)
            .await?;
        println!(
            "graph-sim on {graph_url}; tenant {tenant} seeded with {} users in {:.1} s",
            config.users,
            started.elapsed().as_secs_f64()
        );
        let app = control
            .create_secret_app(&tenant_text, CARDSYNC_PERMISSIONS)
            .await?;
        let secret = app.secret.clone().context("graph-sim returned no secret")?;
        println!("app registration {} with a client secret", app.client_id);

        let queue_type = match config.queue_type {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        };
        let mut env: Vec<(String, String)> = vec![
            ("CARDSYNC__TOPOLOGY__PREFIX", topology_prefix.clone()),
            ("CARDSYNC__BUS__URL", config.amqp_url.clone()),
            ("CARDSYNC__BUS__QUEUE_TYPE", queue_type.to_owned()),
            ("CARDSYNC__POSTGRES__URL", postgres_url.clone()),
            ("CARDSYNC__SECRETS__DEVELOPMENT", "true".to_owned()),
            ("CARDSYNC__REDIS__URL", config.redis_url.clone()),
            ("CARDSYNC__REDIS__KEY_PREFIX", format!("{name}:")),
            ("CARDSYNC__TELEMETRY__LOG_FILTER", "info".to_owned()),
            // The run's own photo store, shared by the services that write and serve images
            // (another run's sweep never sees them).
            (
                "CARDSYNC__PHOTOS__URL",
                config.logs.join("photos").display().to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .chain(config.service_env.iter().cloned())
        .collect();

        section("2. schema, the admin API, and the tenant configured with the cardsync CLI");
        println!("{}", binaries.run("admin-api", &["migrate"], &env, &[])?);
        let graph_plain_url = format!("http://127.0.0.1:{graph_port}");
        let admin_port = free_port()?;
        let mut admin_env = env.clone();
        admin_env.extend([
            (
                "CARDSYNC__HTTP__LISTEN".to_owned(),
                format!("127.0.0.1:{admin_port}"),
            ),
            (
                "CARDSYNC__GRAPH__AUTHORITY_URL".to_owned(),
                graph_url.clone(),
            ),
            ("CARDSYNC__GRAPH__GRAPH_URL".to_owned(), graph_url.clone()),
            (
                "CARDSYNC__GRAPH__EXTRA_CA_FILE".to_owned(),
                ca_file.display().to_string(),
            ),
        ]);
        admin_env.extend(operator::issuer_env(&graph_plain_url));
        children.start(&binaries, "admin-api", &["serve"], &admin_env)?;
        let admin_url = format!("http://127.0.0.1:{admin_port}");
        wait_ok(&http, &format!("{admin_url}/health/ready"), &mut children)
            .await
            .context("the admin-api never became ready")?;
        println!("admin-api ready on 127.0.0.1:{admin_port}");
        let operator =
            Operator::sign_in(&control, &graph_plain_url, &tenant_text, admin_url).await?;
        let tenant_name = format!("{} {}", config.label, config.run_id);
        println!(
            "{}",
            operator.cli(
                &binaries,
                &[
                    "tenant",
                    "create",
                    "--id",
                    &tenant_text,
                    "--name",
                    &tenant_name
                ],
                &[],
            )?
        );
        if let Some(args) = crate::tenants::rail_args(&tenant_text, config.rail) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            println!("{}", operator.cli(&binaries, &args, &[])?);
        }
        println!(
            "{}",
            operator.cli(
                &binaries,
                &[
                    "connection",
                    "put",
                    "--tenant",
                    &tenant_text,
                    "--client-id",
                    &app.client_id,
                    "--kind",
                    "secret",
                ],
                &[("CARDSYNC_CREDENTIAL", &secret)],
            )?
        );
        println!(
            "{}",
            operator.cli(
                &binaries,
                &["connection", "test", "--tenant", &tenant_text],
                &[]
            )?
        );

        section("3. services");
        env.push(("CARDSYNC__GRAPH__AUTHORITY_URL".into(), graph_url.clone()));
        env.push(("CARDSYNC__GRAPH__GRAPH_URL".into(), graph_url.clone()));
        env.push((
            "CARDSYNC__GRAPH__EXTRA_CA_FILE".into(),
            ca_file.display().to_string(),
        ));
        env.push((
            "CARDSYNC__WORKER__SAFETY_POLL_INTERVAL".into(),
            config.safety_poll_interval.clone(),
        ));
        env.push((
            "CARDSYNC__WORKER__SAFETY_POLL_TICK".into(),
            config.safety_poll_tick.clone(),
        ));
        let ports = Service::ALL
            .iter()
            .map(|_| free_port())
            .collect::<Result<Vec<u16>, _>>()?;
        // The subscription manager gives Graph the webhook's address.
        let webhook = format!("http://127.0.0.1:{}", ports[0]);
        env.push((
            "CARDSYNC__SUBSCRIPTIONS__PUBLIC_BASE_URL".into(),
            webhook.clone(),
        ));
        env.push(("CARDSYNC__SUBSCRIPTIONS__TICK".into(), "1s".into()));
        let mut services = Vec::new();
        for (service, port) in Service::ALL.into_iter().zip(ports) {
            let mut env = env.clone();
            env.push(("CARDSYNC__HTTP__LISTEN".into(), format!("127.0.0.1:{port}")));
            children.start(&binaries, service.name(), &["serve"], &env)?;
            services.push(Running { service, port, env });
        }
        for running in &services {
            wait_ok(
                &http,
                &format!("http://127.0.0.1:{}/health/ready", running.port),
                &mut children,
            )
            .await
            .with_context(|| format!("{} never became ready", running.service.name()))?;
            println!(
                "{} ready on 127.0.0.1:{}",
                running.service.name(),
                running.port
            );
        }
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&postgres_url)
            .await
            .context("connecting to PostgreSQL")?;

        section(
            "4. Graph subscription (the subscription manager creates it; graph-sim performs the handshake with the webhook)",
        );
        let started = Instant::now();
        let subscription_id =
            crate::tenants::wait_subscription(&pool, &mut children, tenant, "/users").await?;
        println!(
            "subscription {subscription_id} created and registered by the subscription manager in {:.1} s (webhook {webhook})",
            started.elapsed().as_secs_f64()
        );
        let mut bus = BusSettings::new(config.amqp_url.clone().into());
        bus.queue_type = config.queue_type;
        // The harness's own publishes declare the whole topology first: on a loaded machine that
        // takes longer than a service's 1 s connect budget.
        bus.connect_timeout = Duration::from_secs(20);
        Ok(Self {
            topology: Topology::cardsync(&topology_prefix),
            config,
            tenant,
            tenants: vec![tenant],
            admin_url: operator.server.clone(),
            graph_plain_url,
            control,
            graph_url,
            client_secret: secrecy::SecretString::from(secret.clone()),
            pool,
            children,
            binaries,
            operator,
            bus,
            services,
            fresh_database,
            http,
        })
    }

    /// The operator of the pipeline's admin API (its URL and an `admin` token).
    pub fn operator(&self) -> &Operator {
        &self.operator
    }

    /// Runs `cardsync args…` against the pipeline's admin API as its operator (an `admin`
    /// token); returns what it printed on standard output.
    pub fn cardsync(&self, args: &[&str]) -> anyhow::Result<String> {
        self.operator.run(&self.binaries, args, &[])
    }

    /// The tenant id as text (graph-sim's control API and the bus use it so).
    pub fn tenant_text(&self) -> String {
        self.tenant.to_string()
    }

    /// The log file of a child (`graph-sim` or a service's name).
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.binaries.logs.join(format!("{name}.log"))
    }

    /// Where the logs are and the last lines of each service's: for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = format!("logs in {}", self.binaries.logs.display());
        for name in [
            "graph-sim",
            "admin-api",
            "webhook",
            "delta-worker",
            "card-writer",
        ] {
            let path = self.log_path(name);
            out.push_str(&format!(
                "\n--- last {lines} lines of {}\n{}",
                path.display(),
                log_tail(&path, lines)
            ));
        }
        out
    }

    /// Publishes a `SyncRequest` for the whole tenant on the sync exchange (`Full` for the
    /// initial sync, `Info` for "Sync Now").
    pub async fn request_sync(&self, depth: proto::sync_request::Depth) -> anyhow::Result<()> {
        self.request_sync_for(self.tenant, depth).await
    }

    /// [`Pipeline::request_sync`] for one of [`Pipeline::tenants`].
    pub async fn request_sync_for(
        &self,
        tenant: Uuid,
        depth: proto::sync_request::Depth,
    ) -> anyhow::Result<()> {
        let tenant = tenant.to_string();
        let publisher = Publisher::connect(&self.bus, self.topology.clone()).await?;
        let request = proto::SyncRequest {
            envelope: Some(proto::Envelope::new(&tenant, proto::Cause::Manual)),
            scope: proto::sync_request::Scope::Tenant as i32,
            depth: depth as i32,
            ..Default::default()
        };
        publisher
            .publish_all(vec![Outgoing::new(
                &self.topology.name(names::SYNC),
                &routing::sync_request(&tenant),
                &request,
            )])
            .await?;
        publisher.close().await;
        Ok(())
    }

    /// Asks the reconciler for a full reconcile of `tenant` as run `run_id` (Sync Now).
    pub async fn request_reconcile(&self, tenant: Uuid, run_id: Uuid) -> anyhow::Result<()> {
        let tenant = tenant.to_string();
        let publisher = Publisher::connect(&self.bus, self.topology.clone()).await?;
        let request = proto::SyncRequest {
            envelope: Some(proto::Envelope::new(&tenant, proto::Cause::Reconcile)),
            scope: proto::sync_request::Scope::Tenant as i32,
            depth: proto::sync_request::Depth::Full as i32,
            run_id: run_id.to_string(),
            ..Default::default()
        };
        publisher
            .publish_all(vec![Outgoing::new(
                &self.topology.name(names::SYNC),
                &routing::reconcile_request(&tenant),
                &request,
            )])
            .await?;
        publisher.close().await;
        Ok(())
    }

    /// Sync Now of `tenant` as the operator does it (`cardsync sync`): a reconcile run that the
    /// admin API records and the reconciler runs; returns the run's id.
    pub fn sync_now(&self, tenant: Uuid) -> anyhow::Result<Uuid> {
        let answer = self.cardsync(&["sync", "--tenant", &tenant.to_string(), "-o", "json"])?;
        let answer: Value =
            serde_json::from_str(&answer).context("cardsync sync printed no JSON")?;
        answer["run_id"]
            .as_str()
            .and_then(|id| Uuid::parse_str(id).ok())
            .context("cardsync sync printed no run id")
    }

    /// Cards of the tenant with status `active`.
    pub async fn active_cards(&self) -> anyhow::Result<usize> {
        self.active_cards_of(self.tenant).await
    }

    /// Cards of one of [`Pipeline::tenants`] with status `active`.
    pub async fn active_cards_of(&self, tenant: Uuid) -> anyhow::Result<usize> {
        let active: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM cards WHERE tenant_id = $1 AND status = 'active'",
        )
        .bind(tenant)
        .fetch_one(&self.pool)
        .await?;
        Ok(usize::try_from(active).unwrap_or_default())
    }

    /// Users graph-sim holds that should have an active card right now.
    pub async fn expected_active(&self) -> anyhow::Result<usize> {
        Ok(self.compare().await?.expected_active)
    }

    /// Waits until the tenant has at least `expected` active cards.
    pub async fn wait_active_cards(
        &mut self,
        expected: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            self.children.supervise()?;
            let active = self.active_cards().await?;
            if active >= expected {
                println!(
                    "{active} active cards for {expected} enabled users after {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            if started.elapsed() > timeout {
                bail!(
                    "initial sync: only {active} of {expected} cards after {} s",
                    timeout.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The initial sync: a full `SyncRequest`, every enabled user's card, then a drained
    /// pipeline (the initial round's photo pass and delta link included).
    pub async fn initial_sync(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let expected = self.expected_active().await?;
        self.request_sync(proto::sync_request::Depth::Full).await?;
        self.wait_active_cards(expected, timeout).await?;
        self.wait_drained(timeout).await
    }

    /// What autovacuum would have done by now: benchmarks call it between their phases. This
    /// machine's PostgreSQL runs without autovacuum, so a table bulk-loaded by the initial sync
    /// (or rewritten by a rules apply) keeps no statistics and every dead row; the planner then
    /// takes a 100,000-user snapshot for about a thousand rows and sorts the whole rest of it on
    /// disk for each 2,000-row page (0.5 s a page, against 1.3 ms with statistics). A server
    /// with autovacuum (PostgreSQL's default) analyzes such a table within a minute. Then a
    /// checkpoint, so no phase meets a burst of dirty pages left by the one before.
    pub async fn settle(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        sqlx::query(
            "VACUUM (ANALYZE) directory_users, directory_groups, cards, card_teams, teams, outbox, sync_runs",
        )
        .execute(&self.pool)
        .await
        .context("vacuuming the benchmark's tables")?;
        sqlx::query("CHECKPOINT")
            .execute(&self.pool)
            .await
            .context("checkpointing")?;
        println!(
            "settled (VACUUM ANALYZE, CHECKPOINT) in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Every card of the tenant against graph-sim's directory as it is now.
    pub async fn compare(&self) -> anyhow::Result<Report> {
        let snapshot = self.control.snapshot(&self.tenant_text()).await?;
        check::compare(&self.pool, self.tenant, &snapshot).await
    }

    /// Waits until the pipeline is drained and every card matches the directory with no
    /// duplicate; fails after `timeout` with what still diverged.
    pub async fn wait_converged(&mut self, timeout: Duration) -> anyhow::Result<Report> {
        let deadline = Instant::now() + timeout;
        loop {
            self.wait_drained(deadline.saturating_duration_since(Instant::now()))
                .await?;
            let report = self.compare().await?;
            if report.divergent == 0 && report.duplicates == 0 {
                return Ok(report);
            }
            if Instant::now() >= deadline {
                bail!(
                    "not converged after {} s: {} divergent, {} duplicate cards; e.g. {:?}",
                    timeout.as_secs(),
                    report.divergent,
                    report.duplicates,
                    report.examples
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// graph-sim's delivery log of the tenant's notifications.
    pub async fn deliveries(&self) -> anyhow::Result<Vec<Value>> {
        self.deliveries_of(self.tenant).await
    }

    /// graph-sim's delivery log of one tenant's notifications.
    pub async fn deliveries_of(&self, tenant: Uuid) -> anyhow::Result<Vec<Value>> {
        let deliveries = self
            .control
            .call(
                reqwest::Method::GET,
                &format!("/deliveries?tenant={tenant}"),
                None,
            )
            .await?;
        Ok(deliveries
            .as_array()
            .or_else(|| deliveries["value"].as_array())
            .cloned()
            .unwrap_or_default())
    }

    /// Graph requests graph-sim counted for the tenant (token requests included).
    pub async fn graph_requests(&self) -> anyhow::Result<u64> {
        let counters = self.control.counters(Some(&self.tenant_text())).await?;
        fn sum(value: &Value) -> u64 {
            match value {
                Value::Object(map) => map
                    .get("requests")
                    .and_then(Value::as_u64)
                    .unwrap_or_else(|| map.values().map(sum).sum()),
                _ => 0,
            }
        }
        Ok(sum(&counters))
    }

    /// How many responses with `status` graph-sim served on `endpoint` (its counter names:
    /// `users.delta`, `token`, …), whoever asked. The simulator is this pipeline's own, so all
    /// of them are this pipeline's; and graph-sim answers injected faults before it
    /// authenticates a request, so it files those under the tenant `unknown`, not ours.
    pub async fn graph_responses(&self, endpoint: &str, status: u16) -> anyhow::Result<u64> {
        let counters = self.control.counters(None).await?;
        Ok(counters
            .as_object()
            .into_iter()
            .flat_map(|tenants| tenants.values())
            .filter_map(|endpoints| endpoints[endpoint]["byStatus"][status.to_string()].as_u64())
            .sum())
    }

    /// The service's `/metrics` text.
    pub async fn metrics(&self, service: Service) -> anyhow::Result<String> {
        let port = self.running(service)?.port;
        self.scrape(service.name(), &format!("http://127.0.0.1:{port}"))
            .await
    }

    /// The admin API's `/metrics` text.
    pub async fn admin_metrics(&self) -> anyhow::Result<String> {
        self.scrape("admin-api", &self.admin_url).await
    }

    async fn scrape(&self, name: &str, base: &str) -> anyhow::Result<String> {
        let response = self
            .http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .with_context(|| format!("scraping {name}"))?;
        ensure!(
            response.status().is_success(),
            "{name} /metrics answered {}",
            response.status()
        );
        Ok(response.text().await?)
    }

    /// One counter of a service (summed over the samples whose labels include `labels`).
    pub async fn metric(
        &self,
        service: Service,
        name: &str,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<f64> {
        Ok(crate::metrics::sample_sum(
            &self.metrics(service).await?,
            name,
            labels,
        ))
    }

    /// The process id of a running service, to kill it from outside as a user would.
    pub fn pid(&self, service: Service) -> Option<u32> {
        self.children.pid(service.name())
    }

    /// The process id of the admin API.
    pub fn admin_api_pid(&self) -> Option<u32> {
        self.children.pid("admin-api")
    }

    /// Kills the service with SIGKILL: a crash, in the middle of whatever it was doing.
    pub fn kill(&mut self, service: Service) -> anyhow::Result<()> {
        self.children.kill(service.name())
    }

    /// Starts a killed service again, same settings and port, and waits until it is ready.
    pub async fn restart(&mut self, service: Service) -> anyhow::Result<()> {
        let running = self.running(service)?.clone();
        self.children
            .start(&self.binaries, service.name(), &["serve"], &running.env)?;
        // A restart on a busy machine (the soak's, with builds beside it) may wait for a
        // broker that takes seconds to accept a connection: readiness gets two minutes.
        wait_ok_within(
            &self.http,
            &format!("http://127.0.0.1:{}/health/ready", running.port),
            &mut self.children,
            Duration::from_secs(120),
        )
        .await
        .with_context(|| format!("{} never became ready again", service.name()))
    }

    /// Peak resident memory of every running process of the pipeline (graph-sim included), MiB.
    pub fn peak_memory_mib(&self) -> Vec<(String, f64)> {
        self.children
            .peak_memory_kib()
            .into_iter()
            .map(|(name, kib)| (name, kib as f64 / 1024.0))
            .collect()
    }

    /// Peak resident memory of one process of the pipeline (`reconciler`, `admin-api`, …), MiB
    /// to one decimal; 0 when it is not running.
    pub fn peak_mib_of(&self, name: &str) -> f64 {
        self.peak_memory_mib()
            .into_iter()
            .find(|(process, _)| process == name)
            .map_or(0.0, |(_, mib)| (mib * 10.0).round() / 10.0)
    }

    /// Starts again every service that exited on its own (see [`Children::supervise`]); fails
    /// if one cannot be restarted or keeps exiting.
    pub fn supervise(&mut self) -> anyhow::Result<Vec<String>> {
        self.children.supervise()
    }

    /// How often each process was started again after exiting on its own.
    pub fn restarts(&self) -> std::collections::BTreeMap<String, usize> {
        self.children.restarts()
    }

    /// The service's base URL (`http://127.0.0.1:{port}`).
    pub fn service_url(&self, service: Service) -> anyhow::Result<String> {
        Ok(format!("http://127.0.0.1:{}", self.running(service)?.port))
    }

    fn running(&self, service: Service) -> anyhow::Result<&Running> {
        self.services
            .iter()
            .find(|r| r.service == service)
            .with_context(|| format!("{} was never started", service.name()))
    }

    /// Stops every process (SIGTERM, then SIGKILL), closes the pool and, when configured,
    /// deletes the run's queues and its database. In a shared database the run's cards stay
    /// for a look, but its tenant's Graph connection goes: its graph-sim is gone, and every
    /// delta-worker on that database would otherwise keep polling the tenant and failing.
    pub async fn stop(mut self) {
        self.children.stop_all();
        if matches!(self.config.database, Database::Shared(_))
            && let Err(error) = cardsync_store::connections::remove(&self.pool, self.tenant).await
        {
            eprintln!(
                "could not remove the Graph connection of tenant {}: {error:#}",
                self.tenant
            );
        }
        self.pool.close().await;
        if self.config.delete_topology
            && let Err(error) = delete_topology(&self.config.amqp_url, &self.topology).await
        {
            eprintln!(
                "could not delete the topology {}: {error:#}",
                self.topology.prefix()
            );
        }
        if let Some((server_url, name)) = self.fresh_database.take()
            && let Err(error) = drop_database(&server_url, &name).await
        {
            eprintln!("could not drop database {name}: {error:#}");
        }
    }
}

async fn delete_topology(amqp_url: &str, topology: &Topology) -> anyhow::Result<()> {
    let connection =
        lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let outcome = cardsync_bus::delete(&channel, topology).await;
    let _ = connection.close(0, "done".into()).await;
    Ok(outcome?)
}

/// `url` with its database (the path after the host) replaced by `database`; the query
/// (connection options) is kept.
fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority = base
        .split_once("://")
        .map(|(_, rest)| rest)
        .context("the PostgreSQL URL has no scheme")?;
    let server = match authority.split_once('/') {
        Some((host, _)) => &base[..base.len() - authority.len() + host.len()],
        None => base,
    };
    Ok(match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    })
}

async fn create_database(server_url: &str, name: &str) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(server_url)
        .await
        .context("connecting to PostgreSQL to create the run's database")?;
    // `name` is built from the label and a hex run id, never from outside input.
    let created = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&pool)
        .await;
    pool.close().await;
    created.with_context(|| format!("creating database {name}"))?;
    Ok(())
}

async fn drop_database(server_url: &str, name: &str) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(server_url)
        .await?;
    let dropped = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&pool)
    .await;
    pool.close().await;
    dropped?;
    Ok(())
}

pub(crate) async fn wait_ok(
    http: &reqwest::Client,
    url: &str,
    children: &mut Children,
) -> anyhow::Result<()> {
    wait_ok_within(http, url, children, Duration::from_secs(30)).await
}

/// Waits until `url` answers 2xx, supervising the children, at most `within`.
async fn wait_ok_within(
    http: &reqwest::Client,
    url: &str,
    children: &mut Children,
    within: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        children.supervise()?;
        if let Ok(response) = http.get(url).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        if started.elapsed() > within {
            bail!("{url} not ready after {} s", within.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced_and_its_options_kept() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/cardsync_test", "run_1").unwrap(),
            "postgres://postgres@127.0.0.1:5432/run_1"
        );
        assert_eq!(
            with_database("postgres://u:p@db:5432/x?sslmode=disable", "run_1").unwrap(),
            "postgres://u:p@db:5432/run_1?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://db", "run_1").unwrap(),
            "postgres://db/run_1"
        );
    }
}
