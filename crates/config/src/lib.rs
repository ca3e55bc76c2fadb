//! One configuration loader for every cardsync service.
//!
//! Layers, last wins: the service's embedded defaults (TOML), an optional file named by
//! `CARDSYNC_CONFIG` (or passed explicitly), then `CARDSYNC__SECTION__KEY` environment variables,
//! which is what the Helm chart sets. After loading, [`Validate`] runs and every problem is
//! reported at once, before the service binds anything.

pub mod duration;
mod sections;

pub use sections::{
    HttpSettings, LogFormat, PostgresSettings, RedisSettings, TelemetrySettings, check_url,
};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::de::DeserializeOwned;
use std::fmt;
use std::path::{Path, PathBuf};

/// Environment variable naming an optional configuration file.
pub const CONFIG_FILE_ENV: &str = "CARDSYNC_CONFIG";
/// Prefix of every configuration environment variable; `__` separates sections and keys.
pub const ENV_PREFIX: &str = "CARDSYNC__";

/// The setting that turns development mode on, as an environment pair: local runs and tests set
/// it; a deployment never does.
pub const DEVELOPMENT_ENV: (&str, &str) = ("CARDSYNC__SECRETS__DEVELOPMENT", "true");

/// Settings that can check themselves after loading.
pub trait Validate {
    /// Pushes one human-readable line per problem; an empty list means valid.
    fn validate(&self, problems: &mut Vec<String>);
}

/// Everything that went wrong while loading, so an operator fixes it in one round.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// One line per problem.
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problem(s)):",
            self.problems.len()
        )?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

/// Where configuration comes from; tests build one explicitly instead of touching the process env.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// An optional TOML file layered over the defaults.
    pub file: Option<PathBuf>,
    /// Environment pairs (`CARDSYNC__BUS__URL`, value). `None` reads the process environment.
    pub env: Option<Vec<(String, String)>>,
}

impl Sources {
    /// The embedded defaults alone: no file, no environment (tests of the defaults).
    pub fn embedded_only() -> Self {
        Self {
            file: None,
            env: Some(Vec::new()),
        }
    }

    /// The embedded defaults in development mode (the built-in credential sealing key is
    /// accepted): what a local run or a test of the defaults uses.
    pub fn development() -> Self {
        Self::development_with(&[])
    }

    /// [`Sources::development`] with further environment pairs (settings tests).
    pub fn development_with(pairs: &[(&str, &str)]) -> Self {
        let development = std::iter::once(DEVELOPMENT_ENV);
        Self {
            file: None,
            env: Some(
                development
                    .chain(pairs.iter().copied())
                    .map(|(key, value)| (key.to_owned(), value.to_owned()))
                    .collect(),
            ),
        }
    }

    /// The process environment, and the file named by `CARDSYNC_CONFIG` when set.
    pub fn from_process() -> Self {
        Self {
            file: std::env::var_os(CONFIG_FILE_ENV).map(PathBuf::from),
            env: None,
        }
    }
}

/// Loads `T` from `defaults` (embedded TOML), the optional file and the environment, then validates it.
pub fn load<T>(defaults: &str, sources: &Sources) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Validate,
{
    let mut figment = Figment::from(Toml::string(defaults));
    if let Some(file) = &sources.file {
        if !Path::new(file).is_file() {
            return Err(ConfigError {
                problems: vec![format!(
                    "configuration file {} does not exist",
                    file.display()
                )],
            });
        }
        figment = figment.merge(Toml::file(file));
    }
    figment = match &sources.env {
        None => figment.merge(Env::prefixed(ENV_PREFIX).split("__")),
        Some(pairs) => merge_pairs(figment, pairs),
    };

    let settings: T = figment.extract().map_err(|error| ConfigError {
        problems: error.into_iter().map(|e| describe(&e)).collect(),
    })?;

    let mut problems = Vec::new();
    settings.validate(&mut problems);
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(ConfigError { problems })
    }
}

/// Applies explicit pairs exactly as the env layer would: same key splitting, same value parsing.
fn merge_pairs(mut figment: Figment, pairs: &[(String, String)]) -> Figment {
    for (key, value) in pairs {
        let Some(rest) = key.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path = rest
            .split("__")
            .map(str::to_lowercase)
            .collect::<Vec<_>>()
            .join(".");
        let parsed: figment::value::Value = value.parse().unwrap_or_else(|never| match never {});
        figment = figment.merge(figment::providers::Serialized::default(&path, parsed));
    }
    figment
}

/// Figment's message names the key path and the source, without echoing the offending value
/// (which could be a secret).
fn describe(error: &figment::Error) -> String {
    let path = if error.path.is_empty() {
        "<root>".to_owned()
    } else {
        error.path.join(".")
    };
    let kind = match &error.kind {
        figment::error::Kind::InvalidType(actual, expected) => {
            format!("expected {expected}, found {}", actual_kind(actual))
        }
        figment::error::Kind::InvalidValue(_, expected) => {
            format!("invalid value, expected {expected}")
        }
        other => other.to_string(),
    };
    match error.metadata.as_ref() {
        Some(meta) => format!("{path}: {kind} (from {})", meta.name),
        None => format!("{path}: {kind}"),
    }
}

fn actual_kind(actual: &figment::error::Actual) -> &'static str {
    use figment::error::Actual;
    match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a float",
        Actual::Char(_) | Actual::Str(_) => "a string",
        Actual::Map => "a table",
        Actual::Seq => "a list",
        _ => "another type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use serde::Deserialize;
    use std::time::Duration;

    #[derive(Debug, Deserialize)]
    struct Settings {
        postgres: PostgresSettings,
        http: HttpSettings,
    }

    impl Validate for Settings {
        fn validate(&self, problems: &mut Vec<String>) {
            self.postgres.validate(problems);
            self.http.validate(problems);
        }
    }

    const DEFAULTS: &str = r#"
        [postgres]
        url = "postgres://postgres@127.0.0.1:5432/cardsync"
        max_connections = 4
        timeout = "1s"
        [http]
        listen = "127.0.0.1:8080"
        body_limit_bytes = 1048576
    "#;

    fn env(pairs: &[(&str, &str)]) -> Sources {
        Sources {
            file: None,
            env: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
        }
    }

    #[test]
    fn environment_overrides_embedded_defaults() {
        let settings: Settings = load(
            DEFAULTS,
            &env(&[
                ("CARDSYNC__POSTGRES__TIMEOUT", "250ms"),
                ("CARDSYNC__HTTP__LISTEN", "0.0.0.0:9000"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.postgres.timeout, Duration::from_millis(250));
        assert_eq!(settings.http.listen.port(), 9000);
    }

    #[test]
    fn a_file_layers_between_defaults_and_environment() {
        let dir = std::env::temp_dir().join(format!("cardsync-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "[http]\nlisten = \"127.0.0.1:7000\"\nbody_limit_bytes = 10\n",
        )
        .unwrap();
        let sources = Sources {
            file: Some(file),
            env: Some(vec![(
                "CARDSYNC__HTTP__BODY_LIMIT_BYTES".into(),
                "20".into(),
            )]),
        };
        let settings: Settings = load(DEFAULTS, &sources).unwrap();
        assert_eq!(settings.http.listen.port(), 7000);
        assert_eq!(settings.http.body_limit_bytes, 20);
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let error = load::<Settings>(
            DEFAULTS,
            &env(&[
                ("CARDSYNC__POSTGRES__URL", "http://nope"),
                ("CARDSYNC__POSTGRES__TIMEOUT", "0s"),
                ("CARDSYNC__HTTP__BODY_LIMIT_BYTES", "0"),
            ]),
        )
        .unwrap_err();
        assert_eq!(error.problems.len(), 3, "{error}");
        assert!(error.to_string().contains("postgres.url"), "{error}");
    }

    #[test]
    fn type_errors_name_the_key_without_echoing_the_value() {
        let error = load::<Settings>(
            DEFAULTS,
            &env(&[("CARDSYNC__HTTP__LISTEN", "s3cr3t-not-an-address")]),
        )
        .unwrap_err();
        let text = error.to_string();
        assert!(text.contains("http.listen"), "{text}");
        assert!(!text.contains("s3cr3t"), "{text}");
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let settings: Settings = load(
            DEFAULTS,
            &env(&[("CARDSYNC__POSTGRES__URL", "postgres://u:hunter2@h:5432/v")]),
        )
        .unwrap();
        assert!(!format!("{settings:?}").contains("hunter2"));
        assert!(settings.postgres.url.expose_secret().contains("hunter2"));
    }

    #[test]
    fn a_missing_file_is_reported() {
        let sources = Sources {
            file: Some("/nonexistent/cardsync.toml".into()),
            env: Some(vec![]),
        };
        let error = load::<Settings>(DEFAULTS, &sources).unwrap_err();
        assert!(error.to_string().contains("does not exist"));
    }
}
