//! The operator's path through the demo: the admin-api as a child process trusting graph-sim's
//! identity platform (its JWKS), an operator app granted the API's `admin` role, and the
//! `cardsync` CLI with the operator's token configuring the tenant through the API.

use crate::procs::Binaries;
use anyhow::Context as _;
use graph_sim::control_client::{Control, client_credentials_token};

/// The App ID URI the demo's admin API answers to.
pub const API_URI: &str = "api://cardsync-demo";

/// The operator: who runs `cardsync` against which admin API.
#[derive(Debug, Clone)]
pub struct Operator {
    /// The admin API's base URL.
    pub server: String,
    token: String,
}

/// The admin-api's settings that make graph-sim (at `graph_plain_url`, plain HTTP) its token
/// issuer, as Entra ID is in production.
pub fn issuer_env(graph_plain_url: &str) -> Vec<(String, String)> {
    vec![
        (
            "CARDSYNC__AUTH__JWKS_URL".into(),
            format!("{graph_plain_url}/common/discovery/v2.0/keys"),
        ),
        (
            "CARDSYNC__AUTH__AUDIENCES".into(),
            format!("[\"{API_URI}\"]"),
        ),
    ]
}

impl Operator {
    /// Registers the admin API's app (roles `reader`, `admin`) and an operator app granted
    /// `admin` in `tenant`'s directory, and signs the operator in (client credentials).
    pub async fn sign_in(
        control: &Control,
        graph_plain_url: &str,
        tenant: &str,
        server: String,
    ) -> anyhow::Result<Self> {
        let api = control
            .create_api_app(tenant, API_URI, &["reader", "admin"], 1)
            .await
            .context("registering the admin API's app")?;
        let operator = control
            .create_api_client(tenant, &api.client_id, &["admin"])
            .await
            .context("registering the operator's app")?;
        let secret = operator.secret.context("graph-sim returned no secret")?;
        let token = client_credentials_token(
            graph_plain_url,
            tenant,
            &operator.client_id,
            &secret,
            API_URI,
        )
        .await
        .context("the operator's token")?;
        Ok(Self { server, token })
    }

    /// Runs `cardsync args…` as the operator (with `extra_env`, e.g. a credential kept out of
    /// the command line); returns what it printed.
    pub fn cli(
        &self,
        binaries: &Binaries,
        args: &[&str],
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        let shown = format!("$ cardsync {}", args.join(" "));
        let output = self.run(binaries, args, extra_env)?;
        Ok(format!("{shown}\n{output}"))
    }

    /// The operator's bearer token (for a client other than the CLI, e.g. a load generator).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Runs `cardsync args…` as the operator; returns its standard output alone (`-o json`
    /// answers parse as they are).
    pub fn run(
        &self,
        binaries: &Binaries,
        args: &[&str],
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        let env = [
            ("CARDSYNC_SERVER".to_owned(), self.server.clone()),
            ("CARDSYNC_TOKEN".to_owned(), self.token.clone()),
        ];
        binaries.run("cardsync", args, &env, extra_env)
    }
}
