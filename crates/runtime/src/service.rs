//! A service binary's `main`: its commands (`serve`, the default, and `migrate`), settings
//! loaded once for both, the rustls provider, telemetry, and exit codes scripts can rely on
//! (0 done, 1 failed, 2 invalid configuration or arguments).

use crate::signal::cancel_on_signal;
use cardsync_config::{ConfigError, PostgresSettings, Sources, TelemetrySettings, Validate};
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use serde::de::DeserializeOwned;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// Why a service could not be wired at start-up (before anything is served).
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The HTTP server could not start.
    #[error("cannot start the HTTP server")]
    Http(#[from] crate::HttpError),
    /// The database settings are unusable.
    #[error("cannot set up the database pool")]
    Store(#[from] cardsync_store::StoreError),
    /// Metrics could not be registered.
    #[error("cannot register metrics")]
    Metrics(#[from] cardsync_telemetry::metrics::MetricsError),
    /// Another dependency could not be set up (Redis, the Graph client, the sealing key…).
    #[error("cannot set up {what}")]
    Dependency {
        /// What it is.
        what: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StartupError {
    /// A dependency named `what` failed to set up.
    pub fn dependency(
        what: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Dependency {
            what,
            source: source.into(),
        }
    }
}

/// Exit code for a configuration that does not load or validate.
pub const EXIT_INVALID_CONFIGURATION: u8 = 2;

/// The settings of a service: its embedded defaults and the sections the kit needs.
pub trait ServiceSettings: DeserializeOwned + Validate + Send + 'static {
    /// The service's embedded `config/default.toml`.
    const DEFAULTS: &'static str;

    /// Logs and traces.
    fn telemetry(&self) -> &TelemetrySettings;

    /// The database, for `migrate` and the schema gate.
    fn postgres(&self) -> &PostgresSettings;

    /// Loads the defaults, the optional file and the environment, and validates.
    fn load_from(sources: &Sources) -> Result<Self, ConfigError> {
        cardsync_config::load(Self::DEFAULTS, sources)
    }
}

/// Implements [`ServiceSettings`] for a settings struct with `telemetry` and `postgres` fields,
/// gives it an inherent `load(&Sources)` (what tests call), and adds a test that the embedded
/// defaults load and listen on the service's own port of [`crate::DEFAULT_PORTS`].
#[macro_export]
macro_rules! service_settings {
    ($settings:ident, $defaults:expr, $service:literal) => {
        impl $crate::ServiceSettings for $settings {
            const DEFAULTS: &'static str = $defaults;

            fn telemetry(&self) -> &::cardsync_config::TelemetrySettings {
                &self.telemetry
            }

            fn postgres(&self) -> &::cardsync_config::PostgresSettings {
                &self.postgres
            }
        }

        impl $settings {
            /// Loads defaults, the optional file and the environment, and validates.
            pub fn load(
                sources: &::cardsync_config::Sources,
            ) -> ::std::result::Result<Self, ::cardsync_config::ConfigError> {
                <Self as $crate::ServiceSettings>::load_from(sources)
            }
        }

        #[cfg(test)]
        mod service_settings_defaults {
            #[test]
            fn the_embedded_defaults_load_and_listen_on_the_services_own_port() {
                let settings = super::$settings::load(&::cardsync_config::Sources::embedded_only())
                    .expect("the embedded defaults are valid");
                assert_eq!(
                    Some(settings.http.listen.port()),
                    $crate::default_port($service),
                    "see DEFAULT_PORTS in crates/runtime"
                );
            }
        }
    };
}

#[derive(Debug, Parser)]
struct Cli {
    /// Configuration file layered over the defaults (also CARDSYNC_CONFIG).
    #[arg(long, global = true, env = "CARDSYNC_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service until SIGTERM or Ctrl-C (the default). It serves health and metrics at
    /// once, and starts its work when the database schema is current.
    Serve,
    /// Apply the database migrations and exit (the Helm chart's migration Job runs this).
    Migrate,
}

/// One service binary: its name (logs, traces, `--help`) and what `serve` runs.
#[derive(Debug, Clone, Copy)]
pub struct Service {
    name: &'static str,
    about: &'static str,
}

impl Service {
    /// A service called `name`, described by `about` in `--help`.
    pub const fn new(name: &'static str, about: &'static str) -> Self {
        Self { name, about }
    }

    /// Parses the command line, loads the settings (exit 2 listing every problem), and runs
    /// the command: `serve` calls `serve` with the settings and a token cancelled on SIGTERM
    /// or Ctrl-C, under telemetry; `migrate` applies the migrations.
    pub fn run<S, F, Fut>(self, serve: F) -> ExitCode
    where
        S: ServiceSettings,
        F: FnOnce(S, CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let matches = Cli::command()
            .name(self.name)
            .about(self.about)
            .get_matches();
        let cli = match Cli::from_arg_matches(&matches) {
            Ok(cli) => cli,
            Err(error) => error.exit(),
        };
        let settings: S = match load_settings(cli.config) {
            Ok(settings) => settings,
            Err(error) => {
                eprintln!("{}: {error}", self.name);
                return ExitCode::from(EXIT_INVALID_CONFIGURATION);
            }
        };
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                eprintln!("{}: cannot start the async runtime: {error}", self.name);
                return ExitCode::FAILURE;
            }
        };
        let outcome = runtime.block_on(async {
            match cli.command.unwrap_or(Command::Serve) {
                Command::Serve => self.serve(settings, serve).await,
                Command::Migrate => migrate(settings.postgres()).await,
            }
        });
        match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(error = format!("{error:#}"), "{} failed", self.name);
                eprintln!("{}: {error:#}", self.name);
                ExitCode::FAILURE
            }
        }
    }

    async fn serve<S, F, Fut>(self, settings: S, serve: F) -> anyhow::Result<()>
    where
        S: ServiceSettings,
        F: FnOnce(S, CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        use anyhow::Context as _;
        let _telemetry = cardsync_telemetry::init(self.name, settings.telemetry())
            .context("starting telemetry")?;
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            "{} starting",
            self.name
        );
        serve(settings, cancel_on_signal()).await?;
        tracing::info!("{} stopped", self.name);
        Ok(())
    }
}

/// Settings from the process: embedded defaults, then `--config` (or `CARDSYNC_CONFIG`), then
/// `CARDSYNC__…` variables. Installs the process's one rustls provider (ring) first, since
/// every client built from the settings needs it.
pub fn load_settings<S: ServiceSettings>(config: Option<PathBuf>) -> Result<S, ConfigError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut sources = Sources::from_process();
    if config.is_some() {
        sources.file = config;
    }
    S::load_from(&sources)
}

/// Applies every pending migration and says which schema the database is at.
pub async fn migrate(postgres: &PostgresSettings) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let pool = cardsync_store::pool(postgres)
        .await
        .context("connecting to PostgreSQL")?;
    cardsync_store::migrate(&pool)
        .await
        .context("applying migrations")?;
    let version = cardsync_store::schema_version(&pool)
        .await
        .context("reading the schema version")?;
    println!(
        "migrations applied; the database schema is at version {}",
        version.database.unwrap_or_default()
    );
    Ok(())
}
