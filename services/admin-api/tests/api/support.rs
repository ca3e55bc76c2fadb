//! `spawn()` and the pieces every test shares: graph-sim as the identity platform (an API app
//! with `reader` and `admin` roles, and client apps granted them), the admin-api on port 0, and
//! an HTTP client that reads problems.

use admin_api::{Application, Settings};
use cardsync_bus::{Publisher, Topology};
use cardsync_config::Sources;
use cardsync_testkit::{amqp_url, database_url, test_pool, unique_prefix};
use graph_sim::control_client::Control;
use graph_sim::{RunningSim, SimConfig};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The identity platform: one graph-sim.
pub struct Issuer {
    pub sim: RunningSim,
    pub control: Control,
    http: reqwest::Client,
}

/// One directory (Entra tenant) of the issuer, with the admin API's app registration and three
/// clients: one granted `admin`, one `reader`, one nothing.
#[derive(Debug, Clone)]
pub struct Directory {
    pub id: String,
    pub api_client: String,
    pub api_uri: String,
    pub admin: (String, String),
    pub reader: (String, String),
    pub nobody: (String, String),
}

impl Directory {
    /// The tenant id as a UUID (graph-sim tenants are GUIDs, as Entra's).
    pub fn uuid(&self) -> uuid::Uuid {
        uuid::Uuid::parse_str(&self.id).expect("graph-sim tenant ids are GUIDs")
    }
}

impl Issuer {
    pub async fn start() -> Self {
        Self::start_with(SimConfig::default()).await
    }

    pub async fn start_with(config: SimConfig) -> Self {
        cardsync_testkit::init();
        let sim = graph_sim::spawn(config).await.expect("graph-sim starts");
        let control = Control::new(sim.control_url());
        Self {
            sim,
            control,
            http: reqwest::Client::new(),
        }
    }

    /// A new directory whose admin API app answers to `api://cardsync-<tenant>`, issuing
    /// tokens of `version` (1 or 2).
    pub async fn directory(&self, version: u8) -> Directory {
        let id = self.control.create_tenant().await.expect("tenant");
        let api_uri = format!("api://cardsync-{}", &id[..8]);
        let api = self
            .control
            .create_api_app(&id, &api_uri, &["reader", "admin"], version)
            .await
            .expect("api app");
        let mut clients = Vec::new();
        for roles in [&["admin"][..], &["reader"][..], &[][..]] {
            let app = self
                .control
                .create_api_client(&id, &api.client_id, roles)
                .await
                .expect("client app");
            clients.push((app.client_id, app.secret.expect("secret")));
        }
        let nobody = clients.pop().expect("three clients");
        let reader = clients.pop().expect("three clients");
        let admin = clients.pop().expect("three clients");
        Directory {
            id,
            api_client: api.client_id,
            api_uri,
            admin,
            reader,
            nobody,
        }
    }

    /// The JWKS URL (graph-sim serves the same keys for every tenant, as Entra's common keys).
    pub fn jwks_url(&self) -> String {
        format!("{}/common/discovery/v2.0/keys", self.sim.graph_url())
    }

    /// A client-credentials token of `client` for `resource`'s `.default` scope.
    pub async fn token_for(
        &self,
        directory: &str,
        client: &(String, String),
        resource: &str,
    ) -> String {
        graph_sim::control_client::client_credentials_token(
            self.sim.graph_url(),
            directory,
            &client.0,
            &client.1,
            resource,
        )
        .await
        .expect("the issuer hands out the token")
    }

    /// A token of `client` for the directory's admin API.
    pub async fn token(&self, directory: &Directory, client: &(String, String)) -> String {
        self.token_for(&directory.id, client, &directory.api_uri)
            .await
    }

    /// The published keys.
    pub async fn jwks(&self) -> Value {
        self.http
            .get(self.jwks_url())
            .send()
            .await
            .expect("jwks")
            .json()
            .await
            .expect("jwks JSON")
    }
}

/// Settings for an admin-api trusting `issuer` for `directories` (v1 and v2 shapes).
pub fn settings_for(issuer: &Issuer, directories: &[&Directory]) -> Settings {
    let prefix = unique_prefix("tadm");
    // Each test's own photo store: a directory, as the rounds' default is.
    let photos = std::env::temp_dir().join(format!("cardsync-admin-photos-{prefix}"));
    let env: Vec<(String, String)> = vec![
        (
            "CARDSYNC__PHOTOS__URL".into(),
            photos.to_string_lossy().into_owned(),
        ),
        ("CARDSYNC__HTTP__LISTEN".into(), "127.0.0.1:0".into()),
        ("CARDSYNC__HTTP__SHUTDOWN_TIMEOUT".into(), "5s".into()),
        ("CARDSYNC__TOPOLOGY__PREFIX".into(), prefix),
        ("CARDSYNC__POSTGRES__URL".into(), database_url()),
        ("CARDSYNC__SECRETS__DEVELOPMENT".into(), "true".into()),
        ("CARDSYNC__POSTGRES__MAX_CONNECTIONS".into(), "4".into()),
        ("CARDSYNC__BUS__URL".into(), amqp_url()),
        ("CARDSYNC__BUS__CONNECT_TIMEOUT".into(), "20s".into()),
        ("CARDSYNC__BUS__CONFIRM_TIMEOUT".into(), "20s".into()),
        ("CARDSYNC__BUS__QUEUE_TYPE".into(), "classic".into()),
        (
            "CARDSYNC__GRAPH__AUTHORITY_URL".into(),
            issuer.sim.graph_url().to_owned(),
        ),
        (
            "CARDSYNC__GRAPH__GRAPH_URL".into(),
            issuer.sim.graph_url().to_owned(),
        ),
    ];
    let mut settings = Settings::load(&Sources {
        file: None,
        env: Some(env),
    })
    .expect("test settings are valid");
    settings.auth.jwks_url = Some(issuer.jwks_url());
    settings.auth.issuers = vec![
        "https://sts.windows.net/{tid}/".into(),
        "https://login.microsoftonline.com/{tid}/v2.0".into(),
    ];
    settings.auth.audiences = directories
        .iter()
        .flat_map(|directory| [directory.api_uri.clone(), directory.api_client.clone()])
        .collect();
    settings
}

/// A running admin-api.
pub struct TestApi {
    pub url: String,
    pub http: reqwest::Client,
    pub pool: PgPool,
    pub settings: Settings,
    pub topology: Topology,
    shutdown: CancellationToken,
    _server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for TestApi {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// What an API call answered.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub www_authenticate: Option<String>,
    pub body: Value,
}

impl Answer {
    /// The problem code (the end of `type`), for problem answers.
    pub fn problem(&self) -> &str {
        self.body["type"]
            .as_str()
            .and_then(|kind| kind.rsplit(':').next())
            .unwrap_or("")
    }

    /// Asserts a problem answer with `status` and `code`.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(self.content_type, "application/problem+json", "{self:?}");
        assert_eq!(self.problem(), code, "{self:?}");
        assert_eq!(self.body["status"], status, "{self:?}");
        assert!(
            self.body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{self:?}"
        );
    }

    /// Asserts `status` and returns the body.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        self.body
    }
}

/// Starts the admin-api with `settings`.
pub async fn spawn(settings: Settings) -> TestApi {
    let pool = test_pool().await;
    let application = Application::build(&settings)
        .await
        .expect("the admin-api builds");
    let url = format!("http://127.0.0.1:{}", application.port());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(application.run_until_stopped(shutdown.clone()));
    let topology = settings
        .topology
        .topology()
        .with_retry_delays(&settings.bus.retry_delays);
    TestApi {
        url,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client"),
        pool,
        settings,
        topology,
        shutdown,
        _server: server,
    }
}

impl TestApi {
    /// Any call; `token` as the bearer when given.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the admin-api answers");
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header("content-type").unwrap_or_default();
        let www_authenticate = header("www-authenticate");
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            content_type,
            www_authenticate,
            body,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call(Method::PUT, path, Some(token), Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call(Method::PATCH, path, Some(token), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Answer {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// Creates tenant `id` through the API.
    pub async fn create_tenant(&self, token: &str, id: uuid::Uuid, name: &str) -> Value {
        self.post("/v1/tenants", token, json!({ "id": id, "name": name }))
            .await
            .expect(201)
    }

    /// A publisher on the test's topology (declares it).
    pub async fn publisher(&self) -> Publisher {
        Publisher::connect(&self.settings.bus, self.topology.clone())
            .await
            .expect("RabbitMQ must run on 127.0.0.1:5672: run `make services`")
    }
}

/// An admin-api trusting a fresh issuer with one directory of v1 tokens, and an admin token.
pub struct Fixture {
    pub issuer: Issuer,
    pub directory: Directory,
    pub api: TestApi,
    pub admin: String,
    pub reader: String,
}

impl Fixture {
    pub async fn start() -> Self {
        let issuer = Issuer::start().await;
        let directory = issuer.directory(1).await;
        let api = spawn(settings_for(&issuer, &[&directory])).await;
        let admin = issuer.token(&directory, &directory.admin).await;
        let reader = issuer.token(&directory, &directory.reader).await;
        Self {
            issuer,
            directory,
            api,
            admin,
            reader,
        }
    }
}
