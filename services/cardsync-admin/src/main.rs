//! `cardsync-admin`: the operator commands that lived in the service binaries (`card-writer
//! tenant put|show`, `delta-worker put-connection|set-scope`, `webhook register-subscription`),
//! unchanged, in one place until the admin API replaces them; and `migrate`, which the Helm
//! chart's migration Job runs before install and upgrade.

use anyhow::Context as _;
use cardsync_config::{PostgresSettings, TelemetrySettings, Validate};
use cardsync_rules::FieldRules;
use cardsync_runtime::{EXIT_INVALID_CONFIGURATION, ServiceSettings};
use cardsync_store::connections::{self, Connection, CredentialKind, SealingKey};
use cardsync_store::subscriptions::{self, ClientStateHash, Subscription};
use cardsync_store::tenants::{self, TenantConfig};
use clap::{Parser, Subcommand, ValueEnum};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use sqlx::PgPool;
use std::path::PathBuf;
use std::process::ExitCode;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// What the commands need: the database and the key that seals Graph credentials.
#[derive(Debug, Deserialize)]
struct Settings {
    postgres: PostgresSettings,
    secrets: SecretsSettings,
    telemetry: TelemetrySettings,
}

#[derive(Debug, Deserialize)]
struct SecretsSettings {
    /// 32 bytes, base64: seals tenant credentials (the delta-worker's key).
    credential_key: SecretString,
}

impl Validate for Settings {
    fn validate(&self, problems: &mut Vec<String>) {
        self.postgres.validate(problems);
        self.telemetry.validate(problems);
        if SealingKey::from_base64(&self.secrets.credential_key).is_err() {
            problems.push("secrets.credential_key: must be 32 bytes, base64-encoded".into());
        }
    }
}

impl ServiceSettings for Settings {
    const DEFAULTS: &'static str = include_str!("../config/default.toml");

    fn telemetry(&self) -> &TelemetrySettings {
        &self.telemetry
    }

    fn postgres(&self) -> &PostgresSettings {
        &self.postgres
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "cardsync-admin",
    about = "Operator commands for cardsync (until the admin API exists)"
)]
struct Cli {
    /// Configuration file layered over the defaults (also CARDSYNC_CONFIG).
    #[arg(long, global = true, env = "CARDSYNC_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    Secret,
    Certificate,
    Federated,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the database migrations and exit.
    Migrate,
    /// Tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Store a tenant's Graph connection; the credential is read from CARDSYNC_CREDENTIAL
    /// (a secret, a PEM bundle of certificate and key, or a federated token file path).
    PutConnection {
        /// The Entra tenant id.
        #[arg(long)]
        tenant: Uuid,
        /// The app registration's client id.
        #[arg(long)]
        client_id: String,
        /// How the app authenticates.
        #[arg(long, value_enum, default_value = "secret")]
        kind: Kind,
        /// The credential itself; from the environment so it stays out of `ps`.
        #[arg(long, env = "CARDSYNC_CREDENTIAL", hide_env_values = true)]
        credential: SecretString,
    },
    /// Limit a tenant to the (nested) members of these groups; no group means every user.
    SetScope {
        /// The Entra tenant id.
        #[arg(long)]
        tenant: Uuid,
        /// A group id (repeat for several).
        #[arg(long = "group")]
        groups: Vec<String>,
    },
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings: Settings = match cardsync_runtime::load_settings(cli.config.clone()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("cardsync-admin: {error}");
            return ExitCode::from(EXIT_INVALID_CONFIGURATION);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cardsync-admin: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings, cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cardsync-admin: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Migrate => cardsync_runtime::migrate(&settings.postgres).await,
        Command::Tenant { command } => tenant(&settings, command).await,
        Command::PutConnection {
            tenant,
            client_id,
            kind,
            credential,
        } => {
            let pool = connect(&settings).await?;
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
            let pool = connect(&settings).await?;
            cardsync_store::directory::set_scope(&pool, tenant, &groups).await?;
            let scope = if groups.is_empty() {
                "every user".to_owned()
            } else {
                groups.join(", ")
            };
            println!("tenant {tenant} scope: {scope}");
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
            let pool = connect(&settings).await?;
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

/// A pool on a migrated database: the commands were run by operators on a fresh database
/// before any service, so they keep migrating first, as they did in the service binaries.
async fn connect(settings: &Settings) -> anyhow::Result<PgPool> {
    let pool = cardsync_store::pool(&settings.postgres)
        .await
        .context("connecting to PostgreSQL")?;
    cardsync_store::migrate(&pool)
        .await
        .context("applying migrations")?;
    Ok(pool)
}

async fn tenant(settings: &Settings, command: TenantCommand) -> anyhow::Result<()> {
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
            let pool = connect(settings).await?;
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
            let pool = connect(settings).await?;
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
