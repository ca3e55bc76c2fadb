//! The `graph-sim` binary: serve the simulator, or run its benchmark.

use std::net::SocketAddr;
use std::path::PathBuf;

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
    /// Also serve the Graph and identity endpoints over HTTPS (generated CA unless --tls-cert/--tls-key).
    #[arg(long, env = "GRAPH_SIM_TLS")]
    tls: bool,
    /// The HTTPS listener (with --tls).
    #[arg(long, env = "GRAPH_SIM_HTTPS_LISTEN", default_value = "127.0.0.1:8443")]
    https_listen: SocketAddr,
    /// PEM certificate chain to serve instead of a generated one (with --tls-key).
    #[arg(long, env = "GRAPH_SIM_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "GRAPH_SIM_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Where to write the CA certificate clients must trust (default: a file in the temp directory).
    #[arg(long, env = "GRAPH_SIM_CA_OUT")]
    ca_out: Option<PathBuf>,
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
    // Logs go to stderr: stdout carries only the start-up line scripts parse.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
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
        tls: cli.tls || cli.tls_cert.is_some(),
        https_listen: cli.https_listen,
        tls_files: cli
            .tls_cert
            .zip(cli.tls_key)
            .map(|(cert_chain, key)| graph_sim::tls::TlsFiles { cert_chain, key }),
        ca_out: cli.ca_out,
    };
    let sim = graph_sim::spawn(config)
        .await
        .context("starting graph-sim")?;
    match (sim.https_url(), sim.ca_file()) {
        (Some(https), Some(ca)) => println!(
            "graph-sim graph_url={} control_url={} https_url={https} ca_file={}",
            sim.graph_url(),
            sim.control_url(),
            ca.display()
        ),
        _ => println!(
            "graph-sim graph_url={} control_url={}",
            sim.graph_url(),
            sim.control_url()
        ),
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for ctrl-c")?;
    sim.shutdown().await;
    Ok(())
}
