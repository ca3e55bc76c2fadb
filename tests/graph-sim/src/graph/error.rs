//! Graph's error envelope (graph-facts §9): the failures a handler can return and how each is rendered.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpResponse, HttpResponseBuilder};
use serde_json::json;

use crate::directory::DirectoryError;
use crate::identity::{self, BearerError};
use crate::subscriptions::SubscriptionError;

use super::JSON_CT;

/// A Graph failure, rendered in Graph's error envelope (graph-facts §9).
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// 401 `InvalidAuthenticationToken`.
    #[error(transparent)]
    Unauthorized(#[from] BearerError),
    /// 403 `Authorization_RequestDenied`.
    #[error("Insufficient privileges to complete the operation.")]
    Forbidden,
    /// 404 / 400 from the directory.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// 404 `ImageNotFound` for a missing photo.
    #[error(
        "Exception of type 'Microsoft.Fast.Profile.Core.Exception.ImageNotFoundException' was thrown."
    )]
    NoPhoto,
    /// 400 with a code.
    #[error("{1}")]
    BadRequest(&'static str, String),
    /// 429 from the bucket or a fault rule.
    #[error("Please retry again later.")]
    Throttled {
        /// `Retry-After`, if any.
        retry_after: Option<String>,
        /// `x-ms-throttle-scope`.
        scope: String,
    },
    /// 503 `serviceNotAvailable`.
    #[error("The service is temporarily unavailable. Please retry later.")]
    Unavailable(Option<String>),
    /// An injected connection drop.
    #[error("connection dropped by fault injection")]
    Dropped,
    /// 410 `syncStateNotFound`: the delta token is too old.
    #[error(
        "The sync state generation is not found. The delta token is expired and data must be synchronized again."
    )]
    SyncStateNotFound,
    /// 410 Gone + `Location`: full resync.
    #[error("The delta token is no longer valid, and the app must reset the sync state.")]
    ResyncRequired(String),
    /// Subscription failures.
    #[error(transparent)]
    Subscription(#[from] SubscriptionError),
    /// 400 `BadRequest`: no route for the path.
    #[error("Resource not found for the segment '{0}'.")]
    UnknownSegment(String),
    /// 405: a route for the path, but not for the method.
    #[error("Specified HTTP method is not allowed for the request target.")]
    MethodNotAllowed,
    /// A request refused before any handler saw it (unreadable query, body over the size limit), with its status.
    #[error("{1}")]
    Refused(StatusCode, String),
}

impl GraphError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            GraphError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken"),
            GraphError::Forbidden => (StatusCode::FORBIDDEN, "Authorization_RequestDenied"),
            GraphError::Directory(
                DirectoryError::NotFound(_) | DirectoryError::RoleNotFound(_),
            ) => (StatusCode::NOT_FOUND, "Request_ResourceNotFound"),
            GraphError::Directory(_) => (StatusCode::BAD_REQUEST, "Request_BadRequest"),
            GraphError::NoPhoto => (StatusCode::NOT_FOUND, "ImageNotFound"),
            GraphError::BadRequest(code, _) => (StatusCode::BAD_REQUEST, code),
            GraphError::Throttled { .. } => (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests"),
            GraphError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "serviceNotAvailable"),
            GraphError::Dropped => (StatusCode::OK, ""),
            GraphError::SyncStateNotFound => (StatusCode::GONE, "syncStateNotFound"),
            GraphError::ResyncRequired(_) => (StatusCode::GONE, "resyncRequired"),
            GraphError::UnknownSegment(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            GraphError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "Request_BadRequest"),
            GraphError::Refused(status, _) => (*status, "BadRequest"),
            GraphError::Subscription(e) => match e {
                SubscriptionError::Duplicate(_) => (StatusCode::CONFLICT, "ExtensionError"),
                SubscriptionError::Quota => (StatusCode::FORBIDDEN, "ExtensionError"),
                SubscriptionError::NotFound => (StatusCode::NOT_FOUND, "ResourceNotFound"),
                _ => (StatusCode::BAD_REQUEST, "InvalidRequest"),
            },
        }
    }
}

pub(super) fn error_response(
    e: &GraphError,
    request_id: &str,
    client_request_id: &str,
    date: &str,
) -> HttpResponse {
    if matches!(e, GraphError::Dropped) {
        let failing = futures_util::stream::once(async {
            Err::<Bytes, std::io::Error>(std::io::Error::other(
                "connection dropped by graph-sim fault injection",
            ))
        });
        return HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, JSON_CT))
            .streaming(failing);
    }
    let (status, code) = e.status_and_code();
    let mut inner =
        json!({"date": date, "request-id": request_id, "client-request-id": client_request_id});
    if status == StatusCode::TOO_MANY_REQUESTS {
        inner = json!({"code": "429", "date": date, "message": "Please retry after", "request-id": request_id, "status": "429"});
    }
    let body = json!({"error": {"code": code, "message": e.to_string(), "innerError": inner}});
    let mut b = HttpResponseBuilder::new(status);
    b.insert_header((header::CONTENT_TYPE, JSON_CT));
    match e {
        GraphError::Unauthorized(_) => {
            b.insert_header((header::WWW_AUTHENTICATE, format!("Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"{}\"", identity::GRAPH_APP_ID)));
        }
        GraphError::Throttled { retry_after, scope } => {
            if let Some(ra) = retry_after {
                b.insert_header((header::RETRY_AFTER, ra.as_str()));
            }
            b.insert_header(("x-ms-throttle-scope", scope.as_str()))
                .insert_header(("x-ms-throttle-information", "ResourceUnitLimitExceeded"));
        }
        GraphError::Unavailable(Some(ra)) => {
            b.insert_header((header::RETRY_AFTER, ra.as_str()));
        }
        GraphError::ResyncRequired(location) => {
            b.insert_header((header::LOCATION, location.as_str()));
        }
        _ => {}
    }
    b.body(body.to_string())
}
