//! `/v1/tenants/{tenant}/connection`: put (credential sealed), show (without the credential),
//! delete, and test (a token, the users and groups in scope counted with `$count`, each missing
//! Graph permission named).

use super::{audit, optional_body, rfc3339, visible_tenant};
use crate::error::ApiError;
use crate::openapi::Refusals;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use cardsync_auth::Principal;
use cardsync_graph::{GraphClient, GraphError, RequestCost, TenantConnection};
use cardsync_store::admin::{self, ConnectionSummary};
use cardsync_store::connections::{self, Connection, ConnectionError, CredentialKind};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

pub(super) fn configure(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/tenants/{tenant}/connection")
                .route(web::get().to(show))
                .route(web::put().to(put))
                .route(web::delete().to(delete)),
        )
        .service(web::resource("/tenants/{tenant}/connection/test").route(web::post().to(test)));
}

/// How the app signs in, as the API names it.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    Secret,
    Certificate,
    Federated,
}

impl From<Kind> for CredentialKind {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Secret => CredentialKind::Secret,
            Kind::Certificate => CredentialKind::Certificate,
            Kind::Federated => CredentialKind::Federated,
        }
    }
}

/// A connection as the API shows it: never the credential.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ConnectionView {
    tenant_id: Uuid,
    client_id: String,
    kind: String,
    updated_at: String,
}

impl ConnectionView {
    fn of(tenant_id: Uuid, summary: ConnectionSummary) -> Self {
        Self {
            tenant_id,
            client_id: summary.client_id,
            kind: summary.credential_kind,
            updated_at: rfc3339(summary.updated_at),
        }
    }
}

/// A connection to store or test.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewConnection {
    /// The app's client id (1 to 256 bytes, not blank, no control characters).
    #[schema(
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    client_id: String,
    kind: Kind,
    /// A client secret, a PEM bundle (certificate and private key), or a federated token file
    /// (up to 64 KiB, not blank).
    #[schema(value_type = String, max_length = 65536, pattern = r"\S")]
    credential: SecretString,
}

impl NewConnection {
    pub(crate) fn check(&self) -> Result<(), ApiError> {
        let client = self.client_id.trim();
        if client.is_empty() || client.len() > 256 || client.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                "invalid-client-id",
                "client_id must be 1 to 256 characters",
            ));
        }
        let credential = self.credential.expose_secret();
        if credential.trim().is_empty() || credential.len() > 64 * 1024 {
            return Err(ApiError::invalid(
                "invalid-credential",
                "credential must be 1 byte to 64 KiB",
            ));
        }
        Ok(())
    }

    fn into_connection(self, tenant_id: Uuid) -> Connection {
        Connection {
            tenant_id,
            client_id: self.client_id.trim().to_owned(),
            kind: self.kind.into(),
            credential: self.credential,
        }
    }
}

pub(super) fn sealing_failed(error: ConnectionError) -> ApiError {
    match error {
        ConnectionError::Store(store) => store.into(),
        other => ApiError::Internal(other.into()),
    }
}

#[utoipa::path(get, operation_id = "connections_show", path = "/v1/tenants/{tenant}/connection", tag = "connections", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)")), responses((status = 200, description = "The connection, without its credential", body = ConnectionView), Refusals))]
pub(crate) async fn show(
    state: web::Data<AppState>,
    caller: Principal,
    tenant: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let tenant = visible_tenant(&state, &caller, *tenant).await?;
    let summary = admin::connection(&state.pool, tenant.tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found("connection", tenant.tenant_id))?;
    Ok(HttpResponse::Ok().json(ConnectionView::of(tenant.tenant_id, summary)))
}

#[utoipa::path(put, operation_id = "connections_put", path = "/v1/tenants/{tenant}/connection", tag = "connections", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)")), request_body = NewConnection, responses((status = 200, description = "Stored (the credential sealed)", body = ConnectionView), Refusals))]
pub(crate) async fn put(
    state: web::Data<AppState>,
    caller: Principal,
    tenant: web::Path<Uuid>,
    body: web::Json<NewConnection>,
) -> Result<HttpResponse, ApiError> {
    // A connection needs its tenant first: an initial sync of a tenant without configuration
    // would be dead-lettered for good.
    let tenant = visible_tenant(&state, &caller, *tenant).await?.tenant_id;
    let body = body.into_inner();
    body.check()?;
    let before = admin::connection(&state.pool, tenant).await?;
    connections::put(&state.pool, &state.sealing, &body.into_connection(tenant))
        .await
        .map_err(sealing_failed)?;
    let after = admin::connection(&state.pool, tenant)
        .await?
        .ok_or_else(|| ApiError::not_found("connection", tenant))?;
    let view = ConnectionView::of(tenant, after);
    audit(
        &state.pool,
        &caller,
        Some(tenant),
        "connection.put",
        None,
        before.map(|b| json!(ConnectionView::of(tenant, b))),
        Some(json!(view)),
    )
    .await?;
    Ok(HttpResponse::Ok().json(view))
}

#[utoipa::path(delete, operation_id = "connections_delete", path = "/v1/tenants/{tenant}/connection", tag = "connections", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)")), responses((status = 204, description = "Removed"), Refusals))]
pub(crate) async fn delete(
    state: web::Data<AppState>,
    caller: Principal,
    tenant: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let tenant = visible_tenant(&state, &caller, *tenant).await?.tenant_id;
    let mut tx = state.pool.begin().await?;
    let before = admin::connection(&mut *tx, tenant)
        .await?
        .ok_or_else(|| ApiError::not_found("connection", tenant))?;
    connections::remove(&mut *tx, tenant).await?;
    audit(
        &mut *tx,
        &caller,
        Some(tenant),
        "connection.delete",
        None,
        Some(json!(ConnectionView::of(tenant, before))),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}

/// What a connection test found.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TestReport {
    /// Whether a token was obtained.
    token: bool,
    /// Why not, when no token was obtained.
    #[serde(skip_serializing_if = "Option::is_none")]
    token_error: Option<String>,
    /// Users of the tenant (`/users/$count`).
    #[serde(skip_serializing_if = "Option::is_none")]
    users: Option<u64>,
    /// Users in scope: all users, or the nested members of the scope's groups (summed).
    #[serde(skip_serializing_if = "Option::is_none")]
    users_in_scope: Option<u64>,
    /// Groups of the tenant (`/groups/$count`).
    #[serde(skip_serializing_if = "Option::is_none")]
    groups: Option<u64>,
    /// Graph application permissions the app lacks for what cardsync reads.
    #[schema(value_type = Vec<String>)]
    missing_permissions: Vec<&'static str>,
    /// Everything needed works.
    ok: bool,
}

/// One probe: a call and the permission it needs.
async fn count(
    graph: &GraphClient,
    connection: &TenantConnection,
    path: &str,
    permission: &'static str,
    missing: &mut Vec<&'static str>,
) -> Result<Option<u64>, ApiError> {
    match graph
        .get_json(connection, &graph.url(path), RequestCost::LIGHT)
        .await
    {
        Ok(value) => Ok(value.as_u64()),
        Err(GraphError::Forbidden { .. }) => {
            if !missing.contains(&permission) {
                missing.push(permission);
            }
            Ok(None)
        }
        Err(GraphError::NotFound) => Ok(None),
        Err(error) => Err(ApiError::Graph(error.to_string())),
    }
}

async fn run_test(
    state: &AppState,
    tenant: Uuid,
    connection: TenantConnection,
) -> Result<TestReport, ApiError> {
    // A client of its own: the shared one caches tokens by client id, and a test must really
    // sign in with the credential it was given.
    let graph = GraphClient::new(state.graph.settings().clone())
        .map_err(|error| ApiError::Internal(error.into()))?;
    if let Err(error) = graph.check_credentials(&connection).await {
        return Ok(TestReport {
            token: false,
            token_error: Some(error.to_string()),
            users: None,
            users_in_scope: None,
            groups: None,
            missing_permissions: Vec::new(),
            ok: false,
        });
    }
    let mut missing = Vec::new();
    let users = count(
        &graph,
        &connection,
        "/users/$count",
        "User.Read.All",
        &mut missing,
    )
    .await?;
    let groups = count(
        &graph,
        &connection,
        "/groups/$count",
        "Group.Read.All",
        &mut missing,
    )
    .await?;
    let scope = cardsync_store::directory::scope(&state.pool, tenant).await?;
    let users_in_scope = match scope {
        None => users,
        Some(groups) => {
            let mut total = Some(0u64);
            for group in groups {
                let path = format!("/groups/{group}/transitiveMembers/microsoft.graph.user/$count");
                let counted = count(
                    &graph,
                    &connection,
                    &path,
                    "GroupMember.Read.All",
                    &mut missing,
                )
                .await?;
                total = total.zip(counted).map(|(sum, n)| sum + n);
            }
            total
        }
    };
    let roles_path = format!(
        "/directoryRoles/roleTemplateId={}/members?$select=id",
        cardsync_graph::role_templates::GLOBAL_ADMINISTRATOR
    );
    count(
        &graph,
        &connection,
        &roles_path,
        "RoleManagement.Read.Directory",
        &mut missing,
    )
    .await?;
    Ok(TestReport {
        token: true,
        token_error: None,
        users,
        users_in_scope,
        groups,
        ok: missing.is_empty(),
        missing_permissions: missing,
    })
}

/// Tests the stored connection, or the one in the body before it is saved.
#[utoipa::path(post, operation_id = "connections_test", path = "/v1/tenants/{tenant}/connection/test", tag = "connections", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)")), request_body(content = Option<NewConnection>, description = "A connection to test before saving it; none: the stored one"), responses((status = 200, description = "What the test found", body = TestReport), Refusals))]
pub(crate) async fn test(
    state: web::Data<AppState>,
    caller: Principal,
    tenant: web::Path<Uuid>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let tenant = visible_tenant(&state, &caller, *tenant).await?.tenant_id;
    let stored = match optional_body::<NewConnection>(&body)? {
        Some(body) => {
            body.check()?;
            body.into_connection(tenant)
        }
        None => connections::get(&state.pool, &state.sealing, tenant)
            .await
            .map_err(sealing_failed)?
            .ok_or_else(|| ApiError::not_found("connection", tenant))?,
    };
    let connection = cardsync_rounds::graph_connection(stored);
    let report = tokio::time::timeout(
        state.admin.connection_test_timeout,
        run_test(&state, tenant, connection),
    )
    .await
    .map_err(|_| ApiError::Graph("the connection test did not finish in time".into()))??;
    Ok(HttpResponse::Ok().json(report))
}
