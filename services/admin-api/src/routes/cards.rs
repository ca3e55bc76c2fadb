//! `/v1/tenants/{tenant}/cards`: list with filters and cursor paging, show with per-field
//! provenance (the rule that makes each value, under which rules version, the directory's
//! value, whether a local edit holds it) and the card's history, and a local edit of a field
//! (locked fields refused, as on the card).

use super::{Page, PageQuery, audit, rfc3339, uuid_cursor, visible_tenant};
use crate::error::ApiError;
use crate::openapi::Refusals;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use cardsync_auth::Principal;
use cardsync_bus::names;
use cardsync_cards::edit::{self, EditError};
use cardsync_rules::{FieldRules, StandardField, ValueSource};
use cardsync_store::admin::{self, CardFilter};
use cardsync_store::cards::{self, Card, CardStatus};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

pub(super) fn configure(config: &mut web::ServiceConfig) {
    config
        .service(web::resource("/tenants/{tenant}/cards").route(web::get().to(list)))
        .service(web::resource("/tenants/{tenant}/cards/{card}").route(web::get().to(show)))
        .service(
            web::resource("/tenants/{tenant}/cards/{card}/fields/{field}")
                .route(web::put().to(edit_field)),
        );
}

/// A card as lists show it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct CardView {
    id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    #[schema(value_type = String)]
    status: &'static str,
    #[schema(value_type = String)]
    role: &'static str,
    fields: std::collections::BTreeMap<String, Option<String>>,
    /// The SHA-256 of the image the card shows (`GET …/photo` serves it); absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    photo_sha256: Option<String>,
    applied_version: i64,
    created_at: String,
    updated_at: String,
}

impl From<&Card> for CardView {
    fn from(card: &Card) -> Self {
        Self {
            id: card.card_id,
            user_id: card.user_id.clone(),
            uid: card.uid.clone(),
            email: card.email.clone(),
            status: card.status.as_str(),
            role: card.role.as_str(),
            fields: card
                .fields
                .iter()
                .map(|(name, state)| (name.as_str().to_owned(), state.value.clone()))
                .collect(),
            photo_sha256: card.photo.as_ref().map(|photo| photo.sha256.clone()),
            applied_version: card.applied_version,
            created_at: rfc3339(card.created_at),
            updated_at: rfc3339(card.updated_at),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct CardsQuery {
    /// Only cards in this status.
    #[param(inline, value_type = Option<CardStatusParam>)]
    status: Option<String>,
    /// Only cards with this email (1 to 1,024 bytes, no control characters).
    #[param(
        min_length = 1,
        max_length = 1024,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    email: Option<String>,
    /// Only cards with this display name (1 to 1,024 bytes, no control characters).
    #[param(
        min_length = 1,
        max_length = 1024,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    name: Option<String>,
    /// Only cards of this team (1 to 1,024 bytes, no control characters).
    #[param(
        min_length = 1,
        max_length = 1024,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    team: Option<String>,
    /// Items per page.
    limit: Option<u32>,
    /// Where the previous page ended.
    cursor: Option<String>,
}

/// A card's status, as the list filters by it.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // documents the `status` filter, which is parsed by `CardStatus::parse`
enum CardStatusParam {
    Active,
    Deactivated,
    Deleted,
}

fn bounded(value: Option<String>, what: &'static str) -> Result<Option<String>, ApiError> {
    match value {
        Some(text)
            if text.is_empty() || text.len() > 1024 || text.chars().any(char::is_control) =>
        {
            Err(ApiError::bad_request(
                "invalid-filter",
                format!("{what} must be 1 to 1024 bytes without control characters"),
            ))
        }
        other => Ok(other),
    }
}

#[utoipa::path(get, operation_id = "cards_list", path = "/v1/tenants/{tenant}/cards", tag = "cards", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)"), CardsQuery), responses((status = 200, description = "Cards by id", body = Page<CardView>), Refusals))]
pub(crate) async fn list(
    state: web::Data<AppState>,
    caller: Principal,
    tenant: web::Path<Uuid>,
    query: web::Query<CardsQuery>,
) -> Result<HttpResponse, ApiError> {
    let tenant = visible_tenant(&state, &caller, *tenant).await?.tenant_id;
    let query = query.into_inner();
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor.clone(),
    };
    let limit = page.limit(&state)?;
    if let Some(status) = &query.status
        && CardStatus::parse(status).is_none()
    {
        return Err(ApiError::bad_request(
            "invalid-status",
            "status must be active, deactivated or deleted",
        ));
    }
    let after = uuid_cursor(page.cursor.as_deref())?;
    let filter = CardFilter {
        status: query.status,
        email: bounded(query.email, "email")?,
        name: bounded(query.name, "name")?,
        team: bounded(query.team, "team")?,
    };
    let cards = admin::cards(&state.pool, tenant, &filter, after, limit).await?;
    let items: Vec<CardView> = cards.iter().map(CardView::from).collect();
    Ok(
        HttpResponse::Ok().json(Page::of(items, limit, |card: &CardView| {
            card.id.to_string()
        })),
    )
}

/// Where one field's value comes from.
#[derive(Debug, Serialize)]
struct Provenance {
    value: Option<String>,
    /// `directory` or `local` (a local edit holds the value).
    set_by: &'static str,
    /// The last value the directory gave, applied or not.
    last_directory: Option<String>,
    /// The expression that maps the directory to this field (`null`: a local-only field).
    rule: Option<String>,
    sync: Option<bool>,
    overwrite: Option<bool>,
    locked: Option<bool>,
    /// The rules version in force.
    rules_version: i64,
    /// The properties the rule reads, as the stored directory snapshot holds them.
    directory_properties: Option<serde_json::Map<String, Value>>,
    /// The first of them with a value: the fallback that gave the value (`mail` or
    /// `userPrincipalName`?) for `coalesce` and `first` rules.
    from_property: Option<String>,
}

fn expression_of(rules: &FieldRules, field: &str) -> Option<cardsync_rules::Expression> {
    match StandardField::from_name(field) {
        Some(standard) => rules.source_of(standard).cloned(),
        None => rules
            .custom_fields
            .get(field)
            .map(|rule| rule.expression.clone()),
    }
}

fn provenance(
    card: &Card,
    rules: &FieldRules,
    rules_version: i64,
    snapshot: Option<&Value>,
) -> serde_json::Map<String, Value> {
    let mut fields = serde_json::Map::new();
    for (name, state) in card.fields.iter() {
        let field = name.as_str();
        let flags = rules.flags_of(field);
        let expression = expression_of(rules, field);
        let properties = expression.as_ref().map(|expression| {
            expression
                .referenced_properties()
                .into_iter()
                .map(|property| {
                    let value = snapshot
                        .and_then(|user| user.get(&property))
                        .cloned()
                        .unwrap_or(Value::Null);
                    (property, value)
                })
                .collect::<serde_json::Map<String, Value>>()
        });
        let from_property = properties.as_ref().and_then(|properties| {
            properties
                .iter()
                .find(|(_, value)| match value {
                    Value::Null => false,
                    Value::String(text) => !text.trim().is_empty(),
                    Value::Array(items) => !items.is_empty(),
                    _ => true,
                })
                .map(|(property, _)| property.clone())
        });
        let view = Provenance {
            value: state.value.clone(),
            set_by: match state.source {
                ValueSource::Directory => "directory",
                ValueSource::Local => "local",
            },
            last_directory: state.last_directory.clone(),
            rule: expression.map(|expression| expression.source().to_owned()),
            sync: flags.map(|flags| flags.sync),
            overwrite: flags.map(|flags| flags.overwrite),
            locked: flags.map(|flags| flags.locked),
            rules_version,
            directory_properties: snapshot.and(properties),
            from_property: snapshot.and(from_property),
        };
        fields.insert(field.to_owned(), json!(view));
    }
    fields
}

#[utoipa::path(get, operation_id = "cards_show", path = "/v1/tenants/{tenant}/cards/{card}", tag = "cards", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)"), ("card" = Uuid, Path, description = "The card")), responses((status = 200, description = "The card with its teams (group id, name, description), per-field provenance and history", body = Object), Refusals))]
pub(crate) async fn show(
    state: web::Data<AppState>,
    caller: Principal,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, card_id) = path.into_inner();
    let tenant = visible_tenant(&state, &caller, tenant).await?.tenant_id;
    let mut tx = state.pool.begin().await?;
    let card = cards::get(&mut *tx, tenant, card_id)
        .await?
        .ok_or_else(|| ApiError::not_found("card", card_id))?;
    let (rules, rules_version) = admin::lock_rules(&mut tx, tenant)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant", tenant))?;
    let snapshot = match &card.user_id {
        Some(user) => cardsync_store::directory::users(&mut tx, tenant, std::slice::from_ref(user))
            .await?
            .remove(user)
            .map(|row| row.data),
        None => None,
    };
    let teams: Vec<Value> = cardsync_store::teams::of_card(&mut *tx, tenant, card_id)
        .await?
        .into_iter()
        .map(|team| json!({"group_id": team.group_id, "name": team.name, "description": team.description}))
        .collect();
    let history = cardsync_store::audit::for_card(&mut *tx, tenant, card_id).await?;
    tx.rollback().await?;
    let history: Vec<Value> = history
        .into_iter()
        .rev()
        .take(50)
        .map(|record| {
            json!({
                "action": record.action,
                "cause": record.cause,
                "version": record.version,
                "status_before": record.status_before,
                "status_after": record.status_after,
                "fields_before": record.fields_before.map(|json| json.0),
                "fields_after": record.fields_after.map(|json| json.0),
                "at": rfc3339(record.at),
            })
        })
        .collect();
    let mut body = json!(CardView::from(&card));
    body["teams"] = json!(teams);
    body["provenance"] = Value::Object(provenance(&card, &rules, rules_version, snapshot.as_ref()));
    body["history"] = json!(history);
    Ok(HttpResponse::Ok().json(body))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FieldEdit {
    /// The new value; `null` or blank clears the field.
    value: Option<String>,
}

impl FieldEdit {
    /// The new value (`None` clears), checked.
    pub(crate) fn checked(self) -> Result<Option<String>, ApiError> {
        if self
            .value
            .as_deref()
            .is_some_and(|text| text.contains('\0'))
        {
            return Err(ApiError::invalid(
                "invalid-value",
                "a value must not contain NUL characters",
            ));
        }
        Ok(self.value)
    }
}

fn edit_failed(error: EditError) -> ApiError {
    match error {
        EditError::UnknownTenant(id) => ApiError::not_found("tenant", id),
        EditError::UnknownCard(id) | EditError::Deleted(id) => ApiError::not_found("card", id),
        EditError::BadFieldName(name) => ApiError::bad_request(
            "invalid-field",
            format!("{name:?} is not a valid field name"),
        ),
        EditError::TooLong => ApiError::invalid("value-too-long", error.to_string()),
        EditError::Refused(refused) => ApiError::Conflict {
            code: "field-locked",
            detail: refused.to_string(),
        },
        EditError::EmailInUse => ApiError::Conflict {
            code: "email-in-use",
            detail: "another card already has this email".into(),
        },
        EditError::Store(store) => store.into(),
    }
}

#[utoipa::path(put, operation_id = "cards_edit_field", path = "/v1/tenants/{tenant}/cards/{card}/fields/{field}", tag = "cards", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)"), ("card" = Uuid, Path, description = "The card"), ("field" = String, Path, description = "The field name: a lowercase letter, then lowercase letters, digits and `_`", pattern = "^[a-z][a-z0-9_]{0,63}$")), request_body = FieldEdit, responses((status = 200, description = "The card after the edit", body = CardView), Refusals))]
pub(crate) async fn edit_field(
    state: web::Data<AppState>,
    caller: Principal,
    path: web::Path<(Uuid, Uuid, String)>,
    body: web::Json<FieldEdit>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, card_id, field) = path.into_inner();
    let tenant = visible_tenant(&state, &caller, tenant).await?.tenant_id;
    let value = body.into_inner().checked()?;
    let before = cards::get(&state.pool, tenant, card_id)
        .await?
        .and_then(|card| card.fields.value(&field).map(str::to_owned));
    let exchange = state.topology.name(names::CARD_EVENTS);
    let card = edit::edit_field(
        &state.pool,
        &exchange,
        tenant,
        card_id,
        &field,
        value.as_deref(),
    )
    .await
    .map_err(edit_failed)?;
    audit(
        &state.pool,
        &caller,
        Some(tenant),
        "card.edit",
        Some(&format!("{card_id}/{field}")),
        Some(json!({ "value": before })),
        Some(json!({ "value": card.fields.value(&field) })),
    )
    .await?;
    Ok(HttpResponse::Ok().json(CardView::from(&card)))
}
