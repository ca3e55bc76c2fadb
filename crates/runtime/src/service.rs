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
                let settings = super::$settings::load(&::cardsync_config::Sources::development())
                    .expect("the embedded defaults are valid in development mode");
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

/// A one-shot command of a service beside `serve` and `migrate` (what a Kubernetes Job or
/// CronJob runs): same settings, telemetry and signals as `serve`, then the process exits with
/// 0 when the work succeeded and 1 when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Task {
    name: &'static str,
    about: &'static str,
}

impl Task {
    /// The command `name`, described by `about` in `--help`.
    pub const fn new(name: &'static str, about: &'static str) -> Self {
        Self { name, about }
    }
}

/// What a service binary was asked to do, handed to the closure of [`Service::run_work`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Run until SIGTERM or Ctrl-C.
    Serve,
    /// Run the named [`Task`] once and exit.
    Task(&'static str),
}

/// A parsed command line: the configuration file and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Invocation {
    config: Option<PathBuf>,
    command: Invoked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Invoked {
    Migrate,
    Work(Work),
}

/// One service binary: its name (logs, traces, `--help`), its one-shot tasks, and what `serve`
/// runs.
#[derive(Debug, Clone, Copy)]
pub struct Service {
    name: &'static str,
    about: &'static str,
    tasks: &'static [Task],
}

impl Service {
    /// A service called `name`, described by `about` in `--help`.
    pub const fn new(name: &'static str, about: &'static str) -> Self {
        Self {
            name,
            about,
            tasks: &[],
        }
    }

    /// Adds one-shot commands beside `serve` and `migrate`; run them with [`Service::run_work`].
    pub const fn with_tasks(self, tasks: &'static [Task]) -> Self {
        Self { tasks, ..self }
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
        Self { tasks: &[], ..self }.run_work(|settings, _, shutdown| serve(settings, shutdown))
    }

    /// Like [`Service::run`] for a service with tasks: `work` is told whether to serve or to
    /// run one task, and returns when it is done (a task) or after shutdown (serve).
    pub fn run_work<S, F, Fut>(self, work: F) -> ExitCode
    where
        S: ServiceSettings,
        F: FnOnce(S, Work, CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let invocation = match self.parse(self.command().get_matches()) {
            Ok(invocation) => invocation,
            Err(error) => error.exit(),
        };
        let settings: S = match load_settings(invocation.config) {
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
            match invocation.command {
                Invoked::Work(chosen) => self.serve(settings, chosen, work).await,
                Invoked::Migrate => migrate(settings.postgres()).await,
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

    /// The command line parser: the kit's commands and the service's tasks.
    fn command(self) -> clap::Command {
        let mut command = Cli::command().name(self.name).about(self.about);
        for task in self.tasks {
            command = command.subcommand(clap::Command::new(task.name).about(task.about));
        }
        command
    }

    /// What the parsed command line asks for.
    fn parse(self, matches: clap::ArgMatches) -> Result<Invocation, clap::Error> {
        if let Some((name, sub)) = matches.subcommand()
            && let Some(task) = self.tasks.iter().find(|task| task.name == name)
        {
            // `--config` is global: given before or after the task's name, clap hands it down.
            let config = sub
                .get_one::<PathBuf>("config")
                .or_else(|| matches.get_one::<PathBuf>("config"))
                .cloned();
            return Ok(Invocation {
                config,
                command: Invoked::Work(Work::Task(task.name)),
            });
        }
        let cli = Cli::from_arg_matches(&matches)?;
        Ok(Invocation {
            config: cli.config,
            command: match cli.command.unwrap_or(Command::Serve) {
                Command::Serve => Invoked::Work(Work::Serve),
                Command::Migrate => Invoked::Migrate,
            },
        })
    }

    async fn serve<S, F, Fut>(self, settings: S, chosen: Work, work: F) -> anyhow::Result<()>
    where
        S: ServiceSettings,
        F: FnOnce(S, Work, CancellationToken) -> Fut,
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
        work(settings, chosen, cancel_on_signal()).await?;
        match chosen {
            Work::Serve => tracing::info!("{} stopped", self.name),
            Work::Task(task) => tracing::info!(task, "{} done", self.name),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    const TASKS: &[Task] = &[Task::new("due", "Enqueue what is due and exit")];

    fn parse(service: Service, args: &[&str]) -> Result<Invocation, clap::Error> {
        service.parse(
            service
                .command()
                .try_get_matches_from(args.iter().copied())?,
        )
    }

    #[test]
    fn a_task_is_a_command_of_its_own_and_takes_the_global_config_file() {
        let service = Service::new("svc", "a service").with_tasks(TASKS);
        for args in [
            &["svc", "due", "--config", "x.toml"][..],
            &["svc", "--config", "x.toml", "due"][..],
        ] {
            let invocation = parse(service, args).unwrap();
            assert_eq!(
                invocation.command,
                Invoked::Work(Work::Task("due")),
                "{args:?}"
            );
            assert_eq!(invocation.config, Some(PathBuf::from("x.toml")), "{args:?}");
        }
        assert_eq!(
            parse(service, &["svc"]).unwrap().command,
            Invoked::Work(Work::Serve)
        );
        assert_eq!(
            parse(service, &["svc", "migrate"]).unwrap().command,
            Invoked::Migrate
        );
    }

    #[test]
    fn a_service_without_the_task_refuses_its_name() {
        let error = parse(Service::new("svc", "a service"), &["svc", "due"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::InvalidSubcommand);
    }
}
