//! Where Graph and the identity platform are, and how patient to be with them.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// Graph client settings (`[graph]`).
#[derive(Debug, Clone, Deserialize)]
pub struct GraphSettings {
    /// The identity platform, `https://login.microsoftonline.com` in Azure's public cloud.
    pub authority_url: Url,
    /// Graph, `https://graph.microsoft.com` in Azure's public cloud.
    pub graph_url: Url,
    /// Longest a single HTTP call may take.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub request_timeout: Duration,
    /// Attempts per call (the first included) on throttling, 5xx and transport errors.
    pub max_attempts: u32,
    /// First backoff step when Graph sends no `Retry-After`.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub backoff_base: Duration,
    /// Longest single wait between attempts, whatever `Retry-After` says.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub backoff_cap: Duration,
    /// Resource units one tenant may spend per 10 s (Graph allows 3,500 to 8,000 per app and tenant).
    pub tenant_budget_units: u32,
    /// Refresh a cached access token this long before it expires.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub token_refresh_margin: Duration,
    /// An extra PEM CA certificate to trust (a TLS-inspecting proxy, or graph-sim's own CA).
    pub extra_ca_file: Option<PathBuf>,
}

impl GraphSettings {
    /// Public-cloud endpoints with the defaults cardsync ships.
    pub fn public_cloud() -> Self {
        Self::for_endpoints(
            Url::parse("https://login.microsoftonline.com").expect("static URL"),
            Url::parse("https://graph.microsoft.com").expect("static URL"),
        )
    }

    /// The defaults against other endpoints (national clouds, graph-sim).
    pub fn for_endpoints(authority_url: Url, graph_url: Url) -> Self {
        Self {
            authority_url,
            graph_url,
            request_timeout: Duration::from_secs(30),
            max_attempts: 6,
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(60),
            tenant_budget_units: 3000,
            token_refresh_margin: Duration::from_secs(300),
            extra_ca_file: None,
        }
    }
}

impl cardsync_config::Validate for GraphSettings {
    fn validate(&self, problems: &mut Vec<String>) {
        for (key, url) in [
            ("graph.authority_url", &self.authority_url),
            ("graph.graph_url", &self.graph_url),
        ] {
            if !matches!(url.scheme(), "http" | "https") {
                problems.push(format!("{key}: must be an http(s) URL"));
            }
        }
        if self.max_attempts == 0 {
            problems.push("graph.max_attempts: must be at least 1".into());
        }
        if self.request_timeout.is_zero() {
            problems.push("graph.request_timeout: must be greater than 0".into());
        }
        if self.tenant_budget_units == 0 {
            problems.push("graph.tenant_budget_units: must be greater than 0".into());
        }
        if let Some(path) = &self.extra_ca_file
            && !path.is_file()
        {
            problems.push(format!(
                "graph.extra_ca_file: {} does not exist",
                path.display()
            ));
        }
    }
}
