//! Settings sections shared by several services, each able to validate itself.

use crate::Validate;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;
use url::Url;

/// Where the HTTP server listens, what it accepts and how it stops.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    /// Address to bind; port 0 picks a free port (tests).
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes; larger bodies get `413`.
    pub body_limit_bytes: usize,
    /// On SIGTERM, how long requests already started may take to finish before the server
    /// closes what is left. Kubernetes' `terminationGracePeriodSeconds` must exceed it.
    #[serde(
        default = "default_shutdown_timeout",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub shutdown_timeout: Duration,
    /// HTTP worker threads; unset means one per core.
    #[serde(default)]
    pub workers: Option<usize>,
    /// Connections one worker serves at once; more wait in the listen backlog. Bounds the
    /// memory that per-connection buffers take under a flood.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How long a client may take to send a request's head; slower ones get `408` and are
    /// disconnected (a connection that sends nothing is closed too).
    #[serde(
        default = "default_header_timeout",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body, from the request's start; slower
    /// ones get `408`.
    #[serde(
        default = "default_body_timeout",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub body_timeout: Duration,
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_connections() -> usize {
    1000
}

fn default_header_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_body_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Validate for HttpSettings {
    fn validate(&self, problems: &mut Vec<String>) {
        if self.body_limit_bytes == 0 {
            problems.push("http.body_limit_bytes: must be greater than 0".into());
        }
        if self.shutdown_timeout.is_zero() {
            problems.push("http.shutdown_timeout: must be greater than 0".into());
        }
        if self.workers == Some(0) {
            problems.push("http.workers: must be greater than 0 when set".into());
        }
        if self.max_connections == 0 {
            problems.push("http.max_connections: must be greater than 0".into());
        }
        for (key, value) in [
            ("http.header_timeout", self.header_timeout),
            ("http.body_timeout", self.body_timeout),
        ] {
            if value.is_zero() {
                problems.push(format!("{key}: must be greater than 0"));
            }
        }
    }
}

/// The PostgreSQL connection.
#[derive(Debug, Clone, Deserialize)]
pub struct PostgresSettings {
    /// `postgres://user:password@host:port/db`; secret because it may hold a password.
    pub url: SecretString,
    /// Upper bound of pooled connections.
    pub max_connections: u32,
    /// Longest wait to get a connection or run a statement before giving up.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub timeout: Duration,
}

impl Validate for PostgresSettings {
    fn validate(&self, problems: &mut Vec<String>) {
        check_url(
            self.url.expose_secret(),
            &["postgres", "postgresql"],
            "postgres.url",
            problems,
        );
        if self.max_connections == 0 {
            problems.push("postgres.max_connections: must be greater than 0".into());
        }
        if self.timeout.is_zero() {
            problems.push("postgres.timeout: must be greater than 0".into());
        }
    }
}

/// The Redis connection.
#[derive(Debug, Clone, Deserialize)]
pub struct RedisSettings {
    /// `redis://[:password@]host:port/db`; secret because it may hold a password.
    pub url: SecretString,
    /// Prefix of every key this deployment writes (tests use a unique one).
    pub key_prefix: String,
}

impl Validate for RedisSettings {
    fn validate(&self, problems: &mut Vec<String>) {
        check_url(
            self.url.expose_secret(),
            &["redis", "rediss"],
            "redis.url",
            problems,
        );
    }
}

/// How logs look.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (clusters).
    Json,
    /// Human-readable lines (local runs).
    Pretty,
}

/// Logs and traces.
#[derive(Debug, Clone, Deserialize)]
pub struct TelemetrySettings {
    /// `tracing` env-filter directive, e.g. `info,cardsync=debug`.
    pub log_filter: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// OTLP/HTTP endpoint (e.g. `http://otel-collector:4318`); traces are exported only when set.
    pub otlp_endpoint: Option<Url>,
}

impl Validate for TelemetrySettings {
    fn validate(&self, problems: &mut Vec<String>) {
        if let Some(url) = &self.otlp_endpoint
            && !matches!(url.scheme(), "http" | "https")
        {
            problems.push("telemetry.otlp_endpoint: must be an http(s) URL".into());
        }
    }
}

/// Checks that a (possibly secret) URL parses and has an allowed scheme, without echoing it;
/// `key` names the setting in the problem pushed.
pub fn check_url(raw: &str, schemes: &[&str], key: &str, problems: &mut Vec<String>) {
    match Url::parse(raw) {
        Ok(url) if schemes.contains(&url.scheme()) => {}
        Ok(url) => problems.push(format!(
            "{key}: scheme must be one of {schemes:?}, found {:?}",
            url.scheme()
        )),
        Err(e) => problems.push(format!("{key}: not a URL ({e})")),
    }
}
