//! RFC 9457 problem details: the one shape of every refusal an HTTP API of cardsync sends
//! (`application/problem+json` with `type`, `title`, `status`, `detail`). The `type` is a stable
//! URN naming the problem (`urn:cardsync:problem:unknown-tenant`) that scripts can match on;
//! the `detail` says what to fix, never a secret or an internal cause.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// The media type of a problem body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One problem, ready to be sent.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// A URN naming the problem (`urn:cardsync:problem:<code>`).
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary that is the same for every occurrence of the problem.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong this time, for a human.
    pub detail: String,
    /// Extra members (for example `errors` with one line per invalid field).
    #[serde(flatten)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
    /// A `WWW-Authenticate` value to send with it (401 and 403 of bearer-protected APIs).
    #[serde(skip)]
    pub www_authenticate: Option<String>,
}

impl Problem {
    /// A problem `code` (lowercase words joined by `-`) with `status`, `title` and `detail`.
    pub fn new(
        status: StatusCode,
        code: &str,
        title: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind: format!("urn:cardsync:problem:{code}"),
            title: title.into(),
            status: status.as_u16(),
            detail: detail.into(),
            extensions: serde_json::Map::new(),
            www_authenticate: None,
        }
    }

    /// Adds an extension member.
    pub fn with(mut self, name: &str, value: serde_json::Value) -> Self {
        self.extensions.insert(name.to_owned(), value);
        self
    }

    /// Sends `value` as the `WWW-Authenticate` header.
    pub fn with_www_authenticate(mut self, value: String) -> Self {
        self.www_authenticate = Some(value);
        self
    }

    /// The problem's code (the last part of its `type`).
    pub fn code(&self) -> &str {
        self.kind.rsplit(':').next().unwrap_or_default()
    }

    /// The response carrying it.
    pub fn to_response(&self) -> HttpResponse {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = HttpResponse::build(status);
        response.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
        if let Some(challenge) = &self.www_authenticate
            && let Ok(value) = HeaderValue::from_str(challenge)
        {
            response.insert_header((header::WWW_AUTHENTICATE, value));
        }
        response.body(serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned()))
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code(), self.detail)
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        self.to_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_serialises_with_its_type_and_extensions_and_no_header() {
        let problem = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-rules",
            "The rules are invalid",
            "2 problems",
        )
        .with("errors", serde_json::json!(["a", "b"]))
        .with_www_authenticate("Bearer".into());
        let json = serde_json::to_value(&problem).unwrap();
        assert_eq!(json["type"], "urn:cardsync:problem:invalid-rules");
        assert_eq!(json["status"], 422);
        assert_eq!(json["errors"][1], "b");
        assert!(json.get("www_authenticate").is_none());
        assert_eq!(problem.code(), "invalid-rules");
    }
}
