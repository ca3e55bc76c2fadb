//! Injecting the soak's faults into a running pipeline, each one until it heals: services killed
//! with SIGKILL and started again, RabbitMQ stopped and started (`rabbitmqctl`), PostgreSQL
//! restarted (`pg_ctlcluster`), the run's Redis database flushed, graph-sim's fault rules (429,
//! 503) and delivery profile (lost, doubled, delayed, reordered notifications).
//!
//! RabbitMQ and PostgreSQL are the machine's own servers: whatever happens to the soak, a broker
//! it stopped is started again ([`Injector::heal_all`]).

use super::schedule::{Fault, Link, Moment};
use super::stream::{self, Shared};
use crate::changes;
use crate::pipeline::{Pipeline, Service};
use anyhow::{Context as _, bail};
use cardsync_proto as proto;
use cardsync_store::runs::{self, NewRun};
use rand::seq::IndexedRandom as _;
use rand::{Rng as _, SeedableRng as _};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Users a mid-batch burst changes at once.
const BURST: usize = 200;

/// What injecting a fault did.
#[derive(Debug)]
pub struct Injected {
    /// When the fault ended (the service ready again, the broker up, the rule removed).
    pub healed: Instant,
    /// `changedAtUnixMs`-comparable time of the heal.
    pub healed_ms: i64,
    /// A reconcile run asked for just before a kill, to be checked at the end.
    pub reconcile_run: Option<(Uuid, Uuid)>,
}

/// Which of the machine's servers the broker and database faults stop: by default the ones every
/// test uses (RabbitMQ's default node, PostgreSQL's `main` cluster). A soak that must not disturb
/// other work on the machine runs against servers of its own (`make soak-servers`).
#[derive(Debug, Clone, Default)]
pub struct Servers {
    /// The RabbitMQ node `rabbitmqctl -n` addresses; `None` is the default node.
    pub rabbitmq_node: Option<String>,
    /// The Debian PostgreSQL cluster (`pg_ctlcluster VERSION NAME`); `None` is `main`.
    pub postgres_cluster: Option<String>,
}

impl Servers {
    fn rabbitmqctl(&self, args: &[&str]) -> Vec<String> {
        let node = self
            .rabbitmq_node
            .iter()
            .flat_map(|node| ["-n".to_owned(), node.clone()]);
        node.chain(args.iter().map(|arg| (*arg).to_owned()))
            .collect()
    }

    fn postgres_cluster(&self) -> String {
        self.postgres_cluster
            .clone()
            .unwrap_or_else(|| "main".to_owned())
    }
}

/// Injects faults; remembers what it must undo.
#[derive(Debug)]
pub struct Injector {
    redis_url: String,
    servers: Servers,
    broker_stopped: bool,
    /// The nftables table of the partition in force, if one is.
    partition: Option<String>,
    rng: rand::rngs::StdRng,
}

fn run_command(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed ({}): {}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

async fn blocking(program: &'static str, args: Vec<String>) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_command(program, &args)
    })
    .await?
}

/// The newest PostgreSQL cluster version under `/etc/postgresql` (Debian's layout).
fn postgres_version() -> anyhow::Result<String> {
    let mut versions: Vec<(u32, String)> = std::fs::read_dir("/etc/postgresql")
        .context("no /etc/postgresql: PostgreSQL is not Debian's cluster here")?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.parse::<u32>().ok().map(|n| (n, name))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, name)| name)
        .context("no PostgreSQL cluster under /etc/postgresql")
}

/// Drops every TCP packet to local `port` (loopback traffic passes the output hook): an
/// nftables table of the run's own, so nothing else on the machine is touched.
async fn partition(table: &str, port: u16) -> anyhow::Result<()> {
    blocking("nft", vec![format!("add table inet {table}")]).await?;
    blocking(
        "nft",
        vec![format!(
            "add chain inet {table} out {{ type filter hook output priority 0; policy accept; }}"
        )],
    )
    .await?;
    blocking(
        "nft",
        vec![format!("add rule inet {table} out tcp dport {port} drop")],
    )
    .await
}

/// Whether `nft` can be run here (the `network` faults need it, and root).
pub fn nft_available() -> bool {
    Command::new("nft")
        .args(["list", "tables"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// A graph-sim control call (idempotent: it replaces the rules or the profile), tried up to
/// three times: on a busy machine a pooled connection graph-sim has just closed fails the first
/// try ("connection closed before message completed"), which ended a 20-minute soak once.
async fn control_call<F, Fut, T, E>(call: F) -> anyhow::Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(answer) => return Ok(answer),
            Err(error) if attempt >= 3 => {
                return Err(anyhow::Error::new(error).context("graph-sim's control API, 3 tries"));
            }
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Wall-clock ms, as graph-sim stamps changes.
fn now_ms() -> i64 {
    changes::now_ms()
}

impl Injector {
    /// An injector flushing `redis_url`'s database; `seed` draws the bursts' users.
    pub fn new(redis_url: &str, seed: u64, servers: Servers) -> Self {
        Self {
            redis_url: redis_url.to_owned(),
            servers,
            broker_stopped: false,
            partition: None,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }

    /// Injects `fault` and waits until it heals. `changes` records a burst's changes.
    pub async fn inject(
        &mut self,
        pipeline: &mut Pipeline,
        fault: &Fault,
        changes: &Shared,
    ) -> anyhow::Result<Injected> {
        let mut reconcile_run = None;
        match fault {
            Fault::Kill {
                service,
                moment,
                down,
                tenant,
            } => {
                let tenant = pipeline.tenants[tenant % pipeline.tenants.len()];
                match moment {
                    Moment::Anytime | Moment::InitialSync { .. } => {}
                    Moment::MidBatch { after } => {
                        self.burst(pipeline, tenant, changes.clone()).await?;
                        tokio::time::sleep(*after).await;
                    }
                    Moment::MidSync { after } => {
                        if *service == Service::Reconciler {
                            let run_id = Uuid::now_v7();
                            runs::create(
                                &pipeline.pool,
                                &NewRun {
                                    run_id,
                                    tenant_id: tenant,
                                    kind: "reconcile".into(),
                                    cause: "reconcile".into(),
                                    started_by: "soak".into(),
                                    target: None,
                                },
                            )
                            .await?;
                            pipeline.request_reconcile(tenant, run_id).await?;
                            reconcile_run = Some((tenant, run_id));
                        } else {
                            pipeline
                                .request_sync_for(tenant, proto::sync_request::Depth::Full)
                                .await?;
                        }
                        tokio::time::sleep(*after).await;
                    }
                }
                pipeline.kill(*service)?;
                tokio::time::sleep(*down).await;
                pipeline.restart(*service).await?;
            }
            Fault::Broker { down } => {
                self.broker_stopped = true;
                blocking("rabbitmqctl", self.servers.rabbitmqctl(&["stop_app"])).await?;
                tokio::time::sleep(*down).await;
                self.start_broker().await?;
            }
            Fault::Postgres => {
                let version = postgres_version()?;
                blocking(
                    "pg_ctlcluster",
                    vec![
                        "--skip-systemctl-redirect".into(),
                        version,
                        self.servers.postgres_cluster(),
                        "restart".into(),
                        "-m".into(),
                        "fast".into(),
                    ],
                )
                .await?;
            }
            Fault::Redis => {
                let client = redis::Client::open(self.redis_url.as_str()).context("redis url")?;
                let mut redis = client
                    .get_multiplexed_async_connection()
                    .await
                    .context("connecting to redis")?;
                let () = redis::cmd("FLUSHDB")
                    .query_async(&mut redis)
                    .await
                    .context("FLUSHDB")?;
            }
            Fault::Throttle { lasting } => {
                self.graph_rules(pipeline, "throttle", *lasting).await?;
            }
            Fault::GraphErrors { lasting } => {
                self.graph_rules(pipeline, "unavailable", *lasting).await?;
            }
            Fault::Lose { percent, lasting } => {
                let profile = json!({"lossProbability": f64::from(*percent) / 100.0, "seed": self.rng.random::<u32>()});
                self.delivery(pipeline, profile, *lasting).await?;
            }
            Fault::Duplicate { percent, lasting } => {
                let profile = json!({"duplicateProbability": f64::from(*percent) / 100.0, "seed": self.rng.random::<u32>()});
                self.delivery(pipeline, profile, *lasting).await?;
            }
            Fault::Delay { by, lasting } => {
                let profile = json!({"delayMs": u64::try_from(by.as_millis()).unwrap_or(u64::MAX)});
                self.delivery(pipeline, profile, *lasting).await?;
            }
            Fault::Reorder { lasting } => {
                self.delivery(pipeline, json!({"reorder": true}), *lasting)
                    .await?;
            }
            Fault::Partition { link, lasting } => {
                let url = match link {
                    Link::Graph => pipeline.graph_url.clone(),
                    Link::Webhook => pipeline.service_url(Service::Webhook)?,
                };
                let port = url
                    .rsplit(':')
                    .next()
                    .and_then(|port| port.parse::<u16>().ok())
                    .with_context(|| format!("no port in {url}"))?;
                let table = format!("cardsync_soak_{}", pipeline.config.run_id);
                self.partition = Some(table.clone());
                partition(&table, port).await?;
                tokio::time::sleep(*lasting).await;
                self.heal_partition().await?;
            }
        }
        Ok(Injected {
            healed: Instant::now(),
            healed_ms: now_ms(),
            reconcile_run,
        })
    }

    /// Title changes for [`BURST`] random active users of `tenant`, started in a task of their
    /// own (the kill lands while they are being sent and handled).
    async fn burst(
        &mut self,
        pipeline: &Pipeline,
        tenant: Uuid,
        changes: Shared,
    ) -> anyhow::Result<()> {
        let snapshot = pipeline.control.snapshot(&tenant.to_string()).await?;
        let users: Vec<String> = snapshot["directory"]["users"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|u| {
                u["lifecycleState"].as_str().is_none_or(|s| s == "active")
                    && u["accountEnabled"] != json!(false)
            })
            .filter_map(|u| u["id"].as_str().map(str::to_owned))
            .collect();
        let chosen: Vec<String> = users
            .choose_multiple(&mut self.rng, BURST.min(users.len()))
            .cloned()
            .collect();
        let control = pipeline.control.clone();
        let tenant_text = tenant.to_string();
        let titles: Vec<String> = (0..chosen.len())
            .map(|n| format!("Burst {} #{n}", self.rng.random::<u32>()))
            .collect();
        // Each change on its own: a user the stream deletes meanwhile fails alone (404), and
        // every change made is recorded.
        tokio::spawn(async move {
            let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
            let mut tasks = tokio::task::JoinSet::new();
            for (user, title) in chosen.into_iter().zip(titles) {
                let Ok(permit) = gate.clone().acquire_owned().await else {
                    break;
                };
                let (control, tenant_text, changes) =
                    (control.clone(), tenant_text.clone(), changes.clone());
                tasks.spawn(async move {
                    let _permit = permit;
                    let answer = control
                        .update_user(&tenant_text, &user, json!({"jobTitle": title}))
                        .await;
                    let mut changes = stream::lock(&changes);
                    match answer {
                        Ok(answer) => changes.record(
                            tenant,
                            &[changes::Applied {
                                kind: "title",
                                changed_at_ms: answer["change"]["changedAtUnixMs"]
                                    .as_i64()
                                    .unwrap_or_else(now_ms),
                                user,
                                visible: true,
                            }],
                        ),
                        Err(_) => changes.failures += 1,
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
        });
        Ok(())
    }

    async fn graph_rules(
        &self,
        pipeline: &Pipeline,
        kind: &str,
        lasting: Duration,
    ) -> anyhow::Result<()> {
        let rules = json!([{"endpoint": "*", "kind": kind, "retryAfter": "1"}]);
        control_call(|| pipeline.control.set_faults(rules.clone())).await?;
        tokio::time::sleep(lasting).await;
        control_call(|| pipeline.control.set_faults(json!([]))).await?;
        Ok(())
    }

    async fn delivery(
        &self,
        pipeline: &Pipeline,
        profile: serde_json::Value,
        lasting: Duration,
    ) -> anyhow::Result<()> {
        control_call(|| pipeline.control.set_delivery(profile.clone())).await?;
        tokio::time::sleep(lasting).await;
        control_call(|| pipeline.control.set_delivery(json!({}))).await?;
        Ok(())
    }

    async fn heal_partition(&mut self) -> anyhow::Result<()> {
        if let Some(table) = &self.partition {
            blocking("nft", vec![format!("delete table inet {table}")]).await?;
            self.partition = None;
        }
        Ok(())
    }

    async fn start_broker(&mut self) -> anyhow::Result<()> {
        blocking("rabbitmqctl", self.servers.rabbitmqctl(&["start_app"])).await?;
        blocking(
            "rabbitmqctl",
            self.servers
                .rabbitmqctl(&["await_startup", "--timeout", "120"]),
        )
        .await?;
        self.broker_stopped = false;
        Ok(())
    }

    /// Undoes whatever fault is still on: the broker started again, graph-sim's rules and
    /// delivery profile back to normal. Called however the soak ends.
    pub async fn heal_all(&mut self, pipeline: Option<&Pipeline>) {
        if let Err(error) = self.heal_partition().await {
            eprintln!("removing the network partition failed: {error:#}");
        }
        if self.broker_stopped {
            let started = Instant::now();
            while let Err(error) = self.start_broker().await {
                eprintln!("starting RabbitMQ again failed: {error:#}");
                if started.elapsed() > Duration::from_secs(120) {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        if let Some(pipeline) = pipeline {
            let _ = control_call(|| pipeline.control.set_faults(json!([]))).await;
            let _ = control_call(|| pipeline.control.set_delivery(json!({}))).await;
        }
    }
}
