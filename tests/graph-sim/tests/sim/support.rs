//! Shared helpers: a spawned simulator with a tenant and an app, HTTP shortcuts, a webhook receiver, polling.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use graph_sim::{RunningSim, SimConfig};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub const GLOBAL_ADMIN: &str = "62e90394-69f5-4237-9190-012177145e10";
pub const GROUPS_ADMIN: &str = "fdd7a751-b60b-444a-984c-02652fe8fa1c";
pub const ALL_READ: &[&str] = &[
    "User.Read.All",
    "GroupMember.Read.All",
    "Group.Read.All",
    "RoleManagement.Read.Directory",
];

/// A simulator with one tenant and one secret-authenticated app.
pub struct Env {
    pub sim: RunningSim,
    pub http: reqwest::Client,
    pub tenant: String,
    pub domain: String,
    pub client_id: String,
    pub secret: String,
}

pub async fn env(perms: &[&str]) -> Env {
    env_with(
        SimConfig {
            workers: 1,
            ..SimConfig::default()
        },
        perms,
    )
    .await
}

pub async fn env_with(config: SimConfig, perms: &[&str]) -> Env {
    let sim = graph_sim::spawn(config).await.expect("simulator starts");
    let http = reqwest::Client::new();
    let control = sim.control_url().to_owned();
    let t: Value = http
        .post(format!("{control}/control/tenants"))
        .json(&json!({}))
        .send()
        .await
        .expect("tenant")
        .json()
        .await
        .expect("json");
    let tenant = t["id"].as_str().expect("tenant id").to_owned();
    let domain = t["domain"].as_str().expect("domain").to_owned();
    let app: Value = http
        .post(format!("{control}/control/tenants/{tenant}/apps"))
        .json(&json!({"secret": true, "permissions": perms, "displayName": "cardsync"}))
        .send()
        .await
        .expect("app")
        .json()
        .await
        .expect("json");
    Env {
        sim,
        http,
        tenant,
        domain,
        client_id: app["clientId"].as_str().expect("client id").to_owned(),
        secret: app["secret"].as_str().expect("secret").to_owned(),
    }
}

impl Env {
    pub fn control_url(&self, path: &str) -> String {
        format!("{}/control{path}", self.sim.control_url())
    }

    pub fn tenant_url(&self, path: &str) -> String {
        self.control_url(&format!("/tenants/{}{path}", self.tenant))
    }

    pub fn graph(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.sim.graph_url())
        }
    }

    /// Calls the control API; returns status and JSON body (Null when empty).
    pub async fn control(
        &self,
        method: Method,
        url: String,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("control call");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Control POST that must succeed.
    pub async fn post_ok(&self, url: String, body: Value) -> Value {
        let (status, v) = self.control(Method::POST, url, Some(body)).await;
        assert!(status.is_success(), "control call failed: {status} {v}");
        v
    }

    pub async fn put_ok(&self, url: String, body: Value) {
        let (status, v) = self.control(Method::PUT, url, Some(body)).await;
        assert!(status.is_success(), "control PUT failed: {status} {v}");
    }

    /// Creates a user; returns its id.
    pub async fn create_user(&self, name: &str) -> String {
        let body = json!({"displayName": name, "userPrincipalName": format!("{}@{}", name.to_lowercase().replace(' ', "."), self.domain), "givenName": name});
        self.post_ok(self.tenant_url("/users"), body).await["id"]
            .as_str()
            .expect("id")
            .to_owned()
    }

    pub async fn create_group(&self, name: &str) -> String {
        self.post_ok(self.tenant_url("/groups"), json!({"displayName": name}))
            .await["id"]
            .as_str()
            .expect("id")
            .to_owned()
    }

    pub async fn patch_user(&self, id: &str, body: Value) -> Value {
        let (status, v) = self
            .control(
                Method::PATCH,
                self.tenant_url(&format!("/users/{id}")),
                Some(body),
            )
            .await;
        assert!(status.is_success(), "patch failed: {status} {v}");
        v
    }

    pub async fn add_member(&self, group: &str, member: &str) {
        self.post_ok(
            self.tenant_url(&format!("/groups/{group}/members")),
            json!({"id": member}),
        )
        .await;
    }

    /// POSTs a token request form.
    pub async fn token_request(&self, tenant: &str, pairs: &[(&str, &str)]) -> (StatusCode, Value) {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        let resp = self
            .http
            .post(self.sim.token_url(tenant))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("token call");
        (resp.status(), resp.json().await.expect("token json"))
    }

    pub async fn token(&self) -> String {
        let pairs = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.secret.as_str()),
            ("scope", "https://graph.microsoft.com/.default"),
        ];
        let (status, body) = self.token_request(&self.tenant, &pairs).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["access_token"]
            .as_str()
            .expect("access token")
            .to_owned()
    }

    pub async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(self.graph(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("graph call")
    }

    pub async fn get_json(&self, token: &str, path: &str) -> Value {
        let resp = self.get(token, path).await;
        let status = resp.status();
        let body: Value = resp.json().await.expect("json");
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        body
    }

    /// Creates a subscription; returns status and body.
    pub async fn subscribe(&self, token: &str, body: Value) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(self.graph("/v1.0/subscriptions"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("subscribe");
        (resp.status(), resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn deliveries(&self) -> Vec<Value> {
        let (_, v) = self
            .control(
                Method::GET,
                self.control_url(&format!("/deliveries?tenant={}", self.tenant)),
                None,
            )
            .await;
        v["value"].as_array().cloned().unwrap_or_default()
    }

    pub async fn advance_clock(&self, seconds: u64) {
        self.post_ok(
            self.control_url("/clock/advance"),
            json!({"seconds": seconds}),
        )
        .await;
    }
}

/// An ISO timestamp `minutes` from now (real clock).
pub fn in_minutes(minutes: i64) -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::minutes(minutes);
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}

/// Polls `f` until it returns `Some`, failing after `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// How the webhook receiver answers.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Validation: echo the decoded token (true) or something else (false).
    pub echo_correctly: bool,
    /// Delay before answering a validation request.
    pub validation_delay_ms: u64,
    /// Fail this many notification POSTs with 500 first.
    pub fail_next: u32,
    /// Delay before answering notification POSTs.
    pub delay_ms: u64,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            echo_correctly: true,
            validation_delay_ms: 0,
            fail_next: 0,
            delay_ms: 0,
        }
    }
}

#[derive(Debug, Default)]
pub struct Seen {
    pub validations: Vec<(String, String)>,
    pub posts: Vec<Value>,
}

/// A webhook receiver on loopback.
pub struct Receiver {
    pub url: String,
    pub seen: Arc<Mutex<Seen>>,
    pub behaviour: Arc<Mutex<Behaviour>>,
    _handle: actix_web::dev::ServerHandle,
}

impl Receiver {
    pub async fn start(behaviour: Behaviour) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let behaviour = Arc::new(Mutex::new(behaviour));
        let (s, b) = (seen.clone(), behaviour.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let port = listener.local_addr().expect("addr").port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new((s.clone(), b.clone())))
                .default_service(web::to(receive))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}/hook?tenant=a%20b"),
            seen,
            behaviour,
            _handle: handle,
        }
    }

    /// All notification items received, in arrival order.
    pub fn items(&self) -> Vec<Value> {
        let seen = self.seen.lock().expect("lock");
        seen.posts
            .iter()
            .flat_map(|p| p["value"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    pub fn posts(&self) -> usize {
        self.seen.lock().expect("lock").posts.len()
    }

    pub fn validations(&self) -> Vec<(String, String)> {
        self.seen.lock().expect("lock").validations.clone()
    }

    /// Waits until at least `n` notification items arrived.
    pub async fn wait_items(&self, n: usize) -> Vec<Value> {
        eventually(10, &format!("{n} notifications"), || async {
            let items = self.items();
            (items.len() >= n).then_some(items)
        })
        .await
    }
}

type ReceiverState = web::Data<(Arc<Mutex<Seen>>, Arc<Mutex<Behaviour>>)>;

async fn receive(req: HttpRequest, body: web::Bytes, state: ReceiverState) -> HttpResponse {
    let (seen, behaviour) = (&state.0, &state.1);
    let query: Vec<(String, String)> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let b = behaviour.lock().expect("lock").clone();
    if let Some((_, token)) = query.iter().find(|(k, _)| k == "validationToken") {
        let ct = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        seen.lock()
            .expect("lock")
            .validations
            .push((token.clone(), ct));
        if b.validation_delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(b.validation_delay_ms)).await;
        }
        let answer = if b.echo_correctly {
            token.clone()
        } else {
            url::form_urlencoded::byte_serialize(token.as_bytes()).collect()
        };
        return HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(answer);
    }
    assert!(
        query.iter().any(|(k, v)| k == "tenant" && v == "a b"),
        "notification URL query parameters are preserved"
    );
    if b.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(b.delay_ms)).await;
    }
    if b.fail_next > 0 {
        behaviour.lock().expect("lock").fail_next -= 1;
        return HttpResponse::InternalServerError().finish();
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    seen.lock().expect("lock").posts.push(v);
    HttpResponse::Accepted().finish()
}
