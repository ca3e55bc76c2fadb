//! The operator's path through the demo: the admin-api as a child process trusting graph-sim's
//! identity platform (its JWKS), an operator app granted the API's `admin` role, and the
//! `cardsync` CLI with the operator's token configuring the tenant through the API.

use crate::procs::Binaries;
use anyhow::Context as _;
use graph_sim::control_client::{Control, client_credentials_token};

/// The App ID URI the demo's admin API answers to.
pub const API_URI: &str = "api://cardsync-demo";

/// How often the operator fetches a new token: well inside graph-sim's (and Entra's) one-hour
/// token lifetime, so an operator of a run longer than an hour (`make soak`) is never refused.
const TOKEN_REFRESH: std::time::Duration = std::time::Duration::from_secs(20 * 60);

/// The operator: who runs `cardsync` against which admin API. Its token lives in a file that a
/// background task renews (`CARDSYNC_TOKEN_FILE`, as a workload's projected token is renewed),
/// since tokens expire after an hour.
#[derive(Debug, Clone)]
pub struct Operator {
    /// The admin API's base URL.
    pub server: String,
    token_file: std::sync::Arc<TokenFile>,
}

/// The token file, removed (and its renewal stopped) with the last operator holding it.
#[derive(Debug)]
struct TokenFile {
    path: std::path::PathBuf,
    renewal: tokio::task::JoinHandle<()>,
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        self.renewal.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes `token` to `path` (owner-only), replacing the file at once.
fn write_token(path: &std::path::Path, token: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let staged = path.with_extension("new");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&staged)
        .with_context(|| format!("writing {}", staged.display()))?;
    file.write_all(token.as_bytes())?;
    std::fs::rename(&staged, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
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
        let secret =
            secrecy::SecretString::from(operator.secret.context("graph-sim returned no secret")?);
        let (graph, tenant, client) = (
            graph_plain_url.to_owned(),
            tenant.to_owned(),
            operator.client_id,
        );
        let fetch = move || {
            let (graph, tenant, client, secret) = (
                graph.clone(),
                tenant.clone(),
                client.clone(),
                secret.clone(),
            );
            async move {
                use secrecy::ExposeSecret as _;
                client_credentials_token(&graph, &tenant, &client, secret.expose_secret(), API_URI)
                    .await
            }
        };
        let token = fetch().await.context("the operator's token")?;
        let path = std::env::temp_dir().join(format!(
            "cardsync-operator-{}.token",
            uuid::Uuid::new_v4().simple()
        ));
        write_token(&path, &token)?;
        let renewal = tokio::spawn({
            let path = path.clone();
            async move {
                loop {
                    tokio::time::sleep(TOKEN_REFRESH).await;
                    match fetch().await {
                        Ok(token) => {
                            if let Err(error) = write_token(&path, &token) {
                                eprintln!("renewing the operator's token: {error:#}");
                            }
                        }
                        Err(error) => eprintln!("renewing the operator's token: {error}"),
                    }
                }
            }
        });
        Ok(Self {
            server,
            token_file: std::sync::Arc::new(TokenFile { path, renewal }),
        })
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

    /// The operator's current bearer token (for a client other than the CLI, e.g. a load
    /// generator).
    pub fn token(&self) -> anyhow::Result<String> {
        let path = &self.token_file.path;
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
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
            (
                "CARDSYNC_TOKEN_FILE".to_owned(),
                self.token_file.path.display().to_string(),
            ),
        ];
        binaries.run("cardsync", args, &env, extra_env)
    }
}
