//! `make bench`: how many card commands per second the card-writer applies, next to the best
//! rate plain sqlx reaches for the same rows on the same PostgreSQL in the same run (issue 4,
//! section 7: at least 5,000 commands/s, with that ratio).
//!
//! - Raw phases first: the physical limit. Each command becomes exactly what the writer commits
//!   for it (the card row upserted with a version check, one audit row with the states of the
//!   fields that changed, before and after, one outbox row with the encoded `CardEvent`), built
//!   with the very rules merge and event encoder the writer uses, and written with multi-row
//!   statements in transactions of `--raw-batch` commands on `--raw-connections` connections.
//!   With one command per transaction it shows what per-command commits cost; the best batch
//!   size is the denominator of the ratio.
//! - Writer phases, per queue: `--commands` realistic commands across `--users` users (every
//!   user created, then updated with growing versions, round robin) are published (confirmed)
//!   to the `cards` exchange while no writer runs; then the release `card-writer` binary starts
//!   as a child process, configured as deployed apart from its port, topology prefix, database
//!   and Redis key prefix, and the clock runs until PostgreSQL holds every user at its last
//!   version and the queue is empty. The outbox drain (events confirmed by RabbitMQ) is
//!   reported beside it. Every phase checks exactly once: one card per user, one audit row per
//!   command, and one outbox row per command (raw) or one event per command on
//!   `card-events.audit` and an empty outbox (writer).
//! - CPU per phase comes from `/proc`: card-writer, PostgreSQL (every backend), RabbitMQ, Redis,
//!   this generator, irq/steal and other processes, so the ceiling is visible.
//! - Everything it created (topology, tenants and their rows, Redis keys) is removed at the end.
//!
//! `cargo run --release --locked -p cardsync-bench --bin writer_bench [-- --help]`
//!
//! - [`workload`]: the command stream and what the writer commits for it, written raw.
//! - [`phases`]: the raw and the writer phases, and the checks after each.
//! - [`report`]: the CPU split of a phase and the printed report.

mod phases;
mod report;
mod workload;

use anyhow::{Context as _, bail, ensure};
use cardsync_bench::{
    create_database, database_url, drop_database, free_port, load_before_run, parse_setting,
    progress, service_binary, service_bus_settings, service_env,
};
use cardsync_bus::lapin::{Connection, ConnectionProperties};
use cardsync_bus::{Publisher, QueueType, Topology, names, routing};
use cardsync_proto::Cause;
use clap::Parser;
use phases::Bench;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// The card-writer's embedded defaults: the benchmark reads its bus settings as the child
/// reads them (the retry tiers name the topology's queues; the publisher's timeouts are its).
const WRITER_DEFAULTS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../services/card-writer/config/default.toml"
));

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const REDIS_URL: &str = "redis://127.0.0.1:6379/0";
/// Commands per confirmed publish while pre-loading a queue.
pub(crate) const PUBLISH_CHUNK: usize = 1_000;
/// How often the writer phase looks at PostgreSQL.
pub(crate) const POLL: Duration = Duration::from_millis(100);
/// How long the writer may take to drain and exit after SIGTERM.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(30);

// Target from issue 4, section 7.
pub(crate) const TARGET_COMMANDS_PER_S: f64 = 5_000.0;

#[derive(Debug, Clone, Parser)]
#[command(about = "Card-writer throughput benchmark: raw PostgreSQL rate, writer rate, ratio")]
pub(crate) struct Args {
    /// Commands per writer phase (and per raw phase).
    #[arg(long, default_value_t = 50_000)]
    pub(crate) commands: usize,
    /// Distinct directory users the commands are spread over.
    #[arg(long, default_value_t = 5_000)]
    pub(crate) users: usize,
    /// Command queues to measure (`live`, `bulk`).
    #[arg(long, value_delimiter = ',', default_value = "live,bulk")]
    pub(crate) queues: Vec<String>,
    /// Commands per raw transaction, one raw phase each; the best one is the ratio's base.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    pub(crate) raw_batches: Vec<usize>,
    /// Connections of the raw phases, each committing transactions back to back.
    #[arg(long, default_value_t = 8)]
    pub(crate) raw_connections: usize,
    /// Queue type of the benchmark topology (`quorum`, as deployed, or `classic`).
    #[arg(long, default_value = "quorum")]
    pub(crate) queue_type: String,
    /// Give up on a writer phase after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub(crate) timeout: u64,
    /// Extra `CARDSYNC__…=value` settings for the writer, e.g. `CARDSYNC__CARD_WRITER__LIVE_PREFETCH=128`.
    #[arg(long = "set", value_parser = parse_setting)]
    pub(crate) settings: Vec<(String, String)>,
}

/// Which command queue a writer phase loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    Live,
    Bulk,
}

impl Lane {
    pub(crate) fn parse(text: &str) -> anyhow::Result<Self> {
        match text {
            "live" => Ok(Lane::Live),
            "bulk" => Ok(Lane::Bulk),
            other => bail!("unknown queue {other:?}: expected live or bulk"),
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Lane::Live => "live",
            Lane::Bulk => "bulk",
        }
    }

    pub(crate) fn queue(self) -> &'static str {
        match self {
            Lane::Live => names::CARD_WRITER_LIVE,
            Lane::Bulk => names::CARD_WRITER_BULK,
        }
    }

    pub(crate) fn routing_key(self, tenant: &str) -> String {
        match self {
            Lane::Live => routing::live_command(tenant),
            Lane::Bulk => routing::bulk_command(tenant),
        }
    }

    pub(crate) fn cause(self) -> Cause {
        match self {
            Lane::Live => Cause::Notification,
            Lane::Bulk => Cause::Reconcile,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let args = Args::parse();
    ensure!(
        args.users > 0 && args.commands >= args.users,
        "--commands must be at least --users > 0"
    );
    ensure!(
        !args.raw_batches.is_empty() && args.raw_batches.iter().all(|b| *b > 0 && *b <= args.users),
        "--raw-batches needs sizes between 1 and --users (a batch never holds one user twice)"
    );
    ensure!(args.raw_connections > 0);
    let lanes = args
        .queues
        .iter()
        .map(|q| Lane::parse(q))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let queue_type = match args.queue_type.as_str() {
        "quorum" => QueueType::Quorum,
        "classic" => QueueType::Classic,
        other => bail!("unknown queue type {other:?}: expected quorum or classic"),
    };
    let _ = rustls::crypto::ring::default_provider().install_default();

    let load_before = load_before_run();

    let id = Uuid::new_v4().simple().to_string();
    let prefix = format!("bench.{}.", &id[..8]);
    let redis_prefix = format!("bench-cw-{}", &id[..8]);
    // A database of its own: a shared one carries the dead rows of every earlier run and test
    // (PostgreSQL may run without autovacuum), and the figures would drift with its history.
    let database = format!("cardsync_bench_{}", &id[..8]);
    let port = free_port()?;
    let mut env = service_env(port, &prefix, &database_url(&database), AMQP_URL);
    env.extend([
        (
            "CARDSYNC__BUS__QUEUE_TYPE".to_owned(),
            args.queue_type.clone(),
        ),
        ("CARDSYNC__REDIS__URL".to_owned(), REDIS_URL.to_owned()),
        (
            "CARDSYNC__REDIS__KEY_PREFIX".to_owned(),
            redis_prefix.clone(),
        ),
    ]);
    env.extend(args.settings.iter().cloned());
    let bus = service_bus_settings(WRITER_DEFAULTS, &env)
        .context("the card-writer settings of the benchmark are invalid")?;
    let topology = Topology::cardsync(&prefix)
        .with_retry_delays(&bus.retry_delays)
        .with_queue_type(queue_type);

    // Nothing is created until every prerequisite is there.
    let admin = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .context("RabbitMQ must run on 127.0.0.1:5672: run `make services`")?;
    let admin_channel = admin.create_channel().await?;
    let binary = service_binary("card-writer")?;
    let pool = create_database(&database, 32).await?;
    let redis = redis::Client::open(REDIS_URL)?
        .get_multiplexed_async_connection()
        .await
        .context("Redis must run on 127.0.0.1:6379: run `make services`")?;

    let log = std::env::temp_dir().join(format!("writer_bench-{prefix}log"));
    let outcome = async {
        cardsync_bus::declare(&admin_channel, &topology)
            .await
            .context("declaring the benchmark topology")?;
        let publisher = Publisher::connect(&bus, topology.clone())
            .await
            .context("connecting the benchmark publisher")?;
        let bench = Bench {
            args: &args,
            pool: &pool,
            topology: &topology,
            admin: &admin_channel,
            publisher: &publisher,
            env: &env,
            binary: &binary,
            log: &log,
            metrics_url: format!("http://127.0.0.1:{port}/metrics"),
            started,
        };
        let result = bench.run(load_before, &lanes).await;
        publisher.close().await;
        result
    }
    .await;

    progress(started, "cleaning up");
    let deleted = cardsync_bus::delete(&admin_channel, &topology).await;
    pool.close().await;
    let removed = drop_database(&database).await;
    let flushed = flush_redis(redis, &redis_prefix).await;
    let _ = admin.close(200, "bench done".into()).await;
    let report = outcome?;
    deleted.context("deleting the benchmark topology")?;
    removed.context("dropping the benchmark database")?;
    flushed.context("deleting the benchmark's Redis keys")?;
    let _ = std::fs::remove_file(&log);
    report.print();
    Ok(())
}

async fn flush_redis(
    mut redis: redis::aio::MultiplexedConnection,
    prefix: &str,
) -> anyhow::Result<()> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut redis)
        .await?;
    for chunk in keys.chunks(1_000) {
        let _: usize = redis::cmd("DEL").arg(chunk).query_async(&mut redis).await?;
    }
    Ok(())
}
