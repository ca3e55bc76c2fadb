//! What every answer of the Graph server carries, whoever produced it.
//!
//! Handlers answer through [`super::finish`], which sets `request-id`, echoes `client-request-id` and renders errors
//! in Graph's envelope with `innerError.date` (graph-facts §9). Some answers never reach a handler: a path no route
//! knows, a method the path's route does not take, a query or body actix refuses before extraction. [`unknown_route`]
//! answers the first two, and [`stamp_ids`] gives every answer that lacks them the same ids and envelope. Identity
//! platform answers carry Entra's `x-ms-request-id` instead, with `client-request-id` echoed.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};

use crate::clock::graph_time;
use crate::state::Sim;

use super::GraphError;
use super::error::error_response;

const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");
const CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("client-request-id");
const MS_REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-request-id");

/// Entity sets the simulator serves under `/v1.0` (a key may follow) and other segments it knows.
const KNOWN_SETS: &[&str] = &["users", "groups", "subscriptions", "directoryRoles"];
const KNOWN_SEGMENTS: &[&str] = &[
    "photo",
    "$value",
    "$count",
    "delta",
    "delta()",
    "transitiveMembers",
    "members",
    "reauthorize",
];

/// The default service: `405` when a route knows the path but not the method, else Graph's `400` for an unknown
/// segment.
pub async fn unknown_route(sim: Data<Sim>, req: HttpRequest) -> HttpResponse {
    let error = if req.resource_map().has_resource(req.path()) {
        GraphError::MethodNotAllowed
    } else {
        GraphError::UnknownSegment(unknown_segment(req.path()).to_owned())
    };
    let (request_id, client_request_id) = ids(req.headers());
    let mut resp = error_response(
        &error,
        &request_id,
        &client_request_id,
        &graph_time(sim.clock.now()),
    );
    set_graph_ids(resp.headers_mut(), &request_id, &client_request_id);
    resp
}

/// The segment Graph would name: the first after the version that is neither a known entity set, a key following
/// one, nor another known segment; else the last.
fn unknown_segment(path: &str) -> &str {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut rest = segments
        .iter()
        .skip(usize::from(segments.first() == Some(&"v1.0")));
    while let Some(segment) = rest.next() {
        if KNOWN_SETS.contains(segment) {
            rest.next();
        } else if !KNOWN_SEGMENTS.contains(segment) {
            return segment;
        }
    }
    segments.last().copied().unwrap_or("")
}

/// Whether a matched route belongs to the identity platform (`/{tenant}/oauth2/…`, discovery, keys).
fn is_identity_route(pattern: Option<&str>) -> bool {
    pattern.is_some_and(|p| p.starts_with("/{tenant}/"))
}

/// Middleware: every answer carries request ids, and an error no handler rendered gets Graph's envelope.
pub async fn stamp_ids(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let identity = is_identity_route(req.match_pattern().as_deref());
    let sim = req.app_data::<Data<Sim>>().cloned();
    let res = next.call(req).await?.map_into_boxed_body();
    if identity {
        return Ok(stamp_identity(res));
    }
    if res.headers().contains_key(REQUEST_ID) {
        return Ok(res);
    }
    let (request_id, client_request_id) = ids(res.request().headers());
    let status = res.status();
    let mut res = if status.is_client_error() || status.is_server_error() {
        let reason = res.response().error().map_or_else(
            || {
                status
                    .canonical_reason()
                    .unwrap_or("Bad Request")
                    .to_owned()
            },
            ToString::to_string,
        );
        let error = if status == StatusCode::METHOD_NOT_ALLOWED {
            GraphError::MethodNotAllowed
        } else {
            GraphError::Refused(status, reason)
        };
        let date = sim.map_or_else(
            || graph_time(time::OffsetDateTime::now_utc()),
            |s| graph_time(s.clock.now()),
        );
        let body = error_response(&error, &request_id, &client_request_id, &date);
        res.into_response(body)
    } else {
        res
    };
    set_graph_ids(res.headers_mut(), &request_id, &client_request_id);
    Ok(res)
}

/// Entra's ids on an identity answer: `x-ms-request-id`, and `client-request-id` echoed when the client sent one.
fn stamp_identity(mut res: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
    let client = res.request().headers().get(CLIENT_REQUEST_ID).cloned();
    let h = res.headers_mut();
    if !h.contains_key(MS_REQUEST_ID)
        && let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
    {
        h.insert(MS_REQUEST_ID, v);
    }
    if let Some(client) = client
        && !h.contains_key(CLIENT_REQUEST_ID)
    {
        h.insert(CLIENT_REQUEST_ID, client);
    }
    res
}

/// A new request id, and the client's `client-request-id` (or the request id when it sent none).
pub fn ids(headers: &HeaderMap) -> (String, String) {
    let request_id = uuid::Uuid::new_v4().to_string();
    let client = headers
        .get(CLIENT_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| request_id.clone(), str::to_owned);
    (request_id, client)
}

fn set_graph_ids(h: &mut HeaderMap, request_id: &str, client_request_id: &str) {
    for (name, value) in [
        (REQUEST_ID, request_id),
        (CLIENT_REQUEST_ID, client_request_id),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    }
    if !h.contains_key(header::CONTENT_TYPE) {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(super::JSON_CT),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unknown_segment_is_the_first_that_names_nothing_known_keys_aside() {
        assert_eq!(unknown_segment("/v1.0/nonsense/users"), "nonsense");
        assert_eq!(unknown_segment("/v1.0/users/abc/nonsense"), "nonsense");
        assert_eq!(unknown_segment("/v1.0/users/abc/photo/x"), "x");
        assert_eq!(unknown_segment("/v1.0/users"), "users");
        assert_eq!(unknown_segment("/nowhere"), "nowhere");
        assert_eq!(unknown_segment("/"), "");
    }
}
