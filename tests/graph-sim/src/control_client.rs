//! A typed client of the control API, shared by every crate's tests, the demo and the benchmarks,
//! so none of them hand-writes control requests.

use reqwest::Method;
use serde_json::{Value, json};

/// Why a control call failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The simulator could not be reached.
    #[error("control API unreachable")]
    Transport(#[from] reqwest::Error),
    /// The simulator refused the call.
    #[error("control API answered {status}: {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The body it sent.
        body: String,
    },
}

/// An app registration created through the control API.
#[derive(Debug, Clone)]
pub struct AppRegistration {
    /// The app (client) id.
    pub client_id: String,
    /// The generated secret, when one was asked for.
    pub secret: Option<String>,
}

/// Every read permission cardsync needs.
pub const CARDSYNC_PERMISSIONS: &[&str] = &[
    "User.Read.All",
    "GroupMember.Read.All",
    "Group.Read.All",
    "RoleManagement.Read.Directory",
];

/// A client-credentials token from the simulator at `graph_url` for `resource`'s `.default`
/// scope (an App ID URI such as `api://…`, or Graph).
pub async fn client_credentials_token(
    graph_url: &str,
    tenant: &str,
    client_id: &str,
    secret: &str,
    resource: &str,
) -> Result<String, ControlError> {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/{tenant}/oauth2/v2.0/token",
            graph_url.trim_end_matches('/')
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
            ("scope", &format!("{resource}/.default")),
        ])
        .send()
        .await?;
    let status = response.status();
    let text = response.text().await?;
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    match body["access_token"].as_str() {
        Some(token) if status.is_success() => Ok(token.to_owned()),
        _ => Err(ControlError::Refused {
            status: status.as_u16(),
            body: text,
        }),
    }
}

/// The control API of one simulator.
#[derive(Debug, Clone)]
pub struct Control {
    http: reqwest::Client,
    base: String,
}

impl Control {
    /// A client for the control API at `control_url` (as [`crate::RunningSim::control_url`] gives it).
    pub fn new(control_url: &str) -> Self {
        Self {
            // Idle connections go before the server's keep-alive (120 s) closes them.
            http: reqwest::Client::builder()
                .pool_idle_timeout(std::time::Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            base: format!("{}/control", control_url.trim_end_matches('/')),
        }
    }

    /// Any control call; `path` starts with `/` under `/control`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ControlError> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0;
        let response = loop {
            let mut request = self.http.request(method.clone(), &url);
            if let Some(body) = &body {
                request = request.json(body);
            }
            match request.send().await {
                Ok(response) => break response,
                // A read is sent again when the connection failed under it (reset, refused);
                // a change is not, as the simulator may have made it.
                Err(error) if method == Method::GET && attempt < 2 && !error.is_timeout() => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(error) => return Err(error.into()),
            }
        };
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            return Err(ControlError::Refused {
                status: status.as_u16(),
                body: text,
            });
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Creates a tenant; returns its id.
    pub async fn create_tenant(&self) -> Result<String, ControlError> {
        let tenant = self.call(Method::POST, "/tenants", Some(json!({}))).await?;
        Ok(tenant["id"].as_str().unwrap_or_default().to_owned())
    }

    /// Registers an app with a generated secret and `permissions`.
    pub async fn create_secret_app(
        &self,
        tenant: &str,
        permissions: &[&str],
    ) -> Result<AppRegistration, ControlError> {
        self.create_app(
            tenant,
            json!({"secret": true, "permissions": permissions, "displayName": "cardsync"}),
        )
        .await
    }

    /// Registers an app from a raw control body (certificates, federated credentials …).
    pub async fn create_app(
        &self,
        tenant: &str,
        body: Value,
    ) -> Result<AppRegistration, ControlError> {
        let app = self
            .call(Method::POST, &format!("/tenants/{tenant}/apps"), Some(body))
            .await?;
        Ok(AppRegistration {
            client_id: app["clientId"].as_str().unwrap_or_default().to_owned(),
            secret: app["secret"].as_str().map(str::to_owned),
        })
    }

    /// Registers an app exposing an API at `uri` with app `roles`, issuing tokens of
    /// `version` (1 or 2, the manifest's `requestedAccessTokenVersion`).
    pub async fn create_api_app(
        &self,
        tenant: &str,
        uri: &str,
        roles: &[&str],
        version: u8,
    ) -> Result<AppRegistration, ControlError> {
        self.create_app(
            tenant,
            json!({
                "displayName": "API",
                "identifierUris": [uri],
                "appRoles": roles,
                "accessTokenVersion": version,
            }),
        )
        .await
    }

    /// Registers a client app with a generated secret, granted `roles` of the API app `api`.
    pub async fn create_api_client(
        &self,
        tenant: &str,
        api: &str,
        roles: &[&str],
    ) -> Result<AppRegistration, ControlError> {
        self.create_app(
            tenant,
            json!({"secret": true, "appRoleAssignments": { api: roles }}),
        )
        .await
    }

    /// Adds a token-signing key (the issuer rolls its keys); returns the new `kid`.
    pub async fn rotate_signing_key(&self) -> Result<String, ControlError> {
        let answer = self.call(Method::POST, "/keys/rotate", None).await?;
        Ok(answer["kid"].as_str().unwrap_or_default().to_owned())
    }

    /// Seeds `users` users (and groups) deterministically from `seed`.
    pub async fn seed(&self, tenant: &str, users: usize, seed: u64) -> Result<Value, ControlError> {
        self.call(
            Method::POST,
            &format!("/tenants/{tenant}/seed"),
            Some(json!({"users": users, "seed": seed})),
        )
        .await
    }

    /// Creates a user; returns the control API's answer (`user`, `change`).
    pub async fn create_user(
        &self,
        tenant: &str,
        properties: Value,
    ) -> Result<Value, ControlError> {
        self.call(
            Method::POST,
            &format!("/tenants/{tenant}/users"),
            Some(properties),
        )
        .await
    }

    /// Patches a user (`null` clears a property).
    pub async fn update_user(
        &self,
        tenant: &str,
        user: &str,
        properties: Value,
    ) -> Result<Value, ControlError> {
        self.call(
            Method::PATCH,
            &format!("/tenants/{tenant}/users/{user}"),
            Some(properties),
        )
        .await
    }

    /// Soft-deletes (or permanently deletes) a user.
    pub async fn delete_user(
        &self,
        tenant: &str,
        user: &str,
        permanent: bool,
    ) -> Result<Value, ControlError> {
        self.call(
            Method::DELETE,
            &format!("/tenants/{tenant}/users/{user}?permanent={permanent}"),
            None,
        )
        .await
    }

    /// Restores a soft-deleted user.
    pub async fn restore_user(&self, tenant: &str, user: &str) -> Result<Value, ControlError> {
        self.call(
            Method::POST,
            &format!("/tenants/{tenant}/users/{user}/restore"),
            None,
        )
        .await
    }

    /// Creates a group; returns the control API's answer.
    pub async fn create_group(
        &self,
        tenant: &str,
        properties: Value,
    ) -> Result<Value, ControlError> {
        self.call(
            Method::POST,
            &format!("/tenants/{tenant}/groups"),
            Some(properties),
        )
        .await
    }

    /// Patches a group (a rename, a description; `null` clears a property).
    pub async fn update_group(
        &self,
        tenant: &str,
        group: &str,
        properties: Value,
    ) -> Result<Value, ControlError> {
        self.call(
            Method::PATCH,
            &format!("/tenants/{tenant}/groups/{group}"),
            Some(properties),
        )
        .await
    }

    /// Adds a user or group to a group.
    pub async fn add_member(
        &self,
        tenant: &str,
        group: &str,
        member: &str,
    ) -> Result<Value, ControlError> {
        self.call(
            Method::POST,
            &format!("/tenants/{tenant}/groups/{group}/members"),
            Some(json!({"id": member})),
        )
        .await
    }

    /// Removes a member from a group.
    pub async fn remove_member(
        &self,
        tenant: &str,
        group: &str,
        member: &str,
    ) -> Result<Value, ControlError> {
        self.call(
            Method::DELETE,
            &format!("/tenants/{tenant}/groups/{group}/members/{member}"),
            None,
        )
        .await
    }

    /// Gives a user a directory role (by template id).
    pub async fn assign_role(
        &self,
        tenant: &str,
        template: &str,
        user: &str,
    ) -> Result<Value, ControlError> {
        self.call(
            Method::PUT,
            &format!("/tenants/{tenant}/roles/{template}/members/{user}"),
            None,
        )
        .await
    }

    /// Takes a directory role (by template id) away from a user.
    pub async fn remove_role(
        &self,
        tenant: &str,
        template: &str,
        user: &str,
    ) -> Result<Value, ControlError> {
        self.call(
            Method::DELETE,
            &format!("/tenants/{tenant}/roles/{template}/members/{user}"),
            None,
        )
        .await
    }

    /// Sets a user's photo.
    pub async fn set_photo(
        &self,
        tenant: &str,
        user: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> Result<(), ControlError> {
        let response = self
            .http
            .put(format!("{}/tenants/{tenant}/users/{user}/photo", self.base))
            .header("content-type", content_type)
            .body(bytes)
            .send()
            .await?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            return Err(ControlError::Refused {
                status,
                body: response.text().await.unwrap_or_default(),
            });
        }
        Ok(())
    }

    /// Removes a user's photo.
    pub async fn clear_photo(&self, tenant: &str, user: &str) -> Result<Value, ControlError> {
        self.call(
            Method::DELETE,
            &format!("/tenants/{tenant}/users/{user}/photo"),
            None,
        )
        .await
    }

    /// The tenant's whole directory as JSON.
    pub async fn snapshot(&self, tenant: &str) -> Result<Value, ControlError> {
        self.call(Method::GET, &format!("/tenants/{tenant}/snapshot"), None)
            .await
    }

    /// Request counters, optionally for one tenant.
    pub async fn counters(&self, tenant: Option<&str>) -> Result<Value, ControlError> {
        let path = match tenant {
            Some(tenant) => format!("/counters?tenant={tenant}"),
            None => "/counters".to_owned(),
        };
        self.call(Method::GET, &path, None).await
    }

    /// Replaces the fault rules (`[{"endpoint","kind","remaining","delayMs","retryAfter"}]`).
    pub async fn set_faults(&self, rules: Value) -> Result<Value, ControlError> {
        self.call(Method::PUT, "/faults", Some(rules)).await
    }

    /// Sets the tenant's delta switches (`defaultPageSize`, replays, expiry, forced resync …).
    pub async fn set_delta(&self, tenant: &str, switches: Value) -> Result<Value, ControlError> {
        self.call(
            Method::PUT,
            &format!("/tenants/{tenant}/delta"),
            Some(switches),
        )
        .await
    }

    /// Sets the delivery profile (delay, loss, duplicates, reordering …).
    pub async fn set_delivery(&self, profile: Value) -> Result<Value, ControlError> {
        self.call(Method::PUT, "/delivery", Some(profile)).await
    }

    /// Moves the simulated clock forward.
    pub async fn advance_clock(&self, seconds: u64) -> Result<Value, ControlError> {
        self.call(
            Method::POST,
            "/clock/advance",
            Some(json!({"seconds": seconds})),
        )
        .await
    }
}
