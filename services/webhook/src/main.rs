//! `webhook`: serve Graph notifications, or register a subscription by hand (until the
//! subscription manager exists).

use anyhow::Context as _;
use cardsync_config::Sources;
use cardsync_store::subscriptions::{self, ClientStateHash, Subscription};
use clap::{Parser, Subcommand};
use secrecy::{ExposeSecret as _, SecretString};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;
use webhook::{Application, Settings};

#[derive(Debug, Parser)]
#[command(
    name = "webhook",
    about = "Receives Microsoft Graph notifications for cardsync"
)]
struct Cli {
    /// Configuration file layered over the defaults (also CARDSYNC_CONFIG).
    #[arg(long, global = true, env = "CARDSYNC_CONFIG")]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HTTP until SIGTERM or Ctrl-C (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Register (or update) a Graph subscription in the registry.
    RegisterSubscription {
        /// Graph's subscription id.
        #[arg(long)]
        id: Uuid,
        /// The tenant the subscription belongs to.
        #[arg(long)]
        tenant: Uuid,
        /// The watched resource, e.g. /users.
        #[arg(long, default_value = "/users")]
        resource: String,
        /// When the subscription expires (RFC 3339).
        #[arg(long)]
        expires_at: String,
        /// The clientState given to Graph. Read from the environment so it stays out of `ps`.
        #[arg(long, env = "CARDSYNC_CLIENT_STATE", hide_env_values = true)]
        client_state: SecretString,
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
        Command::Serve => serve(settings).await,
        Command::Migrate => {
            let pool = cardsync_store::pool(&settings.postgres)
                .await
                .context("connecting to PostgreSQL")?;
            cardsync_store::migrate(&pool)
                .await
                .context("applying migrations")?;
            println!("migrations applied");
            Ok(())
        }
        Command::RegisterSubscription {
            id,
            tenant,
            resource,
            expires_at,
            client_state,
        } => {
            let expires_at = OffsetDateTime::parse(&expires_at, &Rfc3339)
                .context("--expires-at must be RFC 3339")?;
            anyhow::ensure!(
                (1..=128).contains(&client_state.expose_secret().chars().count()),
                "the clientState must be 1 to 128 characters (Graph's limit)"
            );
            let pool = cardsync_store::pool(&settings.postgres)
                .await
                .context("connecting to PostgreSQL")?;
            cardsync_store::migrate(&pool)
                .await
                .context("applying migrations")?;
            let subscription = Subscription {
                id,
                tenant_id: tenant,
                resource,
                client_state: ClientStateHash::of(client_state.expose_secret()),
                expires_at,
            };
            subscriptions::register(&pool, &subscription)
                .await
                .context("registering the subscription")?;
            println!("registered subscription {id} for tenant {tenant}");
            Ok(())
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let _telemetry =
        cardsync_telemetry::init("webhook", &settings.telemetry).context("starting telemetry")?;
    let pool = cardsync_store::pool_lazy(&settings.postgres)?;
    if let Err(error) = cardsync_store::migrate(&pool).await {
        // Not fatal: known subscriptions are served once the database is back.
        tracing::warn!(error = %webhook::registry::error_chain(&error), "migrations not applied at start");
    }
    let application = Application::build(&settings)
        .await
        .context("building the webhook")?;
    tracing::info!(port = application.port(), "webhook listening");
    let shutdown = cardsync_runtime::cancel_on_signal();
    application
        .run_until_stopped(shutdown)
        .await
        .context("serving HTTP")?;
    tracing::info!("webhook stopped");
    Ok(())
}
