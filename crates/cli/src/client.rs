//! The HTTP side: one authenticated request, its answer or a [`ClientError`] that knows its
//! exit code and prints the server's problem (`detail`, and `errors` when there are several).

use crate::exit;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a problem.
    #[error("{status}: {detail}")]
    Refused {
        /// HTTP status.
        status: StatusCode,
        /// The problem's detail (or the body).
        detail: String,
        /// One line per invalid part, when the server listed them.
        errors: Vec<String>,
    },
    /// The server could not be reached.
    #[error("cannot reach {server}: {source}")]
    Unreachable {
        /// The server URL.
        server: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// No token was given.
    #[error("no token: set CARDSYNC_TOKEN or pass --token-file")]
    NoToken,
    /// A local problem (a file, an argument the server never saw).
    #[error("{0}")]
    Local(String),
}

impl ClientError {
    /// The exit code of the failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Refused { status, .. } => match status.as_u16() {
                404 => exit::NOT_FOUND,
                401 | 403 => exit::DENIED,
                400 | 409 | 413 | 415 | 422 => exit::REFUSED,
                _ => exit::FAILED,
            },
            ClientError::NoToken => exit::DENIED,
            ClientError::Unreachable { .. } | ClientError::Local(_) => exit::FAILED,
        }
    }
}

/// A client of one admin API.
#[derive(Debug, Clone)]
pub struct Client {
    server: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client of `server` sending `token`.
    pub fn new(server: &str, token: Option<String>) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .user_agent(concat!("cardsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| {
                ClientError::Local(format!("cannot build the HTTP client: {error}"))
            })?;
        Ok(Self {
            server: server.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    /// One call: `path` under the server, an optional JSON body; the answer's JSON (`null` for
    /// an empty body).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let token = self.token.as_deref().ok_or(ClientError::NoToken)?;
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.server))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                server: self.server.clone(),
                source,
            })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|source| ClientError::Unreachable {
                server: self.server.clone(),
                source,
            })?;
        let body: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            return Ok(body);
        }
        Err(refusal(status, &body))
    }

    /// GET of a binary answer: its bytes and content type.
    pub async fn get_bytes(&self, path: &str) -> Result<(Vec<u8>, String), ClientError> {
        let token = self.token.as_deref().ok_or(ClientError::NoToken)?;
        let unreachable = |source| ClientError::Unreachable {
            server: self.server.clone(),
            source,
        };
        let response = self
            .http
            .get(format!("{}{path}", self.server))
            .bearer_auth(token)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = response.bytes().await.map_err(unreachable)?;
        if status.is_success() {
            return Ok((bytes.to_vec(), content_type));
        }
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Err(refusal(status, &body))
    }

    /// GET.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, path, None).await
    }
}

/// The error a non-success answer is: the problem's `detail` and `errors`.
fn refusal(status: StatusCode, body: &Value) -> ClientError {
    let detail = body["detail"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| body.to_string());
    let errors = body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    ClientError::Refused {
        status,
        detail,
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16) -> ClientError {
        ClientError::Refused {
            status: StatusCode::from_u16(status).unwrap(),
            detail: String::new(),
            errors: Vec::new(),
        }
    }

    #[test]
    fn each_kind_of_refusal_has_its_exit_code() {
        assert_eq!(refused(404).exit_code(), exit::NOT_FOUND);
        assert_eq!(refused(401).exit_code(), exit::DENIED);
        assert_eq!(refused(403).exit_code(), exit::DENIED);
        assert_eq!(refused(422).exit_code(), exit::REFUSED);
        assert_eq!(refused(409).exit_code(), exit::REFUSED);
        assert_eq!(refused(503).exit_code(), exit::FAILED);
        assert_eq!(ClientError::NoToken.exit_code(), exit::DENIED);
    }
}
