//! `/v1/tenants/{tenant}/subscriptions`: the tenant's Graph subscriptions as an operator sees them
//! (resource, state, expiry, last notification, last error), a recreate by hand that the
//! subscription manager carries out, and registering a subscription by hand (for a deployment
//! without the subscription manager).

use super::{Items, audit, rfc3339, visible_tenant};
use crate::error::ApiError;
use crate::openapi::Refusals;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use cardsync_auth::Principal;
use cardsync_store::subscription_slots::{self, Overview};
use cardsync_store::subscriptions::{self, ClientStateHash, Subscription};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

pub(super) fn configure(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/tenants/{tenant}/subscriptions")
                .route(web::get().to(list))
                .route(web::post().to(register_subscription)),
        )
        .service(
            web::resource("/tenants/{tenant}/subscriptions/recreate")
                .route(web::post().to(recreate)),
        );
}

/// One of the tenant's subscriptions.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct OverviewView {
    /// The watched resource (`/users`, `/groups`).
    resource: String,
    /// `creating`, `active`, `retrying`, `quota_exceeded`, or `registered` (by hand).
    state: String,
    /// Graph's subscription id, once there is one.
    id: Option<Uuid>,
    expires_at: Option<String>,
    /// When the webhook last accepted one of its notifications (to within its registry refresh
    /// period); a quiet tenant sends none, so an old time alone proves nothing.
    last_notification_at: Option<String>,
    /// Consecutive failures of the current create or renewal.
    failures: i32,
    /// When the subscription manager acts on it next unasked.
    next_attempt_at: Option<String>,
    last_error: Option<String>,
    last_error_at: Option<String>,
    /// The last successful renewal or creation.
    renewed_at: Option<String>,
    /// A recreate asked for and not yet carried out.
    recreate_requested_at: Option<String>,
}

impl From<Overview> for OverviewView {
    fn from(row: Overview) -> Self {
        Self {
            resource: row.resource,
            state: row.state,
            id: row.subscription_id,
            expires_at: row.expires_at.map(rfc3339),
            last_notification_at: row.last_notification_at.map(rfc3339),
            failures: row.failures,
            next_attempt_at: row.next_attempt_at.map(rfc3339),
            last_error: row.last_error,
            last_error_at: row.last_error_at.map(rfc3339),
            renewed_at: row.renewed_at.map(rfc3339),
            recreate_requested_at: row.recreate_requested_at.map(rfc3339),
        }
    }
}

#[utoipa::path(get, operation_id = "subscriptions_list", path = "/v1/tenants/{tenant}/subscriptions", tag = "subscriptions", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)")), responses((status = 200, description = "The tenant's subscriptions", body = Items<OverviewView>), Refusals))]
pub(crate) async fn list(
    state: web::Data<AppState>,
    caller: Principal,
    tenant: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let tenant = visible_tenant(&state, &caller, *tenant).await?.tenant_id;
    let items: Vec<OverviewView> = subscription_slots::overview(&state.pool, tenant)
        .await?
        .into_iter()
        .map(OverviewView::from)
        .collect();
    Ok(HttpResponse::Ok().json(Items { items }))
}

/// Which subscription to recreate.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecreateRequest {
    /// The resource (`/users`, `/groups`).
    #[serde(default = "default_resource")]
    #[schema(
        default = "/users",
        max_length = 256,
        pattern = r"^/[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    resource: String,
}

/// A recreate accepted.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RecreateAccepted {
    resource: String,
    /// When it was asked for; the subscription manager carries it out on its next pass.
    recreate_requested_at: String,
}

#[utoipa::path(post, operation_id = "subscriptions_recreate", path = "/v1/tenants/{tenant}/subscriptions/recreate", tag = "subscriptions", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)")), request_body = RecreateRequest, responses((status = 202, description = "The subscription manager replaces the subscription on its next pass, with a catch-up round", body = RecreateAccepted), Refusals))]
pub(crate) async fn recreate(
    state: web::Data<AppState>,
    caller: Principal,
    tenant: web::Path<Uuid>,
    body: web::Json<RecreateRequest>,
) -> Result<HttpResponse, ApiError> {
    let tenant = visible_tenant(&state, &caller, *tenant).await?.tenant_id;
    let resource = checked_resource(&body.resource)?.to_owned();
    let now = OffsetDateTime::now_utc();
    if !subscription_slots::request_recreate(&state.pool, tenant, &resource, now).await? {
        return Err(ApiError::not_found(
            "subscription",
            format!("{tenant}{resource}"),
        ));
    }
    let accepted = RecreateAccepted {
        resource,
        recreate_requested_at: rfc3339(now),
    };
    audit(
        &state.pool,
        &caller,
        Some(tenant),
        "subscription.recreate",
        Some(&accepted.resource),
        None,
        Some(json!(accepted)),
    )
    .await?;
    Ok(HttpResponse::Accepted().json(accepted))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewSubscription {
    id: Uuid,
    /// The Graph resource subscribed to (`/users`, `/groups`).
    #[serde(default = "default_resource")]
    #[schema(
        default = "/users",
        max_length = 256,
        pattern = r"^/[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    resource: String,
    /// When Graph ends the subscription (RFC 3339).
    #[schema(format = DateTime)]
    expires_at: String,
    /// The clientState given to Graph (1 to 128 characters); only its hash is stored.
    #[schema(value_type = String, min_length = 1, max_length = 128)]
    client_state: SecretString,
}

impl NewSubscription {
    /// The expiry time and the resource, checked with the clientState.
    pub(crate) fn checked(&self) -> Result<(OffsetDateTime, &str), ApiError> {
        let expires_at = OffsetDateTime::parse(&self.expires_at, &Rfc3339).map_err(|_| {
            ApiError::invalid("invalid-expires-at", "expires_at must be an RFC 3339 time")
        })?;
        if !(1..=128).contains(&self.client_state.expose_secret().chars().count()) {
            return Err(ApiError::invalid(
                "invalid-client-state",
                "client_state must be 1 to 128 characters (Graph's limit)",
            ));
        }
        Ok((expires_at, checked_resource(&self.resource)?))
    }
}

/// A subscription's resource as a request names it: a Graph path such as `/users`, trimmed.
fn checked_resource(resource: &str) -> Result<&str, ApiError> {
    let resource = resource.trim();
    if !resource.starts_with('/') || resource.len() > 256 || resource.chars().any(char::is_control)
    {
        return Err(ApiError::invalid(
            "invalid-resource",
            "resource must be a Graph path such as /users",
        ));
    }
    Ok(resource)
}

fn default_resource() -> String {
    "/users".to_owned()
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SubscriptionView {
    id: Uuid,
    tenant_id: Uuid,
    resource: String,
    expires_at: String,
}

impl From<Subscription> for SubscriptionView {
    fn from(subscription: Subscription) -> Self {
        Self {
            id: subscription.id,
            tenant_id: subscription.tenant_id,
            resource: subscription.resource,
            expires_at: rfc3339(subscription.expires_at),
        }
    }
}

#[utoipa::path(post, operation_id = "subscriptions_register", path = "/v1/tenants/{tenant}/subscriptions", tag = "subscriptions", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)")), request_body = NewSubscription, responses((status = 201, description = "Registered", body = SubscriptionView), Refusals))]
pub(crate) async fn register_subscription(
    state: web::Data<AppState>,
    caller: Principal,
    tenant: web::Path<Uuid>,
    body: web::Json<NewSubscription>,
) -> Result<HttpResponse, ApiError> {
    let tenant = visible_tenant(&state, &caller, *tenant).await?.tenant_id;
    let body = body.into_inner();
    let (expires_at, resource) = body.checked()?;
    let subscription = Subscription {
        id: body.id,
        tenant_id: tenant,
        resource: resource.to_owned(),
        client_state: ClientStateHash::of(body.client_state.expose_secret()),
        expires_at,
    };
    subscriptions::register(&state.pool, &subscription).await?;
    let view = SubscriptionView::from(subscription);
    audit(
        &state.pool,
        &caller,
        Some(tenant),
        "subscription.register",
        Some(&body.id.to_string()),
        None,
        Some(json!(view)),
    )
    .await?;
    Ok(HttpResponse::Created().json(view))
}
