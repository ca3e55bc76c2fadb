//! The `graph-sim` binary: serve the simulator, or run its benchmark.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// Microsoft Graph and identity platform simulator.
#[derive(Debug, Parser)]
#[command(name = "graph-sim", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Graph and token endpoints listen here.
    #[arg(long, env = "GRAPH_SIM_GRAPH_LISTEN", default_value = "127.0.0.1:8081")]
    graph_listen: SocketAddr,
    /// The control API listens here.
    #[arg(
        long,
        env = "GRAPH_SIM_CONTROL_LISTEN",
        default_value = "127.0.0.1:8082"
    )]
    control_listen: SocketAddr,
    /// Compress simulated waits (3600 = an hour per second).
    #[arg(long, env = "GRAPH_SIM_TIME_SCALE", default_value_t = 1.0)]
    time_scale: f64,
    /// Access token lifetime in seconds.
    #[arg(long, env = "GRAPH_SIM_TOKEN_LIFETIME", default_value_t = 3599)]
    token_lifetime: i64,
    /// HTTP worker threads per server.
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Seed a tenant and time a full /users/delta enumeration over loopback HTTP.
    Bench {
        /// Users to seed.
        #[arg(long, default_value_t = 100_000)]
        users: usize,
        /// `Prefer: odata.maxpagesize`.
        #[arg(long, default_value_t = 999)]
        page_size: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let cli = Cli::parse();
    if let Some(Command::Bench { users, page_size }) = cli.command {
        let report = graph_sim::bench::run(users, page_size)
            .await
            .context("benchmark failed")?;
        println!("{report}");
        return Ok(());
    }
    let config = graph_sim::SimConfig {
        graph_listen: cli.graph_listen,
        control_listen: cli.control_listen,
        time_scale: cli.time_scale,
        token_lifetime_secs: cli.token_lifetime,
        workers: cli.workers,
    };
    let sim = graph_sim::spawn(config)
        .await
        .context("starting graph-sim")?;
    println!(
        "graph-sim graph_url={} control_url={}",
        sim.graph_url(),
        sim.control_url()
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for ctrl-c")?;
    sim.shutdown().await;
    Ok(())
}
