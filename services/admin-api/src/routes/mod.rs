//! The API's routes under `/v1`, all behind [`cardsync_auth::middleware::authenticate`]
//! (`reader` for reads, `admin` for changes). Handlers are short: extract, check the caller's
//! access to the tenant, call the store, map. Malformed paths, queries and bodies become
//! problems here, never actix's plain-text errors.

pub(crate) mod cards;
pub(crate) mod connections;
pub(crate) mod dead_letters;
pub(crate) mod held;
pub(crate) mod mapping;
pub(crate) mod offboard;
pub(crate) mod photos;
pub(crate) mod rules;
pub(crate) mod runs;
pub(crate) mod schedules;
pub(crate) mod scope;
pub(crate) mod sealing;
pub(crate) mod subscriptions;
pub(crate) mod sync;
pub(crate) mod tenants;

use crate::error::ApiError;
use crate::state::AppState;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::middleware::from_fn;
use actix_web::{HttpRequest, web};
use cardsync_auth::Principal;
use cardsync_store::admin::{self, AdminChange, TenantSummary};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Registers the API's routes.
pub fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::scope("/v1")
            .app_data(web::JsonConfig::default().error_handler(json_error))
            .app_data(web::PathConfig::default().error_handler(path_error))
            .app_data(web::QueryConfig::default().error_handler(query_error))
            .wrap(from_fn(cardsync_auth::middleware::authenticate))
            .configure(tenants::configure)
            .configure(offboard::configure)
            .configure(connections::configure)
            .configure(scope::configure)
            .configure(mapping::configure)
            .configure(rules::configure)
            .configure(cards::configure)
            .configure(photos::configure)
            .configure(sync::configure)
            .configure(schedules::configure)
            .configure(runs::configure)
            .configure(held::configure)
            .configure(dead_letters::configure)
            .configure(sealing::configure)
            .configure(subscriptions::configure)
            .default_service(web::to(unknown_route)),
    );
    config.route("/openapi.json", web::get().to(crate::openapi::document));
}

async fn unknown_route(request: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::not_found("route", request.path()))
}

fn json_error(error: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    let problem = match &error {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            cardsync_runtime::Problem::new(
                actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Body too large",
                error.to_string(),
            )
        }
        JsonPayloadError::ContentType => cardsync_runtime::Problem::new(
            actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content-type",
            "Unsupported media type",
            "send the body as application/json",
        ),
        JsonPayloadError::Deserialize(inner) if inner.is_data() => ApiError::invalid(
            "invalid-body",
            format!("the body does not fit this request: {inner}"),
        )
        .problem(),
        _ => ApiError::bad_request(
            "malformed-body",
            format!("the body is not valid JSON: {error}"),
        )
        .problem(),
    };
    problem.into()
}

fn path_error(error: PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request(
        "invalid-path",
        format!("a path segment is invalid: {error}"),
    )
    .problem()
    .into()
}

fn query_error(error: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request("invalid-query", format!("the query is invalid: {error}"))
        .problem()
        .into()
}

/// The caller may see `tenant`, or the request is refused.
pub(crate) fn check_access(caller: &Principal, tenant: Uuid) -> Result<(), ApiError> {
    if caller.may_access(tenant) {
        Ok(())
    } else {
        Err(ApiError::TenantForbidden(tenant))
    }
}

/// The caller may see every tenant (its token names none in particular), or the request is
/// refused: for operations that concern all tenants or outlive one.
pub(crate) fn check_all_tenants(caller: &Principal) -> Result<(), ApiError> {
    match caller.tenants {
        cardsync_auth::TenantAccess::All => Ok(()),
        cardsync_auth::TenantAccess::Only(_) => Err(ApiError::AllTenantsRequired),
    }
}

/// The tenant when the caller may see it and it exists.
pub(crate) async fn visible_tenant(
    state: &AppState,
    caller: &Principal,
    tenant: Uuid,
) -> Result<TenantSummary, ApiError> {
    check_access(caller, tenant)?;
    admin::tenant(&state.pool, tenant)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant", tenant))
}

/// Records an admin change.
pub(crate) async fn audit(
    executor: impl sqlx::PgExecutor<'_>,
    caller: &Principal,
    tenant: Option<Uuid>,
    action: &str,
    target: Option<&str>,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) -> Result<(), ApiError> {
    admin::record_change(
        executor,
        &AdminChange {
            tenant_id: tenant,
            actor: &caller.subject,
            action,
            target,
            before,
            after,
        },
    )
    .await?;
    Ok(())
}

/// Paging of a list: `limit` (1 to the configured maximum, default 100) and an opaque `cursor`
/// from the previous page's `next_cursor`.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// Items per page.
    pub limit: Option<u32>,
    /// Where the previous page ended.
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The page size, checked against the configured maximum.
    pub(crate) fn limit(&self, state: &AppState) -> Result<i64, ApiError> {
        let max = state.admin.page_size_max;
        match self.limit {
            None => Ok(i64::from(100.min(max))),
            Some(limit) if (1..=max).contains(&limit) => Ok(i64::from(limit)),
            Some(_) => Err(ApiError::bad_request(
                "invalid-limit",
                format!("limit must be between 1 and {max}"),
            )),
        }
    }
}

/// One page of a list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page of `items`; when it is full, the cursor of its last item names the next page.
    pub(crate) fn of(items: Vec<T>, limit: i64, cursor: impl Fn(&T) -> String) -> Self {
        let full = i64::try_from(items.len()).unwrap_or(i64::MAX) >= limit;
        let next_cursor = if full { items.last().map(cursor) } else { None };
        Self { items, next_cursor }
    }
}

/// Whether `id` looks like a Graph object id (a GUID, or what Graph uses instead: letters,
/// digits and `-`, at most 256).
pub(crate) fn is_object_id(id: &str) -> bool {
    (1..=256).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// The JSON Schema of a list of Graph object ids ([`is_object_id`]).
pub(crate) fn object_id_list() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[A-Za-z0-9-]{1,256}$")),
        )
        .build()
}

/// The item id a list's `cursor` names (the last item of the previous page).
pub(crate) fn uuid_cursor(cursor: Option<&str>) -> Result<Option<Uuid>, ApiError> {
    cursor
        .map(|cursor| {
            Uuid::parse_str(cursor).map_err(|_| {
                ApiError::bad_request("invalid-cursor", "cursor is not one this API gave")
            })
        })
        .transpose()
}

/// A whole (short) list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Items<T> {
    /// The items.
    pub items: Vec<T>,
}

/// An optional JSON body: absent (or `null`) gives `None`; anything else must parse, or the
/// request is refused (an extractor's `Option` would silently drop a malformed body).
pub(crate) fn optional_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
) -> Result<Option<T>, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("malformed-body", "the body is not UTF-8"))?;
    if text.trim().is_empty() || text.trim() == "null" {
        return Ok(None);
    }
    json_body(text.as_bytes()).map(Some)
}

/// A JSON body read as the `Json` extractor reads it, refused as [`json_error`] refuses it: a
/// body that does not fit the request is invalid (422), one that is not JSON malformed (400).
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| {
        if error.is_data() {
            ApiError::invalid(
                "invalid-body",
                format!("the body does not fit this request: {error}"),
            )
        } else {
            ApiError::bad_request(
                "malformed-body",
                format!("the body is not valid JSON: {error}"),
            )
        }
    })
}

/// A timestamp as RFC 3339 text.
pub(crate) fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
