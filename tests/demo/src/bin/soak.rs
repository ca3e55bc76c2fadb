//! `make soak`: the whole pipeline under a seeded schedule of faults (see
//! [`cardsync_demo::soak`]). Prints the schedule first, then each fault and how long the cards
//! took to converge after it, then the report; the last line is one JSON object. Exits non-zero
//! when a card diverges or is doubled, a message was dead-lettered, or a fault's effects did not
//! converge in time.

use cardsync_demo::Pipeline;
use cardsync_demo::procs;
use cardsync_demo::section;
use cardsync_demo::soak::faults::{Injector, Servers};
use cardsync_demo::soak::schedule::Family;
use cardsync_demo::soak::{self, SoakConfig};
use clap::Parser;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "cardsync-soak",
    about = "cardsync end to end under a seeded schedule of faults",
    after_help = "Examples:\n  cardsync-soak --seconds 3600 --seed 7\n  \
                  cardsync-soak --seconds 300 --faults kill,redis,throttle,graph-5xx,lose,duplicate,delay,reorder"
)]
struct Cli {
    /// How long the change stream (and the fault schedule) runs, seconds.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Directory changes per second, over both tenants.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Seed of the fault schedule, the directories and the change stream.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Mean time between faults, seconds.
    #[arg(long, default_value_t = 30)]
    fault_every: u64,
    /// Fault families, comma-separated: all, or kill, broker, postgres, redis, throttle,
    /// graph-5xx, lose, duplicate, delay, reorder, network. `broker` and `postgres` stop the
    /// machine's own servers: leave them out while others use them; `network` needs nftables.
    #[arg(long, default_value = "all")]
    faults: String,
    /// Longest a fault lasts (a service down, a storm, a partition), seconds.
    #[arg(long, default_value_t = 60)]
    max_fault: u64,
    /// Users of each of the two tenants.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Longest wait for convergence after one fault, seconds (a fault that takes longer fails
    /// the soak).
    #[arg(long, default_value_t = 120)]
    converge_timeout: u64,
    /// Longest wait for convergence after the stream stopped, seconds.
    #[arg(long, default_value_t = 180)]
    settle_timeout: u64,
    /// The delta-worker's idle-tenant safety poll, which repairs lost notifications.
    #[arg(long, default_value = "15s")]
    safety_poll: String,
    /// Where the service binaries are (default: next to this one).
    #[arg(long)]
    bin_dir: Option<std::path::PathBuf>,
    /// RabbitMQ.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    /// PostgreSQL server; the soak creates (and drops) a database of its own on it.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/cardsync")]
    postgres_url: String,
    /// Redis, with a database index nobody else uses: the soak flushes it.
    #[arg(long, default_value = "redis://127.0.0.1:6379/12")]
    redis_url: String,
    /// The RabbitMQ node the `broker` fault stops (`rabbitmqctl -n NODE`), when `--amqp-url` is
    /// not the machine's default node (`make soak-servers` starts `cardsync-soak@localhost`).
    #[arg(long)]
    rabbitmq_node: Option<String>,
    /// The Debian PostgreSQL cluster the `postgres` fault restarts, when `--postgres-url` is not
    /// the `main` cluster's (`make soak-servers` creates `soak` on port 5433).
    #[arg(long)]
    postgres_cluster: Option<String>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let families = match Family::parse_list(&cli.faults) {
        Ok(families) => families,
        Err(error) => {
            eprintln!("--faults: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    if families.contains(&Family::Network) && !soak::faults::nft_available() {
        eprintln!(
            "--faults: `network` needs nftables (`nft`, as root; `make services` installs it), \
             or leave it out"
        );
        return std::process::ExitCode::from(2);
    }
    let bin_dir = match cli.bin_dir.clone().map_or_else(procs::own_dir, Ok) {
        Ok(dir) => dir,
        Err(error) => {
            eprintln!("soak failed: {error:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let config = SoakConfig {
        seed: cli.seed,
        length: Duration::from_secs(cli.seconds),
        rate: cli.rate,
        mean_gap: Duration::from_secs(cli.fault_every),
        families,
        max_fault: Duration::from_secs(cli.max_fault),
        users: cli.users,
        converge_cap: Duration::from_secs(cli.converge_timeout),
        settle_timeout: Duration::from_secs(cli.settle_timeout),
        safety_poll: cli.safety_poll.clone(),
        bin_dir,
        amqp_url: cli.amqp_url.clone(),
        postgres_server: cli.postgres_url.clone(),
        redis_url: cli.redis_url.clone(),
    };
    let servers = Servers {
        rabbitmq_node: cli.rabbitmq_node.clone(),
        postgres_cluster: cli.postgres_cluster.clone(),
    };
    let mut injector = Injector::new(&config.redis_url, config.seed, servers);
    let mut pipeline: Option<Pipeline> = None;
    let outcome = tokio::select! {
        outcome = soak::run(&config, &mut pipeline, &mut injector) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    // Whatever happened, the machine's broker runs again and graph-sim's faults are off.
    injector.heal_all(pipeline.as_ref()).await;
    if outcome.is_err()
        && let Some(pipeline) = &pipeline
    {
        eprintln!("{}", pipeline.log_tails(30));
    }
    section("stopping every process the soak started");
    if let Some(pipeline) = pipeline {
        pipeline.stop().await;
    }
    match outcome {
        Ok(findings) => {
            println!("{}", findings.json);
            if findings.ok {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("soak failed: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
