//! The API's OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` attributes
//! and the types' `ToSchema`, served unauthenticated at `/openapi.json`.

use crate::routes;
use actix_web::HttpResponse;
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

/// `GET /openapi.json`.
pub async fn document() -> HttpResponse {
    match ApiDoc::openapi().to_json() {
        Ok(json) => HttpResponse::Ok()
            .content_type("application/json")
            .body(json),
        Err(error) => {
            tracing::error!(error = %error, "the OpenAPI document does not serialise");
            HttpResponse::InternalServerError().finish()
        }
    }
}
