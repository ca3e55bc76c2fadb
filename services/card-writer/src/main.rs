//! `card-writer`: apply card commands (the default), apply migrations, or configure a tenant
//! (until the admin API exists).

use anyhow::Context as _;
use card_writer::{Application, Settings};
use cardsync_config::Sources;
use cardsync_rules::FieldRules;
use cardsync_store::tenants::{self, TenantConfig};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// glibc's allocator was a fifth of the writer's CPU under load (many small, short-lived
/// allocations across the runtime's threads).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(
    name = "card-writer",
    about = "Applies card commands to the card store and publishes card events"
)]
struct Cli {
    /// Configuration file layered over the defaults (also CARDSYNC_CONFIG).
    #[arg(long, global = true, env = "CARDSYNC_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consume card commands and serve HTTP until SIGTERM or Ctrl-C (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create a tenant or replace its configuration.
    Put {
        /// The Entra tenant id.
        #[arg(long)]
        id: Uuid,
        /// A display name.
        #[arg(long)]
        name: String,
        /// Field rules as a JSON file (see crates/rules/README.md); defaults when omitted.
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Send an `invited` event for new and newly linked members.
        #[arg(long)]
        invites: bool,
        /// Apply directory admin roles (team admin, subteam admin).
        #[arg(long)]
        admin_roles: bool,
    },
    /// Print a tenant as JSON.
    Show {
        /// The Entra tenant id.
        #[arg(long)]
        id: Uuid,
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
            connect_and_migrate(&settings).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Tenant { command } => tenant(settings, command).await,
    }
}

async fn connect_and_migrate(settings: &Settings) -> anyhow::Result<sqlx::PgPool> {
    let pool = cardsync_store::pool(&settings.postgres)
        .await
        .context("connecting to PostgreSQL")?;
    cardsync_store::migrate(&pool)
        .await
        .context("applying migrations")?;
    Ok(pool)
}

async fn tenant(settings: Settings, command: TenantCommand) -> anyhow::Result<()> {
    match command {
        TenantCommand::Put {
            id,
            name,
            rules,
            invites,
            admin_roles,
        } => {
            let rules: FieldRules = match rules {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    serde_json::from_str(&text).with_context(|| {
                        format!("{} is not valid field rules JSON", path.display())
                    })?
                }
                None => FieldRules::default(),
            };
            if let Err(problems) = rules.validate() {
                for problem in &problems {
                    eprintln!("{problem}");
                }
                anyhow::bail!("the rules have {} problem(s)", problems.len());
            }
            anyhow::ensure!(
                (1..=256).contains(&name.chars().count()),
                "--name must be 1 to 256 characters"
            );
            let pool = connect_and_migrate(&settings).await?;
            let stored = tenants::put(
                &pool,
                &TenantConfig {
                    id,
                    name,
                    rules,
                    invites_enabled: invites,
                    admin_roles_enabled: admin_roles,
                },
            )
            .await
            .context("storing the tenant")?;
            println!("tenant {} ({}) stored", stored.id, stored.name);
            Ok(())
        }
        TenantCommand::Show { id } => {
            let pool = connect_and_migrate(&settings).await?;
            let tenant = tenants::get(&pool, id)
                .await
                .context("reading the tenant")?
                .with_context(|| format!("tenant {id} is not configured"))?;
            let json = serde_json::json!({
                "id": tenant.id,
                "name": tenant.name,
                "invites_enabled": tenant.invites_enabled,
                "admin_roles_enabled": tenant.admin_roles_enabled,
                "rules": tenant.rules,
            });
            println!("{}", serde_json::to_string_pretty(&json)?);
            Ok(())
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let _telemetry = cardsync_telemetry::init("card-writer", &settings.telemetry)
        .context("starting telemetry")?;
    let pool = cardsync_store::pool_lazy(&settings.postgres)?;
    if let Err(error) = cardsync_store::migrate(&pool).await {
        // Not fatal: commands wait in their queues (transient failures) until the database is back.
        tracing::warn!(error = %cardsync_bus::error_chain(&error), "migrations not applied at start");
    }
    let application = Application::build(&settings)
        .await
        .context("building the card-writer")?;
    tracing::info!(port = application.port(), "card-writer listening");
    let shutdown = cardsync_runtime::cancel_on_signal();
    application
        .run_until_stopped(shutdown)
        .await
        .context("serving")?;
    tracing::info!("card-writer stopped");
    Ok(())
}
