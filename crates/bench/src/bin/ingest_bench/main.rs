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
//! `cargo run --release --locked -p cardsync-bench --bin ingest_bench [-- --help]`
//!
//! - [`phases`]: the run: warm-up, latency, then throughput per batch size.
//! - [`load`]: the HTTP load generator, closed and open loop.
//! - [`raw`]: the minimal lapin publisher the webhook is compared with.
//! - [`usage`]: CPU and disk use per phase.
//! - [`report`]: the printed tables and JSON summary.

mod load;
mod phases;
mod raw;
mod report;
mod usage;

use anyhow::{Context as _, ensure};
use cardsync_bench::{
    ServiceProcess, free_port, load_before_run, parse_setting, progress, service_binary,
    service_bus_settings, service_env,
};
use cardsync_bus::lapin::{Connection, ConnectionProperties};
use cardsync_bus::{Topology, names};
use cardsync_store::subscriptions::{self, ClientStateHash, Subscription};
use clap::Parser;
use phases::Bench;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// The webhook's embedded defaults: the benchmark reads its bus settings as the child reads
/// them (its publisher pool size and retry tiers, for the raw publisher and the teardown).
const WEBHOOK_DEFAULTS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../services/webhook/config/default.toml"
));
/// Where the webhook takes change notifications (its route, `webhook::NOTIFICATIONS_PATH`).
pub(crate) const NOTIFICATIONS_PATH: &str = "/graph/notifications";
const DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/cardsync_test";
const ADMIN_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub(crate) const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Distinct bodies per batch size, so the webhook does not see one body over and over.
pub(crate) const BODIES_PER_BATCH: usize = 64;
/// Open-loop requests allowed in flight before the generator itself waits (the wait is still
/// counted in the latency, because times run from when a request was due).
pub(crate) const OPEN_LOOP_MAX_IN_FLIGHT: usize = 512;
/// How long the webhook may take to drain and exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

// Targets from issue 2, section 6.
pub(crate) const TARGET_NOTIFICATIONS_PER_S: f64 = 10_000.0;
pub(crate) const TARGET_P99_MS: f64 = 50.0;
pub(crate) const TARGET_RATIO: f64 = 0.7;
/// MB other processes may write to disk during a phase before the figures are flagged.
pub(crate) const NOISY_NEIGHBOUR_WRITTEN_MB: f64 = 50.0;

#[derive(Debug, Parser)]
#[command(
    about = "Webhook ingest benchmark: throughput, latency at a fixed rate, raw broker ratio"
)]
pub(crate) struct Args {
    /// Batch sizes (notifications per POST) of the throughput phases.
    #[arg(long, value_delimiter = ',', default_value = "10,50,100")]
    pub(crate) batches: Vec<usize>,
    /// Concurrent connections of the closed-loop throughput phases.
    #[arg(long, default_value_t = 32)]
    pub(crate) concurrency: usize,
    /// Seconds per throughput phase (webhook and raw each).
    #[arg(long, default_value_t = 10)]
    pub(crate) seconds: u64,
    /// Requests per second of the latency phase.
    #[arg(long, default_value_t = 1000.0)]
    pub(crate) rate: f64,
    /// Notifications per request of the latency phase.
    #[arg(long, default_value_t = 10)]
    pub(crate) latency_batch: usize,
    /// Seconds of the latency phase.
    #[arg(long, default_value_t = 10)]
    pub(crate) latency_seconds: u64,
    /// Confirm channels of the raw publisher (default: the webhook's `bus.publish_channels`).
    #[arg(long)]
    pub(crate) raw_channels: Option<usize>,
    /// Extra `CARDSYNC__…=value` settings for the webhook, e.g. `CARDSYNC__BUS__PUBLISH_CHANNELS=32`.
    #[arg(long = "set", value_parser = parse_setting)]
    pub(crate) settings: Vec<(String, String)>,
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
    let bus = service_bus_settings(WEBHOOK_DEFAULTS, &env)
        .context("the webhook settings of the benchmark are invalid")?;
    let topology = Topology::cardsync(&prefix).with_retry_delays(&bus.retry_delays);
    let raw_channels = args.raw_channels.unwrap_or(bus.publish_channels);

    // Nothing is created until every prerequisite is there.
    let admin = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .context("RabbitMQ must run on 127.0.0.1:5672: run `make services`")?;
    let admin_channel = admin.create_channel().await?;
    let binary = service_binary("webhook")?;
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
