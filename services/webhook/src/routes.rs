//! HTTP routes: thin handlers that extract, call [`Intake`], and map the result. Every error
//! becomes a response in [`WebhookError`]'s one mapping.

use crate::intake::{Intake, IntakeError, parse_batch};
use crate::notification::BatchError;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use cardsync_telemetry::{LogBudget, error_chain};
use futures_util::StreamExt as _;
use std::sync::LazyLock;

/// Path Graph posts change notifications to (the subscription's `notificationUrl`).
pub const NOTIFICATIONS_PATH: &str = "/graph/notifications";
/// Path Graph posts lifecycle notifications to (the subscription's `lifecycleNotificationUrl`).
pub const LIFECYCLE_PATH: &str = "/graph/lifecycle";

/// Most bytes reserved for a body before any of it arrived.
const INITIAL_BODY_CAPACITY: usize = 16 * 1024;

/// Shared state of the HTTP layer.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The intake pipeline.
    pub intake: Intake,
    /// Largest accepted body.
    pub body_limit: usize,
    /// Longest validation token answered.
    pub token_limit: usize,
    /// `Retry-After` on 503.
    pub retry_after_seconds: u32,
}

/// Everything a request can fail with, mapped to a status in one place.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The query string is not valid URL encoding.
    #[error("the query string is not valid URL encoding")]
    BadQuery,
    /// The validation token is empty.
    #[error("validationToken is empty")]
    EmptyToken,
    /// The validation token is longer than allowed.
    #[error("validationToken is longer than {0} bytes")]
    TokenTooLong(usize),
    /// The body is not declared as JSON.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// The body exceeds the limit.
    #[error("body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    /// The body could not be read to the end.
    #[error("the request body could not be read")]
    BodyRead,
    /// The body did not arrive within `http.body_timeout`.
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// The body is not a notification collection.
    #[error(transparent)]
    Malformed(#[from] BatchError),
    /// Nothing was promised; Graph must redeliver after `retry_after` seconds.
    #[error("notifications could not be queued; retry later")]
    Unavailable {
        /// What failed.
        #[source]
        cause: IntakeError,
        /// Seconds for the `Retry-After` header.
        retry_after: u32,
    },
}

impl WebhookError {
    fn code(&self) -> &'static str {
        match self {
            WebhookError::BadQuery => "bad_query",
            WebhookError::EmptyToken => "empty_validation_token",
            WebhookError::TokenTooLong(_) => "validation_token_too_long",
            WebhookError::UnsupportedMediaType => "unsupported_media_type",
            WebhookError::PayloadTooLarge(_) => "payload_too_large",
            WebhookError::BodyRead => "body_unreadable",
            WebhookError::BodyTimeout => "body_timeout",
            WebhookError::Malformed(_) => "malformed_notification",
            WebhookError::Unavailable { .. } => "temporarily_unavailable",
        }
    }
}

impl ResponseError for WebhookError {
    fn status_code(&self) -> StatusCode {
        match self {
            WebhookError::BadQuery
            | WebhookError::EmptyToken
            | WebhookError::TokenTooLong(_)
            | WebhookError::BodyRead
            | WebhookError::Malformed(_) => StatusCode::BAD_REQUEST,
            WebhookError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            WebhookError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            WebhookError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let WebhookError::Unavailable { cause, retry_after } = self {
            // The cause chain is logged here, within a budget (a flood of unverifiable ids must not
            // become a flood of lines); the body says only what the caller can act on.
            static BUDGET: LazyLock<LogBudget> =
                LazyLock::new(|| LogBudget::new(5, std::time::Duration::from_secs(1)));
            if let Some(suppressed_lines) = BUDGET.take() {
                tracing::warn!(error = %error_chain(cause), suppressed_lines, "answering 503");
            }
            response.insert_header((header::RETRY_AFTER, retry_after.to_string()));
        }
        response.json(serde_json::json!({ "error": self.code(), "message": self.to_string() }))
    }
}

/// Registers the webhook's routes (health and metrics are the kit's).
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(web::resource(NOTIFICATIONS_PATH).route(web::post().to(receive)))
        .service(web::resource(LIFECYCLE_PATH).route(web::post().to(receive)));
}

/// Both Graph endpoints: the validation handshake, or a notification collection.
async fn receive(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebhookError> {
    if let Some(token) = validation_token(request.query_string(), state.token_limit)? {
        // Answer before (and without) reading the body, as Graph requires.
        return Ok(HttpResponse::Ok()
            .content_type(ContentType::plaintext())
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .body(token));
    }
    let received_at = time::OffsetDateTime::now_utc();
    require_json(&request)?;
    let body = read_body(&request, payload, state.body_limit).await?;
    let items = parse_batch(&body)?;
    let verdict = state
        .intake
        .accept(items, received_at)
        .await
        .map_err(|cause| WebhookError::Unavailable {
            cause,
            retry_after: state.retry_after_seconds,
        })?;
    tracing::debug!(
        accepted = verdict.accepted,
        rejected = verdict.rejected.len(),
        "notifications handled"
    );
    // 202 even when items were rejected: the sender learns nothing about which checks failed.
    Ok(HttpResponse::Accepted().finish())
}

/// The URL-decoded `validationToken`, if the query has one.
fn validation_token(query: &str, limit: usize) -> Result<Option<String>, WebhookError> {
    if query.is_empty() {
        return Ok(None);
    }
    let pairs: Vec<(String, String)> = web::Query::<Vec<(String, String)>>::from_query(query)
        .map_err(|_| WebhookError::BadQuery)?
        .into_inner();
    let Some((_, token)) = pairs.into_iter().find(|(key, _)| key == "validationToken") else {
        return Ok(None);
    };
    if token.is_empty() {
        return Err(WebhookError::EmptyToken);
    }
    if token.len() > limit {
        return Err(WebhookError::TokenTooLong(limit));
    }
    Ok(Some(token))
}

fn require_json(request: &HttpRequest) -> Result<(), WebhookError> {
    let declared = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|essence| essence.trim().to_ascii_lowercase());
    match declared.as_deref() {
        Some("application/json") => Ok(()),
        _ => Err(WebhookError::UnsupportedMediaType),
    }
}

async fn read_body(
    request: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Vec<u8>, WebhookError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(WebhookError::PayloadTooLarge(limit));
    }
    // Reserve what arrives, never what is declared: a declared length costs a client nothing,
    // and many slow clients each declaring a megabyte would otherwise reserve a megabyte each.
    let mut body = Vec::with_capacity(declared.unwrap_or(0).min(INITIAL_BODY_CAPACITY));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|error| {
            if cardsync_runtime::is_body_timeout(&error) {
                WebhookError::BodyTimeout
            } else {
                WebhookError::BodyRead
            }
        })?;
        if body.len() + chunk.len() > limit {
            return Err(WebhookError::PayloadTooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_url_decoded_including_plus_as_space() {
        let token = validation_token(
            "validationToken=Validation%3A+Testing%20client%26more",
            4096,
        )
        .unwrap();
        assert_eq!(token.as_deref(), Some("Validation: Testing client&more"));
    }

    #[test]
    fn other_query_parameters_are_not_a_handshake() {
        assert_eq!(validation_token("tenant=abc", 4096).unwrap(), None);
        assert_eq!(validation_token("", 4096).unwrap(), None);
    }

    #[test]
    fn long_empty_and_broken_tokens_are_refused() {
        assert!(matches!(
            validation_token("validationToken=abcd", 3),
            Err(WebhookError::TokenTooLong(3))
        ));
        assert!(matches!(
            validation_token("validationToken=", 3),
            Err(WebhookError::EmptyToken)
        ));
    }
}
