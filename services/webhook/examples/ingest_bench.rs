//! `make bench`: how many Graph notifications per second the webhook turns into confirmed
//! RabbitMQ messages, how fast it answers at a steady 1,000 requests/s, and how that compares
//! with a minimal lapin publisher against the same broker, all in one run (about 90 s).
//!
//! - The webhook runs as a child process of the `webhook` binary of this build profile (built
//!   here if needed), configured exactly as deployed apart from its listen port, topology prefix
//!   and database: its own runtime, actix workers, telemetry and metrics. That keeps the load
//!   generator's runtime out of its way and lets the CPU split between webhook, RabbitMQ and load
//!   generator be read from `/proc` per phase, which is what explains a missed target on 2 cores.
//! - Throughput: per batch size, `--concurrency` connections post back to back (closed loop) for
//!   `--seconds`; only `202` counts as accepted. Right after, the raw publisher: one connection,
//!   as many confirm channels as the webhook's publisher pool (`bus.publish_channels`), each
//!   publishing a window of the same size (pipelined) and awaiting its confirms, with the very
//!   bytes and properties the webhook published, to the same exchange and quorum queue. The queue
//!   is purged between phases so each starts from empty.
//! - Latency: open loop at `--rate` requests/s of `--latency-batch` notifications; each time is
//!   measured from when the request was due, so a stall shows up instead of pausing the clock.
//! - Everything it created (queues, exchanges, the subscription row) is removed at the end.
//!
//! `cargo run --release --locked -p webhook --example ingest_bench [-- --help]`

use anyhow::{Context as _, bail, ensure};
use bytes::Bytes;
use cardsync_bench::{
    CpuCores, CpuProbe, CpuTimes, ServiceProcess, broker_process_ids, describe_machine, free_port,
    load_average, load_before_run, parse_setting, progress, round2, service_binary, service_env,
    verdict, warn_about_neighbours,
};
use cardsync_bus::lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueuePurgeOptions,
};
use cardsync_bus::lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use cardsync_bus::{Topology, names};
use cardsync_config::Sources;
use cardsync_store::subscriptions::{self, ClientStateHash, Subscription};
use clap::Parser;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use uuid::Uuid;
use webhook::{NOTIFICATIONS_PATH, Settings};

const DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/cardsync_test";
const ADMIN_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Distinct bodies per batch size, so the webhook does not see one body over and over.
const BODIES_PER_BATCH: usize = 64;
/// Open-loop requests allowed in flight before the generator itself waits (the wait is still
/// counted in the latency, because times run from when a request was due).
const OPEN_LOOP_MAX_IN_FLIGHT: usize = 512;
/// How long the webhook may take to drain and exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

// Targets from issue 2, section 6.
const TARGET_NOTIFICATIONS_PER_S: f64 = 10_000.0;
const TARGET_P99_MS: f64 = 50.0;
const TARGET_RATIO: f64 = 0.7;
/// MB other processes may write to disk during a phase before the figures are flagged.
const NOISY_NEIGHBOUR_WRITTEN_MB: f64 = 50.0;

#[derive(Debug, Parser)]
#[command(
    about = "Webhook ingest benchmark: throughput, latency at a fixed rate, raw broker ratio"
)]
struct Args {
    /// Batch sizes (notifications per POST) of the throughput phases.
    #[arg(long, value_delimiter = ',', default_value = "10,50,100")]
    batches: Vec<usize>,
    /// Concurrent connections of the closed-loop throughput phases.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds per throughput phase (webhook and raw each).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Requests per second of the latency phase.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Notifications per request of the latency phase.
    #[arg(long, default_value_t = 10)]
    latency_batch: usize,
    /// Seconds of the latency phase.
    #[arg(long, default_value_t = 10)]
    latency_seconds: u64,
    /// Confirm channels of the raw publisher (default: the webhook's `bus.publish_channels`).
    #[arg(long)]
    raw_channels: Option<usize>,
    /// Extra `CARDSYNC__…=value` settings for the webhook, e.g. `CARDSYNC__BUS__PUBLISH_CHANNELS=32`.
    #[arg(long = "set", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let args = Args::parse();
    ensure!(
        !args.batches.is_empty() && args.batches.iter().all(|b| *b > 0),
        "--batches needs sizes > 0"
    );
    ensure!(args.concurrency > 0 && args.rate > 0.0 && args.latency_batch > 0);
    let _ = rustls::crypto::ring::default_provider().install_default();

    let load_before = load_before_run();

    // Settings the child will run with; loading them here validates them and tells us its
    // publisher pool size and retry tiers (for an exact teardown).
    let prefix = format!("bench.{}.", &Uuid::new_v4().simple().to_string()[..8]);
    let port = free_port()?;
    let mut env = service_env(port, &prefix, DATABASE_URL, AMQP_URL);
    env.extend(args.settings.iter().cloned());
    let settings = Settings::load(&Sources {
        file: None,
        env: Some(env.clone()),
    })
    .context("the webhook settings of the benchmark are invalid")?;
    let topology = Topology::cardsync(&prefix).with_retry_delays(&settings.bus.retry_delays);
    let raw_channels = args.raw_channels.unwrap_or(settings.bus.publish_channels);

    // Nothing is created until every prerequisite is there.
    let admin = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .context("RabbitMQ must run on 127.0.0.1:5672: run `make services`")?;
    let admin_channel = admin.create_channel().await?;
    let binary = service_binary("webhook", "ingest_bench")?;
    let pool = test_database().await?;

    let tenant = Uuid::new_v4();
    let client_state = format!("bench-{}", Uuid::new_v4().simple());
    let subscription = Subscription {
        id: Uuid::new_v4(),
        tenant_id: tenant,
        resource: "/users".into(),
        client_state: ClientStateHash::of(&client_state),
        expires_at: time::OffsetDateTime::now_utc() + time::Duration::days(2),
    };
    subscriptions::register(&pool, &subscription)
        .await
        .context("registering the benchmark subscription")?;

    progress(started, "subscription registered; declaring the topology");

    // From here on, whatever happens ends in the teardown below.
    let log = std::env::temp_dir().join(format!("ingest_bench-{prefix}log"));
    let outcome = async {
        // Declared here, without a deadline: 30 quorum queues can take longer than the
        // webhook's 1 s connect_timeout on a busy 2-core machine; its own declaration is then
        // a quick no-op.
        cardsync_bus::declare(&admin_channel, &topology)
            .await
            .context("declaring the benchmark topology")?;
        progress(
            started,
            format_args!("starting {} (log: {})", binary.display(), log.display()),
        );
        let mut webhook = ServiceProcess::spawn(&binary, &env, &log)?;
        let bench = Bench {
            args: &args,
            base: format!("http://127.0.0.1:{port}"),
            subscription: subscription.id,
            tenant,
            client_state,
            webhook_pid: webhook.pid(),
            queue: topology.name(names::DELTA_WORKER_CHANGES),
            exchange: topology.name(names::GRAPH),
            raw_channels,
            admin: &admin_channel,
            started,
        };
        let result = bench.run(load_before, &mut webhook).await;
        let exit = webhook.stop(STOP_GRACE);
        if result.is_err() {
            println!("webhook exit: {exit:?}; its log: {}", log.display());
        }
        result
    }
    .await;

    progress(started, "deleting the topology");
    let deleted = cardsync_bus::delete(&admin_channel, &topology).await;
    let removed = subscriptions::remove(&pool, subscription.id).await;
    let _ = admin.close(200, "bench done".into()).await;
    let report = outcome?;
    deleted.context("deleting the benchmark topology")?;
    removed.context("removing the benchmark subscription")?;
    let _ = std::fs::remove_file(&log);
    report.print();
    Ok(())
}

/// The test database, created and migrated if needed.
async fn test_database() -> anyhow::Result<sqlx::PgPool> {
    let admin = sqlx::PgPool::connect(ADMIN_DATABASE_URL)
        .await
        .context("PostgreSQL must run on 127.0.0.1:5432: run `make services`")?;
    let exists: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = 'cardsync_test'")
            .fetch_optional(&admin)
            .await?;
    if exists.is_none() {
        // Another process may create it at the same moment; connecting below is the real check.
        let _ = sqlx::query("CREATE DATABASE cardsync_test")
            .execute(&admin)
            .await;
    }
    admin.close().await;

    // Migrate on a pool of its own, closed right after: sqlx keeps its session-level advisory
    // lock when a run fails validation, and a pooled connection holding it would block the
    // webhook's own start-up migration forever.
    let migrating = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(DATABASE_URL)
        .await
        .context("connecting to cardsync_test")?;
    if let Err(error) = cardsync_store::migrate(&migrating).await {
        // The test database is shared: a branch with newer migrations may have applied them
        // ("previously applied but missing"). The registry table is all we need; registering
        // the subscription is the real check.
        println!(
            "warning: migrations not applied to cardsync_test: {}",
            cardsync_telemetry::error_chain(&error)
        );
    }
    migrating.close().await;
    let pool = sqlx::PgPool::connect(DATABASE_URL)
        .await
        .context("connecting to cardsync_test")?;
    Ok(pool)
}

/// Everything the phases share.
struct Bench<'a> {
    args: &'a Args,
    base: String,
    subscription: Uuid,
    tenant: Uuid,
    client_state: String,
    webhook_pid: u32,
    queue: String,
    exchange: String,
    raw_channels: usize,
    admin: &'a cardsync_bus::lapin::Channel,
    /// When the process started, for the run time in the report.
    started: Instant,
}

impl<'a> Bench<'a> {
    async fn run(
        &self,
        load_before: Vec<f64>,
        webhook: &mut ServiceProcess,
    ) -> anyhow::Result<Report<'a>> {
        let args = self.args;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .http1_only()
            .build()?;
        self.wait_ready(&client, webhook).await?;
        let cpu = UsageProbe::new(self.webhook_pid);
        progress(
            self.started,
            format_args!(
                "webhook ready (pid {}), RabbitMQ pid(s) {:?}, {} CPUs, load {:?}",
                self.webhook_pid,
                cpu.broker(),
                cpu.cpu.cpus(),
                load_before
            ),
        );

        // Warm-up: connections, publisher channels, registry cache. Then take one message the
        // webhook published, as the raw publisher's template.
        let warm = self.target(&client, 50);
        closed_loop(&warm, args.concurrency, Duration::from_secs(2)).await;
        let template = self
            .admin
            .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await?
            .context("the warm-up published nothing: is the subscription registered?")?
            .delivery;
        self.purge().await?;
        let raw_connection = Connection::connect(AMQP_URL, ConnectionProperties::default()).await?;
        let raw = RawTemplate {
            exchange: self.exchange.clone(),
            routing_key: template.routing_key.to_string(),
            payload: template.data.clone(),
            properties: template.properties.clone(),
        };

        // Whatever other processes left dirty in the page cache (a build's artefacts, say) is
        // written now rather than in bursts during a phase, where RabbitMQ's fsyncs wait for it.
        let _ = Command::new("sync").status();

        // Latency first, from an empty queue, before the throughput phases leave the broker
        // busy compacting the logs of the hundreds of thousands of messages they purge.
        let target = self.target(&client, args.latency_batch);
        let probe = cpu.snapshot();
        let latency = open_loop(
            &target,
            args.rate,
            Duration::from_secs(args.latency_seconds),
        )
        .await;
        let latency_cpu = cpu.since(&probe);
        self.purge().await?;
        progress(
            self.started,
            format_args!(
                "latency: {:.0} requests/s of {} done",
                args.rate, args.latency_batch
            ),
        );

        let seconds = Duration::from_secs(args.seconds);
        let mut rows = Vec::new();
        for &batch in &args.batches {
            let target = self.target(&client, batch);
            let probe = cpu.snapshot();
            let http = closed_loop(&target, args.concurrency, seconds).await;
            let http_cpu = cpu.since(&probe);
            self.purge().await?;
            progress(self.started, format_args!("batch {batch:>3}: webhook done"));
            let probe = cpu.snapshot();
            let broker =
                raw_publish(&raw_connection, &raw, batch, self.raw_channels, seconds).await?;
            let raw_cpu = cpu.since(&probe);
            self.purge().await?;
            let row = ThroughputRow {
                batch,
                http,
                http_cpu,
                raw: broker,
                raw_cpu,
            };
            progress(self.started, row.progress());
            rows.push(row);
        }
        let _ = raw_connection.close(200, "bench done".into()).await;

        let report = Report {
            args,
            raw_channels: self.raw_channels,
            load_before,
            load_after: load_average(),
            rows,
            latency,
            latency_cpu,
            started: self.started,
        };
        Ok(report)
    }

    fn target(&self, client: &reqwest::Client, batch: usize) -> Target {
        let bodies = (0..BODIES_PER_BATCH)
            .map(|_| {
                let value: Vec<Value> = (0..batch)
                    .map(|_| {
                        user_change(
                            self.subscription,
                            self.tenant,
                            &self.client_state,
                            &Uuid::new_v4().to_string(),
                        )
                    })
                    .collect();
                Bytes::from(json!({ "value": value }).to_string())
            })
            .collect();
        Target {
            client: client.clone(),
            url: format!("{}{NOTIFICATIONS_PATH}", self.base),
            bodies: Arc::new(bodies),
            batch,
        }
    }

    async fn wait_ready(
        &self,
        client: &reqwest::Client,
        webhook: &mut ServiceProcess,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(response) = client
                .get(format!("{}/health/ready", self.base))
                .send()
                .await
                && response.status() == 200
            {
                return Ok(());
            }
            ensure!(!webhook.has_exited(), "the webhook exited during start-up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("the webhook did not become ready within 30 s: run `make services`")
    }

    async fn purge(&self) -> anyhow::Result<()> {
        self.admin
            .queue_purge(self.queue.as_str().into(), QueuePurgeOptions::default())
            .await
            .context("purging the benchmark queue")?;
        Ok(())
    }
}

/// A Graph-shaped user change notification (the shape of `tests/api/helpers.rs`).
fn user_change(subscription: Uuid, tenant: Uuid, client_state: &str, user: &str) -> Value {
    json!({
        "subscriptionId": subscription,
        "subscriptionExpirationDateTime": "2026-11-24T18:23:45.9356913Z",
        "changeType": "updated",
        "resource": format!("Users/{user}"),
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.User",
            "@odata.id": format!("Users/{user}"),
            "id": user,
            "organizationId": tenant,
            "sequenceNumber": 1
        },
        "clientState": client_state,
        "tenantId": tenant
    })
}

/// Where and what the load generator posts.
#[derive(Clone)]
struct Target {
    client: reqwest::Client,
    url: String,
    bodies: Arc<Vec<Bytes>>,
    batch: usize,
}

impl Target {
    async fn post(&self, sequence: usize) -> Result<u16, reqwest::Error> {
        let body = self.bodies[sequence % self.bodies.len()].clone();
        let response = self
            .client
            .post(&self.url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            )
            .body(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        // Read the (empty) body to the end so the connection goes back to the pool.
        response.bytes().await?;
        Ok(status)
    }
}

/// Outcomes of one HTTP phase.
#[derive(Debug, Default)]
struct HttpPhase {
    /// Response times in microseconds.
    latencies_us: Vec<u32>,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    accepted: u64,
    elapsed: Duration,
}

impl HttpPhase {
    fn record(&mut self, outcome: Result<u16, reqwest::Error>, took: Duration, batch: usize) {
        self.latencies_us
            .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        match outcome {
            Ok(status) => {
                *self.statuses.entry(status).or_default() += 1;
                if status == 202 {
                    self.accepted += batch as u64;
                }
            }
            Err(_) => self.errors += 1,
        }
    }

    fn merge(&mut self, other: HttpPhase) {
        self.latencies_us.extend(other.latencies_us);
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        self.errors += other.errors;
        self.accepted += other.accepted;
    }

    fn requests(&self) -> u64 {
        self.latencies_us.len() as u64
    }

    fn per_second(&self, count: u64) -> f64 {
        count as f64 / self.elapsed.as_secs_f64()
    }

    fn non_202(&self) -> BTreeMap<String, u64> {
        let mut other: BTreeMap<String, u64> = self
            .statuses
            .iter()
            .filter(|(status, _)| **status != 202)
            .map(|(status, count)| (status.to_string(), *count))
            .collect();
        if self.errors > 0 {
            other.insert("transport_error".into(), self.errors);
        }
        other
    }

    fn percentiles(&mut self) -> Percentiles {
        Percentiles::of(&mut self.latencies_us)
    }
}

/// p50/p99/max in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
struct Percentiles {
    p50: f64,
    p99: f64,
    max: f64,
}

impl Percentiles {
    fn of(samples_us: &mut [u32]) -> Self {
        if samples_us.is_empty() {
            return Self::default();
        }
        samples_us.sort_unstable();
        // Nearest rank: the smallest sample with at least q of all samples at or below it.
        let rank = |q: f64| {
            let index = (q * samples_us.len() as f64).ceil() as usize;
            f64::from(samples_us[index.clamp(1, samples_us.len()) - 1]) / 1000.0
        };
        Self {
            p50: rank(0.50),
            p99: rank(0.99),
            max: rank(1.0),
        }
    }

    fn json(&self) -> Value {
        json!({ "p50_ms": round2(self.p50), "p99_ms": round2(self.p99), "max_ms": round2(self.max) })
    }
}

/// `concurrency` connections, each posting as soon as its previous answer arrived, until
/// `duration` has passed; the elapsed time includes the last answers.
async fn closed_loop(target: &Target, concurrency: usize, duration: Duration) -> HttpPhase {
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = JoinSet::new();
    for worker in 0..concurrency {
        let target = target.clone();
        workers.spawn(async move {
            let mut phase = HttpPhase::default();
            let mut sequence = worker;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let outcome = target.post(sequence).await;
                phase.record(outcome, sent.elapsed(), target.batch);
                sequence += concurrency;
            }
            phase
        });
    }
    let mut total = HttpPhase::default();
    while let Some(done) = workers.join_next().await {
        if let Ok(phase) = done {
            total.merge(phase);
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// Requests sent on a fixed schedule whatever the answers do; each time runs from when the
/// request was due (no coordinated omission).
async fn open_loop(target: &Target, rate: f64, duration: Duration) -> HttpPhase {
    let period = Duration::from_secs_f64(1.0 / rate);
    let count = (rate * duration.as_secs_f64()).round() as usize;
    let shared = Arc::new(Mutex::new(HttpPhase::default()));
    let in_flight = Arc::new(Semaphore::new(OPEN_LOOP_MAX_IN_FLIGHT));
    let started = Instant::now();
    for sequence in 0..count {
        // Absolute due times: a late wake-up sends the overdue requests at once, keeping the rate.
        let due = started + period.mul_f64(sequence as f64);
        tokio::time::sleep_until(due).await;
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let (target, shared) = (target.clone(), shared.clone());
        tokio::spawn(async move {
            let outcome = target.post(sequence).await;
            let took = due.elapsed();
            shared
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .record(outcome, took, target.batch);
            drop(permit);
        });
    }
    // Every request has finished once all permits are back.
    let all = u32::try_from(OPEN_LOOP_MAX_IN_FLIGHT).unwrap_or(u32::MAX);
    let _ = in_flight.acquire_many(all).await;
    let elapsed = started.elapsed();
    let mut phase = std::mem::take(
        &mut *shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    phase.elapsed = elapsed;
    phase
}

/// What the raw publisher sends: a message exactly as the webhook published it.
struct RawTemplate {
    exchange: String,
    routing_key: String,
    payload: Vec<u8>,
    properties: BasicProperties,
}

/// Outcomes of one raw publishing phase.
#[derive(Debug, Default)]
struct RawPhase {
    confirmed: u64,
    failed: u64,
    /// Publish-to-last-confirm time of each window, in microseconds.
    windows_us: Vec<u32>,
    elapsed: Duration,
}

impl RawPhase {
    fn per_second(&self) -> f64 {
        self.confirmed as f64 / self.elapsed.as_secs_f64()
    }
}

/// The minimal lapin publisher: one connection, `channels` confirm channels, each publishing a
/// window of `batch` messages (`mandatory`, pipelined) and then awaiting all of its confirms,
/// until `duration` has passed.
async fn raw_publish(
    connection: &Connection,
    template: &RawTemplate,
    batch: usize,
    channels: usize,
    duration: Duration,
) -> anyhow::Result<RawPhase> {
    let mut opened = Vec::with_capacity(channels);
    for _ in 0..channels {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        opened.push(channel);
    }
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = JoinSet::new();
    for channel in opened {
        let exchange = template.exchange.clone();
        let routing_key = template.routing_key.clone();
        let payload = template.payload.clone();
        let properties = template.properties.clone();
        workers.spawn(async move {
            let mut phase = RawPhase::default();
            let options = BasicPublishOptions {
                mandatory: true,
                immediate: false,
            };
            while Instant::now() < deadline {
                let window = Instant::now();
                let sends = (0..batch).map(|_| {
                    channel.basic_publish(
                        exchange.as_str().into(),
                        routing_key.as_str().into(),
                        options,
                        &payload,
                        properties.clone(),
                    )
                });
                let confirms = futures_util::future::try_join_all(sends).await?;
                for confirmation in futures_util::future::join_all(confirms).await {
                    match confirmation? {
                        Confirmation::Ack(None) => phase.confirmed += 1,
                        _ => phase.failed += 1,
                    }
                }
                phase
                    .windows_us
                    .push(u32::try_from(window.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
            let _ = channel.close(200, "bench done".into()).await;
            Ok::<_, cardsync_bus::lapin::Error>(phase)
        });
    }
    let mut total = RawPhase::default();
    while let Some(done) = workers.join_next().await {
        let phase = done??;
        total.confirmed += phase.confirmed;
        total.failed += phase.failed;
        total.windows_us.extend(phase.windows_us);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

/// CPU and disk use per phase: the webhook, RabbitMQ, this load generator and the rest.
struct UsageProbe {
    cpu: CpuProbe,
    /// The webhook, then RabbitMQ's VM(s): looked up once, as neither restarts during a run.
    watched: [Vec<u32>; 2],
}

/// Counters at one moment.
#[derive(Debug, Clone)]
struct Usage {
    at: Instant,
    disk: DiskCounters,
    broker_write_bytes: u64,
    cpu: CpuTimes<2>,
}

/// Cores used during a phase (each between 0 and the number of CPUs), and disk writes.
#[derive(Debug, Clone, Copy, Default)]
struct CpuSplit {
    webhook: f64,
    broker: f64,
    bench: f64,
    /// irq + softirq: mostly loopback TCP, which no process is charged for.
    interrupts: f64,
    /// Taken by the hypervisor.
    steal: f64,
    /// Every other process on the machine.
    other: f64,
    idle: f64,
    /// MB the machine wrote to its disks.
    disk_written_mb: f64,
    /// Of which RabbitMQ (its WAL and segment files).
    broker_written_mb: f64,
    /// Share of the phase the busiest disk had I/O in flight.
    disk_busy: f64,
}

impl UsageProbe {
    fn new(webhook: u32) -> Self {
        Self {
            cpu: CpuProbe::new(),
            watched: [vec![webhook], broker_process_ids()],
        }
    }

    fn broker(&self) -> &[u32] {
        &self.watched[1]
    }

    fn snapshot(&self) -> Usage {
        Usage {
            at: Instant::now(),
            disk: disk_counters(),
            broker_write_bytes: self
                .broker()
                .iter()
                .map(|pid| process_write_bytes(*pid))
                .sum(),
            cpu: self.cpu.snapshot(&self.watched),
        }
    }

    /// Use since `before`.
    fn since(&self, before: &Usage) -> CpuSplit {
        let now = self.snapshot();
        let Some(CpuCores {
            groups: [webhook, broker],
            bench,
            interrupts,
            steal,
            other,
            idle,
        }) = self.cpu.cores_between(&before.cpu, &now.cpu)
        else {
            return CpuSplit::default();
        };
        let wall_ms = now.at.duration_since(before.at).as_secs_f64() * 1000.0;
        let megabytes = |bytes: u64| bytes as f64 / 1_000_000.0;
        CpuSplit {
            disk_written_mb: megabytes(
                now.disk
                    .sectors_written
                    .saturating_sub(before.disk.sectors_written)
                    * 512,
            ),
            broker_written_mb: megabytes(
                now.broker_write_bytes
                    .saturating_sub(before.broker_write_bytes),
            ),
            disk_busy: if wall_ms > 0.0 {
                (now.disk.busy_ms.saturating_sub(before.disk.busy_ms) as f64 / wall_ms).min(1.0)
            } else {
                0.0
            },
            webhook,
            broker,
            bench,
            interrupts,
            steal,
            other,
            idle,
        }
    }
}

impl CpuSplit {
    /// What the machine wrote apart from RabbitMQ (filesystem journal included).
    fn other_written_mb(&self) -> f64 {
        (self.disk_written_mb - self.broker_written_mb).max(0.0)
    }

    fn json(&self) -> Value {
        json!({
            "webhook": round2(self.webhook),
            "rabbitmq": round2(self.broker),
            "load_generator": round2(self.bench),
            "irq_softirq": round2(self.interrupts),
            "steal": round2(self.steal),
            "other_processes": round2(self.other),
            "idle": round2(self.idle),
            "disk": {
                "written_mb": round2(self.disk_written_mb),
                "rabbitmq_written_mb": round2(self.broker_written_mb),
                "busy_pct": round2(self.disk_busy * 100.0),
            },
        })
    }

    fn short(&self) -> String {
        format!(
            "{:.2}/{:.2}/{:.2}/{:.2}/{:.2}/{:.2} d{:.0}%",
            self.webhook,
            self.broker,
            self.bench,
            self.interrupts + self.steal,
            self.other,
            self.idle,
            self.disk_busy * 100.0
        )
    }
}

/// Whole-disk I/O counters from `/proc/diskstats`.
#[derive(Debug, Clone, Copy, Default)]
struct DiskCounters {
    /// Sectors (512 bytes) written, summed over disks.
    sectors_written: u64,
    /// Milliseconds with I/O in flight, of the busiest disk.
    busy_ms: u64,
}

fn disk_counters() -> DiskCounters {
    let stats = std::fs::read_to_string("/proc/diskstats").unwrap_or_default();
    let mut counters = DiskCounters::default();
    for line in stats.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(name) = fields.get(2) else { continue };
        // Whole disks only (partitions would count twice); no RAM-backed devices.
        let virtual_device = ["loop", "ram", "zram"].iter().any(|p| name.starts_with(p));
        if virtual_device || !Path::new(&format!("/sys/block/{name}")).exists() {
            continue;
        }
        let field = |index: usize| {
            fields
                .get(index)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        counters.sectors_written += field(9);
        counters.busy_ms = counters.busy_ms.max(field(12));
    }
    counters
}

/// Bytes `pid` caused to be written to storage (0 if unreadable).
fn process_write_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|line| line.strip_prefix("write_bytes:"))
                .and_then(|value| value.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// One batch size: the webhook, then the raw publisher.
struct ThroughputRow {
    batch: usize,
    http: HttpPhase,
    http_cpu: CpuSplit,
    raw: RawPhase,
    raw_cpu: CpuSplit,
}

impl ThroughputRow {
    fn webhook_rate(&self) -> f64 {
        self.http.per_second(self.http.accepted)
    }

    fn ratio(&self) -> f64 {
        let raw = self.raw.per_second();
        if raw > 0.0 {
            self.webhook_rate() / raw
        } else {
            0.0
        }
    }

    fn progress(&self) -> String {
        format!(
            "batch {:>3}: webhook {:>7.0} notifications/s, raw {:>7.0}/s",
            self.batch,
            self.webhook_rate(),
            self.raw.per_second()
        )
    }
}

struct Report<'a> {
    args: &'a Args,
    raw_channels: usize,
    load_before: Vec<f64>,
    load_after: Vec<f64>,
    rows: Vec<ThroughputRow>,
    latency: HttpPhase,
    latency_cpu: CpuSplit,
    started: Instant,
}

impl Report<'_> {
    fn print(mut self) {
        let args = self.args;
        let date = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let machine = describe_machine();
        println!();
        println!("webhook ingest benchmark, {date}, {machine}");
        println!(
            "load average before {:?}, after {:?}; cpu columns are cores used: webhook/rabbitmq/load generator/irq+steal/other processes/idle, then d = disk busy",
            self.load_before, self.load_after
        );
        println!();
        println!(
            "throughput: closed loop, {} connections, {} s per batch size; raw: {} confirm channels, windows of the batch size",
            args.concurrency, args.seconds, self.raw_channels
        );
        println!(
            "{:>5} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>34} {:>9} {:>8} {:>6} {:>34}",
            "batch",
            "req/s",
            "notif/s",
            "non-202",
            "p50 ms",
            "p99 ms",
            "max ms",
            "cpu (webhook phase)",
            "raw /s",
            "raw p99",
            "ratio",
            "cpu (raw phase)"
        );
        let mut rows_json = Vec::new();
        for row in &mut self.rows {
            let rate = row.webhook_rate();
            let ratio = row.ratio();
            let http = row.http.percentiles();
            let raw_windows = Percentiles::of(&mut row.raw.windows_us);
            let non_202 = row.http.non_202();
            let non_202_count: u64 = non_202.values().sum();
            println!(
                "{:>5} {:>8.0} {:>9.0} {:>8} {:>8.1} {:>8.1} {:>8.1} {:>34} {:>9.0} {:>8.1} {:>6.2} {:>34}",
                row.batch,
                row.http.per_second(row.http.requests()),
                rate,
                non_202_count,
                http.p50,
                http.p99,
                http.max,
                row.http_cpu.short(),
                row.raw.per_second(),
                raw_windows.p99,
                ratio,
                row.raw_cpu.short(),
            );
            rows_json.push(json!({
                "batch": row.batch,
                "concurrency": args.concurrency,
                "seconds": round2(row.http.elapsed.as_secs_f64()),
                "requests": row.http.requests(),
                "requests_per_s": round2(row.http.per_second(row.http.requests())),
                "accepted_notifications": row.http.accepted,
                "notifications_per_s": round2(rate),
                "non_202": non_202,
                "response": http.json(),
                "cpu_cores": row.http_cpu.json(),
                "raw": {
                    "channels": self.raw_channels,
                    "confirmed": row.raw.confirmed,
                    "failed": row.raw.failed,
                    "per_s": round2(row.raw.per_second()),
                    "window": raw_windows.json(),
                    "cpu_cores": row.raw_cpu.json(),
                },
                "ratio": round2(ratio),
            }));
        }

        let latency = self.latency.percentiles();
        let non_202 = self.latency.non_202();
        let achieved = self.latency.per_second(self.latency.requests());
        println!();
        println!(
            "latency: open loop, {:.0} requests/s of {} notifications for {} s",
            args.rate, args.latency_batch, args.latency_seconds
        );
        println!(
            "{:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>34}",
            "req/s", "notif/s", "non-202", "p50 ms", "p99 ms", "max ms", "cpu"
        );
        println!(
            "{:>9.0} {:>9.0} {:>8} {:>8.1} {:>8.1} {:>8.1} {:>34}",
            achieved,
            self.latency.per_second(self.latency.accepted),
            non_202.values().sum::<u64>(),
            latency.p50,
            latency.p99,
            latency.max,
            self.latency_cpu.short()
        );

        let slowest = self
            .rows
            .iter()
            .map(ThroughputRow::webhook_rate)
            .fold(f64::INFINITY, f64::min);
        let lowest_ratio = self
            .rows
            .iter()
            .map(ThroughputRow::ratio)
            .fold(f64::INFINITY, f64::min);
        let latency_ok = latency.p99 < TARGET_P99_MS && non_202.is_empty();
        let busiest_neighbour = self
            .rows
            .iter()
            .flat_map(|row| [row.http_cpu.other, row.raw_cpu.other])
            .chain([self.latency_cpu.other])
            .fold(0.0, f64::max);
        warn_about_neighbours(busiest_neighbour);
        let busiest_writer = self
            .rows
            .iter()
            .flat_map(|row| {
                [
                    row.http_cpu.other_written_mb(),
                    row.raw_cpu.other_written_mb(),
                ]
            })
            .chain([self.latency_cpu.other_written_mb()])
            .fold(0.0, f64::max);
        if busiest_writer > NOISY_NEIGHBOUR_WRITTEN_MB {
            println!();
            println!(
                "warning: other processes wrote up to {busiest_writer:.0} MB to disk during a phase; RabbitMQ's fsyncs queue behind that"
            );
        }
        println!();
        println!(
            "target >= {TARGET_NOTIFICATIONS_PER_S:.0} notifications/s (every batch size): {:.0} at worst, {}",
            slowest,
            verdict(slowest >= TARGET_NOTIFICATIONS_PER_S)
        );
        println!(
            "target p99 < {TARGET_P99_MS:.0} ms at {:.0} requests/s: {:.1} ms, {}",
            args.rate,
            latency.p99,
            verdict(latency_ok)
        );
        println!(
            "target ratio >= {TARGET_RATIO} of the raw broker rate (every batch size): {:.2} at worst, {}",
            lowest_ratio,
            verdict(lowest_ratio >= TARGET_RATIO)
        );

        let summary = json!({
            "bench": "webhook_ingest",
            "date": date,
            "machine": machine,
            "load_before": self.load_before,
            "load_after": self.load_after,
            "webhook": "child process, release binary",
            "run_seconds": round2(self.started.elapsed().as_secs_f64()),
            "max_other_processes_cores": round2(busiest_neighbour),
            "max_other_writers_mb": round2(busiest_writer),
            "throughput": rows_json,
            "latency": {
                "rate": args.rate,
                "batch": args.latency_batch,
                "seconds": round2(self.latency.elapsed.as_secs_f64()),
                "requests": self.latency.requests(),
                "achieved_requests_per_s": round2(achieved),
                "accepted_notifications": self.latency.accepted,
                "non_202": non_202,
                "response": latency.json(),
                "cpu_cores": self.latency_cpu.json(),
            },
            "targets": {
                "notifications_per_s": { "target": TARGET_NOTIFICATIONS_PER_S, "worst": round2(slowest), "met": slowest >= TARGET_NOTIFICATIONS_PER_S },
                "p99_ms_at_rate": { "target": TARGET_P99_MS, "value": round2(latency.p99), "met": latency_ok },
                "ratio_to_raw": { "target": TARGET_RATIO, "worst": round2(lowest_ratio), "met": lowest_ratio >= TARGET_RATIO },
            },
        });
        println!();
        println!("{summary}");
    }
}
