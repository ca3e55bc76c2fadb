//! `delta-worker`: run the worker, or configure a tenant's Graph connection and scope by hand
//! (until the admin API exists).

use anyhow::Context as _;
use cardsync_config::Sources;
use cardsync_store::connections::{self, Connection, CredentialKind, SealingKey};
use clap::{Parser, Subcommand, ValueEnum};
use delta_worker::{Application, Settings};
use secrecy::SecretString;
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(
    name = "delta-worker",
    about = "Delta rounds and card commands for cardsync"
)]
struct Cli {
    /// Configuration file layered over the defaults (also CARDSYNC_CONFIG).
    #[arg(long, global = true, env = "CARDSYNC_CONFIG")]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    Secret,
    Certificate,
    Federated,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consume and run rounds until SIGTERM (the default).
    Serve,
    /// Store a tenant's Graph connection; the credential is read from CARDSYNC_CREDENTIAL
    /// (a secret, a PEM bundle of certificate and key, or a federated token file path).
    PutConnection {
        #[arg(long)]
        tenant: Uuid,
        #[arg(long)]
        client_id: String,
        #[arg(long, value_enum, default_value = "secret")]
        kind: Kind,
        #[arg(long, env = "CARDSYNC_CREDENTIAL", hide_env_values = true)]
        credential: SecretString,
    },
    /// Limit a tenant to the (nested) members of these groups; no group means every user.
    SetScope {
        #[arg(long)]
        tenant: Uuid,
        #[arg(long = "group")]
        groups: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut sources = Sources::from_process();
    if cli.config.is_some() {
        sources.file = cli.config.clone();
    }
    let settings = match Settings::load(&sources) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{error}");
            std::process::exit(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let _telemetry = cardsync_telemetry::init("delta-worker", &settings.telemetry)
                .context("starting telemetry")?;
            let pool = cardsync_store::pool_lazy(&settings.postgres)?;
            cardsync_store::migrate(&pool)
                .await
                .context("applying migrations")?;
            let application = Application::build(settings)
                .await
                .context("building the delta-worker")?;
            tracing::info!(port = application.port(), "delta-worker running");
            let shutdown = cardsync_runtime::cancel_on_signal();
            application
                .run_until_stopped(shutdown)
                .await
                .context("running")?;
            Ok(())
        }
        Command::PutConnection {
            tenant,
            client_id,
            kind,
            credential,
        } => {
            let pool = cardsync_store::pool(&settings.postgres)
                .await
                .context("connecting to PostgreSQL")?;
            cardsync_store::migrate(&pool)
                .await
                .context("applying migrations")?;
            let key = SealingKey::from_base64(&settings.secrets.credential_key)?;
            let kind = match kind {
                Kind::Secret => CredentialKind::Secret,
                Kind::Certificate => CredentialKind::Certificate,
                Kind::Federated => CredentialKind::Federated,
            };
            connections::put(
                &pool,
                &key,
                &Connection {
                    tenant_id: tenant,
                    client_id,
                    kind,
                    credential,
                },
            )
            .await?;
            println!("stored the Graph connection of tenant {tenant}");
            Ok(())
        }
        Command::SetScope { tenant, groups } => {
            let pool = cardsync_store::pool(&settings.postgres)
                .await
                .context("connecting to PostgreSQL")?;
            cardsync_store::migrate(&pool)
                .await
                .context("applying migrations")?;
            cardsync_store::directory::set_scope(&pool, tenant, &groups).await?;
            println!(
                "tenant {tenant} scope: {}",
                if groups.is_empty() {
                    "every user".into()
                } else {
                    groups.join(", ")
                }
            );
            Ok(())
        }
    }
}
