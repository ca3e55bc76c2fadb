//! The API's OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` attributes
//! and the types' `ToSchema`, served unauthenticated at `/openapi.json`.

use crate::routes;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// An RFC 9457 problem, as every refusal is sent (`application/problem+json`).
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documents `cardsync_runtime::Problem`, which is what is sent
pub struct ProblemDoc {
    /// A URN naming the problem, e.g. `urn:cardsync:problem:unknown-tenant`.
    r#type: String,
    /// A short summary, the same for every occurrence of the problem.
    title: String,
    /// The HTTP status.
    status: u16,
    /// What went wrong this time.
    detail: String,
    /// One line per problem (`path: message`) when there are several.
    errors: Option<Vec<String>>,
    /// The invalid field, as a JSON pointer (RFC 6901) into the request body, when one field
    /// is at fault.
    pointer: Option<String>,
}

/// The refusals every operation may answer with.
#[derive(Debug, utoipa::IntoResponses)]
#[allow(dead_code)] // documentation only
pub enum Refusals {
    /// The request is malformed (path, query or body).
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(ProblemDoc),
    /// No token, or the token is not valid (with `WWW-Authenticate: Bearer`).
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(ProblemDoc),
    /// The token does not grant this (role, tenant).
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(ProblemDoc),
    /// The tenant, card, run … does not exist.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(ProblemDoc),
    /// The request conflicts with the current state.
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(ProblemDoc),
    /// The body is larger than the limit.
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(ProblemDoc),
    /// The body is not JSON.
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(ProblemDoc),
    /// The body is JSON of the wrong shape, or its content is invalid.
    #[response(status = 422, content_type = "application/problem+json")]
    Invalid(ProblemDoc),
    /// A dependency (database, broker, the token issuer, Microsoft Graph) is unavailable; try
    /// again later.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(ProblemDoc),
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The document.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "cardsync admin API", description = "Tenants, Graph connections, scope, field rules, cards, reconcile schedules, sync requests and runs. Every operation needs a bearer token: the `reader` role for reads, `admin` for changes."),
    modifiers(&BearerAuth),
    components(schemas(ProblemDoc, routes::runs::StatusFilter)),
    security(("bearer" = [])),
    paths(
        routes::tenants::list,
        routes::tenants::create,
        routes::tenants::show,
        routes::tenants::patch,
        routes::tenants::disconnect,
        routes::tenants::reconnect,
        routes::tenants::changes,
        routes::offboard::offboard,
        routes::connections::show,
        routes::connections::put,
        routes::connections::delete,
        routes::connections::test,
        routes::subscriptions::register_subscription,
        routes::subscriptions::list,
        routes::subscriptions::recreate,
        routes::scope::show_scope,
        routes::scope::put_scope,
        routes::scope::search_groups,
        routes::mapping::extension_attributes,
        routes::rules::show_rules,
        routes::rules::put_rules,
        routes::rules::rules_history,
        routes::rules::dry_run,
        routes::rules::apply,
        routes::cards::list,
        routes::cards::show,
        routes::cards::edit_field,
        routes::photos::card_photo,
        routes::sync::sync_tenant,
        routes::sync::sync_user,
        routes::schedules::list,
        routes::schedules::show,
        routes::schedules::put,
        routes::schedules::patch,
        routes::schedules::delete,
        routes::runs::list,
        routes::runs::show,
        routes::held::plan,
        routes::held::approve,
        routes::held::reject,
        routes::held::resume,
        routes::held::show_safety,
        routes::held::put_safety,
        routes::dead_letters::list,
        routes::dead_letters::replay,
        routes::dead_letters::discard,
        routes::sealing::show,
        routes::sealing::reseal,
    )
)]
pub struct ApiDoc;

/// The lists that page with `limit` and `cursor`, by operation id, with the JSON Schema of the
/// cursor each gives out (opaque to clients, but a made-up one is refused).
const PAGED: &[(&str, &str)] = &[
    ("tenants_list", r#"{"type": "string", "format": "uuid"}"#),
    (
        "tenants_changes",
        r#"{"type": "string", "pattern": "^[0-9]{1,18}$"}"#,
    ),
    ("cards_list", r#"{"type": "string", "format": "uuid"}"#),
    (
        "runs_list",
        r#"{"type": "string", "pattern": "^[0-9]{1,19}_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"}"#,
    ),
];

/// Which of a schedule's fields its cadence needs and which it refuses (`schedule::Spec::check`),
/// as JSON Schema conditions on `ScheduleBody`.
const SCHEDULE_CADENCE_RULES: &str = r#"[
    {"if": {"required": ["cadence"], "properties": {"cadence": {"const": "daily"}}},
     "then": {"properties": {"weekday": {"type": "null"}, "day_of_month": {"type": "null"}}}},
    {"if": {"required": ["cadence"], "properties": {"cadence": {"const": "weekly"}}},
     "then": {"required": ["weekday"],
              "properties": {"weekday": {"type": "string"}, "day_of_month": {"type": "null"}}}},
    {"if": {"required": ["cadence"], "properties": {"cadence": {"enum": ["monthly", "quarterly"]}}},
     "then": {"required": ["day_of_month"],
              "properties": {"weekday": {"type": "null"}, "day_of_month": {"type": "integer"}}}}
]"#;

/// The document as this server answers it: what the handlers' attributes cannot say added (the
/// paged lists' `limit` bounded by the configured `admin.page_size_max`, their cursors, and a
/// schedule's fields by cadence).
pub fn for_server(page_size_max: u32) -> serde_json::Value {
    let mut document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    if let Some(schedule) = document.pointer_mut("/components/schemas/ScheduleBody") {
        schedule["allOf"] = serde_json::from_str(SCHEDULE_CADENCE_RULES).unwrap_or_default();
    }
    let Some(paths) = document
        .get_mut("paths")
        .and_then(serde_json::Value::as_object_mut)
    else {
        return document;
    };
    let operations = paths
        .values_mut()
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|item| item.values_mut());
    for operation in operations {
        let id = operation["operationId"].as_str().unwrap_or_default();
        let Some((_, cursor)) = PAGED.iter().find(|(paged, _)| *paged == id) else {
            continue;
        };
        let cursor: serde_json::Value = serde_json::from_str(cursor).unwrap_or_default();
        let parameters = operation
            .get_mut("parameters")
            .and_then(serde_json::Value::as_array_mut)
            .into_iter()
            .flatten();
        for parameter in parameters {
            match parameter["name"].as_str() {
                Some("limit") => {
                    parameter["schema"] = serde_json::json!({
                        "type": "integer", "format": "int32",
                        "minimum": 1, "maximum": page_size_max,
                    });
                }
                Some("cursor") => parameter["schema"] = cursor.clone(),
                _ => {}
            }
        }
    }
    document
}

/// `GET /openapi.json`.
pub async fn document(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(for_server(state.admin.page_size_max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_paged_list_documents_its_limit_and_cursor() {
        let document = for_server(250);
        let operations: Vec<&serde_json::Value> = document["paths"]
            .as_object()
            .expect("paths")
            .values()
            .flat_map(|item| item.as_object().expect("path item").values())
            .collect();
        for (id, _) in PAGED {
            let operation = operations
                .iter()
                .find(|operation| operation["operationId"] == *id)
                .unwrap_or_else(|| panic!("{id} is not in the document"));
            let parameter = |name: &str| {
                operation["parameters"]
                    .as_array()
                    .and_then(|all| all.iter().find(|p| p["name"] == name))
                    .unwrap_or_else(|| panic!("{id} has no {name}"))
            };
            assert_eq!(parameter("limit")["schema"]["maximum"], 250, "{id}");
            assert_eq!(parameter("limit")["schema"]["minimum"], 1, "{id}");
            let cursor = &parameter("cursor")["schema"];
            assert!(
                cursor.get("format").is_some() || cursor.get("pattern").is_some(),
                "{id}: {cursor}"
            );
        }
        let unlisted: Vec<&str> = operations
            .iter()
            .filter(|operation| {
                operation["parameters"]
                    .as_array()
                    .is_some_and(|all| all.iter().any(|p| p["name"] == "cursor"))
            })
            .filter_map(|operation| operation["operationId"].as_str())
            .filter(|id| !PAGED.iter().any(|(paged, _)| paged == id))
            .collect();
        assert!(unlisted.is_empty(), "paged but not in PAGED: {unlisted:?}");
    }

    #[test]
    fn a_schedule_body_says_which_fields_each_cadence_needs() {
        let document = for_server(500);
        let rules = document["components"]["schemas"]["ScheduleBody"]["allOf"]
            .as_array()
            .expect("the cadence rules are in the document");
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[1]["then"]["required"][0], "weekday");
    }
}
