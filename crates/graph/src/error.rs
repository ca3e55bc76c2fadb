//! What can go wrong talking to Graph or the identity platform, named by what failed.

use std::time::Duration;

/// Why a Graph call failed.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// Still throttled (429/503) after every retry; wait at least `retry_after` before the next call.
    #[error("throttled by Graph (retry after {retry_after:?})")]
    Throttled {
        /// Graph's `Retry-After`, or our backoff when it sent none.
        retry_after: Duration,
    },
    /// The delta token expired or its sync state is gone (`syncStateNotFound`, `resyncRequired`):
    /// start a new round from scratch.
    #[error("the delta token is no longer valid ({code})")]
    DeltaTokenExpired {
        /// Graph's error code.
        code: String,
    },
    /// `410 Gone` with a `Location`: Graph asks for a full resynchronisation starting there.
    #[error("Graph requires a full resynchronisation")]
    ResyncRequired {
        /// The initial-style URL to restart from.
        location: String,
    },
    /// The access token was refused even after a refresh.
    #[error("Graph refused the access token")]
    Unauthorized,
    /// The app lacks a permission for this call.
    #[error("the app lacks permission for this call ({code})")]
    Forbidden {
        /// Graph's error code.
        code: String,
    },
    /// The object does not exist.
    #[error("not found")]
    NotFound,
    /// `409 Conflict`: for a subscription, one with the same resource and change types exists.
    #[error("Graph reports a conflict: {message}")]
    Conflict {
        /// Graph's message (it names the existing subscription's id).
        message: String,
    },
    /// `403` because the app's subscriptions in the tenant reached Graph's quota.
    #[error("the subscription quota is reached: {message}")]
    SubscriptionQuota {
        /// Graph's message, which names the limit.
        message: String,
    },
    /// Graph answered with an error this client does not retry.
    #[error("Graph rejected the request with {status} ({code})")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Graph's error code.
        code: String,
    },
    /// Graph kept failing (5xx) or could not be reached, through every retry.
    #[error("Graph is unavailable after {attempts} attempts")]
    Unavailable {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        #[source]
        last: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A 2xx response whose body is not what Graph documents.
    #[error("unexpected response from Graph: {0}")]
    BadResponse(String),
    /// No access token could be obtained.
    #[error("no access token")]
    Token(#[from] TokenError),
}

impl GraphError {
    /// Whether trying again later may succeed (the caller's retry/dead-letter decision).
    pub fn is_transient(&self) -> bool {
        match self {
            GraphError::Throttled { .. } | GraphError::Unavailable { .. } => true,
            GraphError::Token(token) => token.is_transient(),
            _ => false,
        }
    }
}

/// Why the identity platform did not hand out a token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The identity platform refused the credentials (`invalid_client`, `unauthorized_client`, …).
    #[error("the identity platform refused the credentials: {error} ({codes:?})")]
    Refused {
        /// OAuth `error`.
        error: String,
        /// Entra's `error_codes` (AADSTS numbers).
        codes: Vec<u64>,
    },
    /// The token endpoint could not be reached or failed.
    #[error("the token endpoint is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The certificate or private key cannot be used to sign an assertion.
    #[error("the certificate credential is unusable: {0}")]
    BadCertificate(String),
    /// The federated token file cannot be read.
    #[error("the federated token file cannot be read")]
    FederatedTokenFile(#[source] std::io::Error),
    /// The response is not a token response.
    #[error("unexpected token response: {0}")]
    BadResponse(String),
}

impl TokenError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            TokenError::Unavailable(_) | TokenError::FederatedTokenFile(_)
        )
    }
}
