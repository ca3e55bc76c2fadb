//! The actix side: a middleware that lets a request through only with a valid token and the
//! role its method needs (`reader` for GET and HEAD, `admin` for everything else), and the
//! [`Principal`] extractor handlers use for tenant checks and audit.

use crate::metrics::AuthMetrics;
use crate::principal::{Principal, Role};
use crate::verify::{AuthError, Verifier};
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode, header};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, web};
use cardsync_runtime::Problem;
use std::future::{Ready, ready};

/// The realm named in challenges.
const REALM: &str = "cardsync";

/// The problem a refusal is sent as (401 with a `Bearer` challenge, 403, or 503).
pub fn problem(error: &AuthError) -> Problem {
    let detail = error.to_string();
    match error {
        AuthError::KeysUnavailable => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            error.code(),
            "Cannot check tokens now",
            detail,
        ),
        AuthError::Missing => Problem::new(
            StatusCode::UNAUTHORIZED,
            error.code(),
            "Authentication required",
            "send an OAuth 2.0 access token as `Authorization: Bearer <token>`",
        )
        .with_www_authenticate(format!("Bearer realm=\"{REALM}\"")),
        error if error.is_unauthenticated() => Problem::new(
            StatusCode::UNAUTHORIZED,
            error.code(),
            "Invalid token",
            detail.clone(),
        )
        .with_www_authenticate(format!(
            "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{detail}\""
        )),
        error => Problem::new(
            StatusCode::FORBIDDEN,
            error.code(),
            "Forbidden",
            detail.clone(),
        )
        .with_www_authenticate(format!(
            "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", error_description=\"{detail}\""
        )),
    }
}

/// The bearer token of a request, if it has one.
fn bearer(request: &ServiceRequest) -> Option<String> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|token| !token.is_empty())
}

/// The role a request's method needs.
fn needed_role(method: &Method) -> Role {
    if method == Method::GET || method == Method::HEAD {
        Role::Reader
    } else {
        Role::Admin
    }
}

async fn check(request: &ServiceRequest) -> Result<Principal, AuthError> {
    let verifier = request
        .app_data::<web::Data<Verifier>>()
        .ok_or(AuthError::KeysUnavailable)?;
    let token = bearer(request).ok_or(AuthError::Missing)?;
    let principal = verifier.verify(&token).await?;
    if !principal.has(needed_role(request.method())) {
        return Err(AuthError::NotAdmin);
    }
    Ok(principal)
}

/// `from_fn` middleware: authenticates and authorises by method, then hands the [`Principal`]
/// to the handler through the request's extensions. Needs a `web::Data<Verifier>`; counts each
/// refusal in the app's `web::Data<AuthMetrics>` if it has one.
pub async fn authenticate<B: MessageBody>(
    request: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    match check(&request).await {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.call(request)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
        Err(error) => {
            if let Some(metrics) = request.app_data::<web::Data<AuthMetrics>>() {
                metrics.refused(&error);
            }
            tracing::info!(
                reason = error.code(),
                method = %request.method(),
                path = request.path(),
                "request refused"
            );
            let response = problem(&error).to_response();
            Ok(request.into_response(response).map_into_right_body())
        }
    }
}

impl FromRequest for Principal {
    type Error = Problem;
    type Future = Ready<Result<Self, Problem>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        // Only reachable behind `authenticate`; a route outside it gets a 401, never access.
        ready(
            request
                .extensions()
                .get::<Principal>()
                .cloned()
                .ok_or_else(|| problem(&AuthError::Missing)),
        )
    }
}
