//! The Graph client: one HTTP connection pool, cached tokens per tenant, budgets and retries.

use crate::budget::TenantBudgets;
use crate::credential::{self, AccessToken, TenantConnection};
use crate::delta::DeltaPage;
use crate::error::{GraphError, TokenError};
use crate::metrics::GraphMetrics;
use crate::retry::{backoff, parse_retry_after};
use crate::settings::GraphSettings;
use reqwest::{Method, StatusCode, header};
use secrecy::ExposeSecret as _;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument as _;

/// Resource units a request costs in Graph's identity throttling model (graph-facts §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestCost(pub u32);

impl RequestCost {
    /// Any identity GET with `$select` (base 1, −1 for `$select`, minimum 1).
    pub const LIGHT: Self = Self(1);
    /// `GET /users` (base 2, −1 with `$select`).
    pub const USERS: Self = Self(1);
    /// `GET /groups/{id}/transitiveMembers` (base 5, −1 with `$select`).
    pub const TRANSITIVE_MEMBERS: Self = Self(4);
}

/// Profile photo metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhotoMeta {
    /// `@odata.mediaEtag`: changes whenever the photo does.
    pub etag: Option<String>,
    /// `@odata.mediaContentType`.
    pub content_type: Option<String>,
    /// The largest available size's width in pixels, when reported.
    pub width: Option<u32>,
}

/// One cached token; the async mutex makes its refresh single-flight.
type TokenSlot = Arc<tokio::sync::Mutex<Option<CachedToken>>>;

#[derive(Clone)]
struct CachedToken {
    token: AccessToken,
    refresh_at: Instant,
}

/// Talks to Graph for any number of tenants. Cheap to clone.
#[derive(Clone)]
pub struct GraphClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    settings: GraphSettings,
    budgets: TenantBudgets,
    /// Cached tokens by (tenant, client id); the async mutex makes refreshes single-flight.
    tokens: Mutex<HashMap<(String, String), TokenSlot>>,
    metrics: std::sync::OnceLock<GraphMetrics>,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient")
            .field("graph_url", &self.inner.settings.graph_url.as_str())
            .finish_non_exhaustive()
    }
}

impl GraphClient {
    /// Builds the client (one connection pool for all tenants). Requires a rustls crypto
    /// provider to be installed by the process.
    pub fn new(settings: GraphSettings) -> Result<Self, GraphError> {
        let mut builder = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("cardsync/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(90));
        if let Some(path) = &settings.extra_ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                GraphError::BadResponse(format!("extra CA {}: {e}", path.display()))
            })?;
            let certificate = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                GraphError::BadResponse(format!("extra CA {} is not PEM: {e}", path.display()))
            })?;
            builder = builder.add_root_certificate(certificate);
        }
        let http = builder
            .build()
            .map_err(|e| GraphError::BadResponse(format!("HTTP client: {e}")))?;
        let budgets = TenantBudgets::new(settings.tenant_budget_units, Duration::from_secs(10));
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                settings,
                budgets,
                tokens: Mutex::new(HashMap::new()),
                metrics: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Counts every Graph answer in `metrics` (the first call wins).
    pub fn with_metrics(self, metrics: &GraphMetrics) -> Self {
        let _ = self.inner.metrics.set(metrics.clone());
        self
    }

    fn answered(&self, connection: &TenantConnection, status: Option<u16>) {
        if let Some(metrics) = self.inner.metrics.get() {
            metrics.answered(&connection.tenant_id, status);
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> &GraphSettings {
        &self.inner.settings
    }

    /// An absolute URL for a Graph v1.0 path such as `/users/{id}`.
    pub fn url(&self, path: &str) -> String {
        format!(
            "{}/v1.0{path}",
            self.inner.settings.graph_url.as_str().trim_end_matches('/')
        )
    }

    /// Fetches one delta page (an initial URL, a nextLink or a deltaLink, used unchanged).
    /// `minimal` asks for changed properties only (`Prefer: return=minimal`), valid on deltaLinks.
    pub async fn delta_page(
        &self,
        connection: &TenantConnection,
        url: &str,
        minimal: bool,
    ) -> Result<DeltaPage, GraphError> {
        let prefer = minimal.then_some("return=minimal");
        let body = self
            .fetch(connection, url, RequestCost::LIGHT, prefer)
            .await?;
        DeltaPage::parse(&body)
    }

    /// GETs a JSON document.
    pub async fn get_json(
        &self,
        connection: &TenantConnection,
        url: &str,
        cost: RequestCost,
    ) -> Result<Value, GraphError> {
        let body = self.fetch(connection, url, cost, None).await?;
        serde_json::from_slice(&body).map_err(|e| GraphError::BadResponse(format!("not JSON: {e}")))
    }

    /// POSTs `body` to a Graph action and reads its JSON answer.
    pub async fn post_json(
        &self,
        connection: &TenantConnection,
        url: &str,
        body: &Value,
        cost: RequestCost,
    ) -> Result<Value, GraphError> {
        let response = self
            .call(connection, Method::POST, url, Some(body), cost, None)
            .await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| GraphError::BadResponse(format!("body: {e}")))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| GraphError::BadResponse(format!("not JSON: {e}")))
    }

    /// Every item of a paged collection, following `@odata.nextLink`.
    pub async fn get_all(
        &self,
        connection: &TenantConnection,
        url: &str,
        cost: RequestCost,
    ) -> Result<Vec<Value>, GraphError> {
        let mut items = Vec::new();
        let mut next = Some(url.to_owned());
        while let Some(url) = next.take() {
            let mut page = self.get_json(connection, &url, cost).await?;
            match page.get_mut("value").map(Value::take) {
                Some(Value::Array(values)) => items.extend(values),
                _ => {
                    return Err(GraphError::BadResponse(
                        "collection page has no value array".into(),
                    ));
                }
            }
            next = page
                .get("@odata.nextLink")
                .and_then(Value::as_str)
                .map(str::to_owned);
        }
        Ok(items)
    }

    /// Ids of every user that is a member of `group_id`, directly or through nested groups.
    pub async fn transitive_user_ids(
        &self,
        connection: &TenantConnection,
        group_id: &str,
    ) -> Result<Vec<String>, GraphError> {
        let url = self.url(&format!(
            "/groups/{group_id}/transitiveMembers/microsoft.graph.user?$select=id"
        ));
        let members = self
            .get_all(connection, &url, RequestCost::TRANSITIVE_MEMBERS)
            .await?;
        Ok(ids(&members))
    }

    /// Ids of the users holding a directory role, by its template id; an inactive role has none.
    pub async fn role_member_ids(
        &self,
        connection: &TenantConnection,
        role_template_id: &str,
    ) -> Result<Vec<String>, GraphError> {
        let url = self.url(&format!(
            "/directoryRoles/roleTemplateId={role_template_id}/members?$select=id"
        ));
        match self.get_all(connection, &url, RequestCost::LIGHT).await {
            Ok(members) => Ok(ids(&members)),
            // /directoryRoles lists only activated roles: never activated means nobody holds it.
            Err(GraphError::NotFound) => Ok(Vec::new()),
            Err(error) => Err(error),
        }
    }

    /// A user's photo metadata, `None` when the user has no photo.
    pub async fn photo_meta(
        &self,
        connection: &TenantConnection,
        user_id: &str,
    ) -> Result<Option<PhotoMeta>, GraphError> {
        let url = self.url(&format!("/users/{user_id}/photo"));
        match self.get_json(connection, &url, RequestCost::LIGHT).await {
            // A user without a photo may get a 1x1 placeholder with an empty etag (profilePhoto-get doc).
            Ok(meta) if meta.get("@odata.mediaEtag").and_then(Value::as_str) == Some("") => {
                Ok(None)
            }
            Ok(meta) => Ok(Some(PhotoMeta {
                etag: meta
                    .get("@odata.mediaEtag")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                content_type: meta
                    .get("@odata.mediaContentType")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                width: meta
                    .get("width")
                    .and_then(Value::as_u64)
                    .and_then(|w| u32::try_from(w).ok()),
            })),
            Err(GraphError::NotFound) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// A user's photo bytes and content type, `None` when the user has no photo (or none of
    /// that size): `size` picks `/photos/{n}x{n}/$value`, `None` the largest (`/photo/$value`).
    pub async fn photo_bytes(
        &self,
        connection: &TenantConnection,
        user_id: &str,
        size: Option<u32>,
    ) -> Result<Option<(bytes::Bytes, String)>, GraphError> {
        let url = self.url(&match size {
            Some(n) => format!("/users/{user_id}/photos/{n}x{n}/$value"),
            None => format!("/users/{user_id}/photo/$value"),
        });
        match self.send(connection, &url, RequestCost::LIGHT, None).await {
            Ok(response) => {
                let content_type = response
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/octet-stream")
                    .to_owned();
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|e| GraphError::BadResponse(format!("photo body: {e}")))?;
                Ok(Some((bytes, content_type)))
            }
            Err(GraphError::NotFound) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Obtains (or reuses) an access token, as a connection test does.
    pub async fn check_credentials(&self, connection: &TenantConnection) -> Result<(), GraphError> {
        self.token(connection, false)
            .await
            .map(|_| ())
            .map_err(GraphError::from)
    }

    async fn fetch(
        &self,
        connection: &TenantConnection,
        url: &str,
        cost: RequestCost,
        prefer: Option<&str>,
    ) -> Result<bytes::Bytes, GraphError> {
        let response = self.send(connection, url, cost, prefer).await?;
        response
            .bytes()
            .await
            .map_err(|e| GraphError::BadResponse(format!("body: {e}")))
    }

    /// A GET through [`GraphClient::call`].
    async fn send(
        &self,
        connection: &TenantConnection,
        url: &str,
        cost: RequestCost,
        prefer: Option<&str>,
    ) -> Result<reqwest::Response, GraphError> {
        self.call(connection, Method::GET, url, None, cost, prefer)
            .await
    }

    /// One Graph request (retries included) as a client span: the path only, since the query
    /// carries delta and skip tokens, and the final status.
    pub(crate) async fn call(
        &self,
        connection: &TenantConnection,
        method: Method,
        url: &str,
        body: Option<&Value>,
        cost: RequestCost,
        prefer: Option<&str>,
    ) -> Result<reqwest::Response, GraphError> {
        let path = url::Url::parse(url).map_or_else(|_| String::new(), |u| u.path().to_owned());
        let span = tracing::info_span!(
            "graph request",
            otel.kind = "client",
            http.request.method = %method,
            url.path = %path,
            tenant = %connection.tenant_id,
            http.response.status_code = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        let result = self
            .send_attempts(connection, method, url, body, cost, prefer)
            .instrument(span.clone())
            .await;
        match &result {
            Ok(response) => {
                span.record("http.response.status_code", response.status().as_u16());
            }
            Err(error) => {
                span.record("error", error.to_string());
            }
        }
        result
    }

    /// The request loop: budget, token, send, and one place that decides retry versus error.
    async fn send_attempts(
        &self,
        connection: &TenantConnection,
        method: Method,
        url: &str,
        body: Option<&Value>,
        cost: RequestCost,
        prefer: Option<&str>,
    ) -> Result<reqwest::Response, GraphError> {
        let settings = &self.inner.settings;
        let mut refreshed = false;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.inner
                .budgets
                .spend(&connection.tenant_id, cost.0)
                .await;
            let token = self.token(connection, false).await?;
            let mut request = self
                .inner
                .http
                .request(method.clone(), url)
                .bearer_auth(token.secret.expose_secret());
            if method == Method::GET {
                request = request.header("ConsistencyLevel", "eventual");
            }
            if let Some(prefer) = prefer {
                request = request.header("Prefer", prefer);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let sent = request.send().await;
            self.answered(
                connection,
                sent.as_ref()
                    .ok()
                    .map(|response| response.status().as_u16()),
            );
            let failure: Box<dyn std::error::Error + Send + Sync> = match sent {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get(header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, time::OffsetDateTime::now_utc()));
                    let location = response
                        .headers()
                        .get(header::LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let (code, message) = error_detail(response).await;
                    match classify(status, &code, &message, location) {
                        Verdict::Fail(error) => return Err(error),
                        Verdict::RefreshToken if !refreshed => {
                            refreshed = true;
                            self.forget_token(connection).await;
                            attempt -= 1;
                            continue;
                        }
                        Verdict::RefreshToken => return Err(GraphError::Unauthorized),
                        Verdict::Retry => {
                            if attempt >= settings.max_attempts {
                                if status == StatusCode::TOO_MANY_REQUESTS
                                    || status == StatusCode::SERVICE_UNAVAILABLE
                                {
                                    let retry_after = retry_after.unwrap_or_else(|| {
                                        backoff(
                                            attempt,
                                            settings.backoff_base,
                                            settings.backoff_cap,
                                        )
                                    });
                                    return Err(GraphError::Throttled { retry_after });
                                }
                                return Err(GraphError::Unavailable {
                                    attempts: attempt,
                                    last: format!("{status} ({code})").into(),
                                });
                            }
                            let wait = retry_after
                                .unwrap_or_else(|| {
                                    backoff(attempt, settings.backoff_base, settings.backoff_cap)
                                })
                                .min(settings.backoff_cap);
                            tracing::debug!(%status, code, attempt, ?wait, "graph retry");
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                    }
                }
                Err(error) => Box::new(error),
            };
            if attempt >= settings.max_attempts {
                return Err(GraphError::Unavailable {
                    attempts: attempt,
                    last: failure,
                });
            }
            let wait = backoff(attempt, settings.backoff_base, settings.backoff_cap);
            tracing::debug!(error = %failure, attempt, ?wait, "graph transport retry");
            tokio::time::sleep(wait).await;
        }
    }

    async fn slot(
        &self,
        connection: &TenantConnection,
    ) -> Arc<tokio::sync::Mutex<Option<CachedToken>>> {
        let key = (connection.tenant_id.clone(), connection.client_id.clone());
        let mut tokens = self
            .inner
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tokens.entry(key).or_default().clone()
    }

    async fn token(
        &self,
        connection: &TenantConnection,
        force: bool,
    ) -> Result<AccessToken, TokenError> {
        let slot = self.slot(connection).await;
        let mut cached = slot.lock().await;
        if !force
            && let Some(cached) = cached.as_ref()
            && Instant::now() < cached.refresh_at
        {
            return Ok(cached.token.clone());
        }
        let token = credential::acquire(
            &self.inner.http,
            &self.inner.settings.authority_url,
            connection,
        )
        .await?;
        // Refresh a margin before expiry, but never later than half-way through a short-lived token.
        let lead = self
            .inner
            .settings
            .token_refresh_margin
            .min(token.lifetime / 2);
        *cached = Some(CachedToken {
            token: token.clone(),
            refresh_at: Instant::now() + token.lifetime - lead,
        });
        Ok(token)
    }

    async fn forget_token(&self, connection: &TenantConnection) {
        *self.slot(connection).await.lock().await = None;
    }
}

enum Verdict {
    Retry,
    RefreshToken,
    Fail(GraphError),
}

/// The one place that maps a Graph error response to a decision.
fn classify(status: StatusCode, code: &str, message: &str, location: Option<String>) -> Verdict {
    let expired = code.eq_ignore_ascii_case("syncStateNotFound")
        || code.eq_ignore_ascii_case("resyncRequired");
    match status.as_u16() {
        401 => Verdict::RefreshToken,
        // A Location names where the full resynchronisation starts, whatever the code says.
        410 => match location {
            Some(location) => Verdict::Fail(GraphError::ResyncRequired { location }),
            None => Verdict::Fail(GraphError::DeltaTokenExpired {
                code: code.to_owned(),
            }),
        },
        400..=499 if expired => Verdict::Fail(GraphError::DeltaTokenExpired {
            code: code.to_owned(),
        }),
        // Graph names the limit in the message only (graph-facts §4); the code is generic.
        403 if is_subscription_quota(message) => Verdict::Fail(GraphError::SubscriptionQuota {
            message: message.to_owned(),
        }),
        403 => Verdict::Fail(GraphError::Forbidden {
            code: code.to_owned(),
        }),
        404 => Verdict::Fail(GraphError::NotFound),
        409 => Verdict::Fail(GraphError::Conflict {
            message: message.to_owned(),
        }),
        408 | 429 | 500..=599 => Verdict::Retry,
        status => Verdict::Fail(GraphError::Rejected {
            status,
            code: code.to_owned(),
        }),
    }
}

/// Graph's `error.code` and `error.message` (at most 512 characters), or empty strings.
async fn error_detail(response: reqwest::Response) -> (String, String) {
    let body = response.bytes().await.unwrap_or_default();
    let document = serde_json::from_slice::<Value>(&body).ok();
    let text = |pointer: &str| {
        document
            .as_ref()
            .and_then(|v| v.pointer(pointer))
            .and_then(Value::as_str)
            .map(|s| s.chars().take(512).collect::<String>())
            .unwrap_or_default()
    };
    (text("/error/code"), text("/error/message"))
}

/// Whether a 403's message is about the subscription quota rather than a missing permission.
fn is_subscription_quota(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("maximum number of subscriptions")
        || (message.contains("subscription") && message.contains("quota"))
}

fn ids(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .filter_map(|o| o.get("id").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_delta_tokens_and_resets_are_told_apart() {
        assert!(matches!(
            classify(StatusCode::GONE, "SyncStateNotFound", "", None),
            Verdict::Fail(GraphError::DeltaTokenExpired { .. })
        ));
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, "syncStateNotFound", "", None),
            Verdict::Fail(GraphError::DeltaTokenExpired { .. })
        ));
        assert!(matches!(
            classify(
                StatusCode::GONE,
                "",
                "",
                Some("https://g/v1.0/users/delta?$deltatoken=".into())
            ),
            Verdict::Fail(GraphError::ResyncRequired { .. })
        ));
    }

    #[test]
    fn throttling_and_server_errors_retry_and_client_errors_do_not() {
        for status in [429, 500, 502, 503, 504] {
            assert!(
                matches!(
                    classify(StatusCode::from_u16(status).unwrap(), "", "", None),
                    Verdict::Retry
                ),
                "{status}"
            );
        }
        assert!(matches!(
            classify(StatusCode::UNAUTHORIZED, "", "", None),
            Verdict::RefreshToken
        ));
        assert!(matches!(
            classify(StatusCode::FORBIDDEN, "accessDenied", "", None),
            Verdict::Fail(GraphError::Forbidden { .. })
        ));
        assert!(matches!(
            classify(StatusCode::NOT_FOUND, "", "", None),
            Verdict::Fail(GraphError::NotFound)
        ));
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, "x", "", None),
            Verdict::Fail(GraphError::Rejected { status: 400, .. })
        ));
    }

    #[test]
    fn a_quota_403_and_a_conflict_are_named_by_what_failed() {
        let quota = "Operation: Create; Exception: [Status Code: Forbidden; Reason: The maximum number of subscriptions (100) for this application in this tenant has been reached.]";
        assert!(matches!(
            classify(StatusCode::FORBIDDEN, "ExtensionError", quota, None),
            Verdict::Fail(GraphError::SubscriptionQuota { .. })
        ));
        assert!(matches!(
            classify(
                StatusCode::FORBIDDEN,
                "ExtensionError",
                "Access denied",
                None
            ),
            Verdict::Fail(GraphError::Forbidden { .. })
        ));
        assert!(matches!(
            classify(
                StatusCode::CONFLICT,
                "ExtensionError",
                "Subscription Id 1 already exists",
                None
            ),
            Verdict::Fail(GraphError::Conflict { .. })
        ));
    }
}
