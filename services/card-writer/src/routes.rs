//! HTTP routes: local card edits (for operators, tests and the demo), health and metrics. Thin
//! handlers: extract, parse, call [`cardsync_cards::edit`], map. Every error becomes a response in
//! [`ApiError`]'s one mapping.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError, web};
use cardsync_cards::edit::{self, EditError};
use cardsync_rules::{EditRefused, FieldStates};
use cardsync_store::cards::{self, Card};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::sync::Arc;
use time::format_description::well_known::Rfc3339;
use tokio::sync::Notify;
use uuid::Uuid;

/// Shared state of the HTTP layer.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The card store.
    pub pool: PgPool,
    /// Wakes the outbox relay after a local edit.
    pub relay_wake: Arc<Notify>,
    /// Full name of the card-events exchange.
    pub events_exchange: String,
}

/// Everything a request can fail with, mapped to a status in one place.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A path id is not a GUID.
    #[error("{0} is not a GUID")]
    BadId(&'static str),
    /// The body is not the expected JSON.
    #[error("the body is not valid JSON for this request: {0}")]
    BadBody(String),
    /// The edit failed.
    #[error(transparent)]
    Edit(#[from] EditError),
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::BadId(_) => "bad_id",
            ApiError::BadBody(_) => "bad_body",
            ApiError::Edit(error) => match error {
                EditError::UnknownTenant(_) => "unknown_tenant",
                EditError::UnknownCard(_) => "unknown_card",
                EditError::Deleted(_) => "card_deleted",
                EditError::BadFieldName(_) => "bad_field_name",
                EditError::TooLong => "value_too_long",
                EditError::Refused(EditRefused::Locked { .. }) => "field_locked",
                EditError::EmailInUse => "email_in_use",
                EditError::Store(_) if error.is_unavailable() => "temporarily_unavailable",
                EditError::Store(_) => "internal_error",
            },
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadId(_) | ApiError::BadBody(_) => StatusCode::BAD_REQUEST,
            ApiError::Edit(error) => match error {
                EditError::UnknownTenant(_) | EditError::UnknownCard(_) | EditError::Deleted(_) => {
                    StatusCode::NOT_FOUND
                }
                EditError::BadFieldName(_) | EditError::TooLong => StatusCode::BAD_REQUEST,
                EditError::Refused(_) | EditError::EmailInUse => StatusCode::CONFLICT,
                EditError::Store(_) if error.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
                EditError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let message = if status.is_server_error() {
            // The cause chain is logged once here; the body never leaks internals.
            tracing::warn!(error = %cardsync_telemetry::error_chain(self), "request failed");
            "the card store is not available; retry later".to_owned()
        } else {
            self.to_string()
        };
        HttpResponse::build(status)
            .json(serde_json::json!({ "error": self.code(), "message": message }))
    }
}

/// A card as the HTTP API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CardView {
    /// The tenant.
    pub tenant_id: Uuid,
    /// The card.
    pub card_id: Uuid,
    /// The directory user, if linked.
    pub user_id: Option<String>,
    /// The UID.
    pub uid: Option<String>,
    /// The email.
    pub email: Option<String>,
    /// `active`, `deactivated` or `deleted`.
    pub status: String,
    /// `member`, `team_admin` or `subteam_admin`.
    pub role: String,
    /// Per-field value, source and last directory value.
    pub fields: FieldStates,
    /// Team (group) ids.
    pub teams: Vec<String>,
    /// The directory photo's etag.
    pub photo_etag: Option<String>,
    /// The directory version applied.
    pub applied_version: i64,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl CardView {
    fn of(card: Card, teams: Vec<String>) -> Self {
        Self {
            tenant_id: card.tenant_id,
            card_id: card.card_id,
            user_id: card.user_id,
            uid: card.uid,
            email: card.email,
            status: card.status.as_str().to_owned(),
            role: card.role.as_str().to_owned(),
            fields: card.fields,
            teams,
            photo_etag: card.photo_etag,
            applied_version: card.applied_version,
            created_at: card.created_at.format(&Rfc3339).unwrap_or_default(),
            updated_at: card.updated_at.format(&Rfc3339).unwrap_or_default(),
        }
    }
}

/// Body of a field edit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldEdit {
    /// The new value; `null` or blank clears the field.
    pub value: Option<String>,
}

/// Body of a local card creation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCard {
    /// Field values by name.
    pub fields: BTreeMap<String, Option<String>>,
}

/// Registers the card-writer's routes (health and metrics are the kit's).
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(web::resource("/tenants/{tenant}/cards").route(web::post().to(create_card)))
        .service(web::resource("/tenants/{tenant}/cards/{card}").route(web::get().to(get_card)))
        .service(
            web::resource("/tenants/{tenant}/cards/{card}/fields/{field}")
                .route(web::put().to(edit_field)),
        );
}

fn parse_id(text: &str, what: &'static str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::BadId(what))
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| ApiError::BadBody(error.to_string()))
}

async fn view(pool: &PgPool, card: Card) -> Result<CardView, ApiError> {
    let teams = cards::teams_of(pool, card.tenant_id, card.card_id)
        .await
        .map_err(EditError::from)?;
    Ok(CardView::of(card, teams))
}

async fn get_card(
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, card) = path.into_inner();
    let tenant = parse_id(&tenant, "the tenant id")?;
    let card_id = parse_id(&card, "the card id")?;
    let card = cards::get(&state.pool, tenant, card_id)
        .await
        .map_err(EditError::from)?
        .ok_or(EditError::UnknownCard(card_id))?;
    Ok(HttpResponse::Ok().json(view(&state.pool, card).await?))
}

async fn edit_field(
    path: web::Path<(String, String, String)>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, card, field) = path.into_inner();
    let tenant = parse_id(&tenant, "the tenant id")?;
    let card_id = parse_id(&card, "the card id")?;
    let edit: FieldEdit = parse_body(&body)?;
    let card = edit::edit_field(
        &state.pool,
        &state.events_exchange,
        tenant,
        card_id,
        &field,
        edit.value.as_deref(),
    )
    .await?;
    state.relay_wake.notify_one();
    Ok(HttpResponse::Ok().json(view(&state.pool, card).await?))
}

async fn create_card(
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let tenant = parse_id(&path.into_inner(), "the tenant id")?;
    let new: NewCard = parse_body(&body)?;
    let card =
        edit::create_local_card(&state.pool, &state.events_exchange, tenant, &new.fields).await?;
    state.relay_wake.notify_one();
    Ok(HttpResponse::Created().json(view(&state.pool, card).await?))
}
