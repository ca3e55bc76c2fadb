//! Every way a request can fail, mapped to an RFC 9457 problem in one place. Causes are logged
//! once here; bodies say what to fix and never carry an internal error or a secret.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use cardsync_runtime::Problem;
use cardsync_store::StoreError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The thing named in the path does not exist (or is a tenant the caller may not see).
    #[error("{what} {id} does not exist")]
    NotFound {
        /// What kind of thing (`tenant`, `card`, `run`, …).
        what: &'static str,
        /// Its id as given.
        id: String,
    },
    /// The token does not give access to this tenant.
    #[error("the token gives no access to tenant {0}")]
    TenantForbidden(uuid::Uuid),
    /// The operation concerns every tenant and the token is limited to some.
    #[error("this operation concerns every tenant; the token gives access to some only")]
    AllTenantsRequired,
    /// The request conflicts with the current state.
    #[error("{detail}")]
    Conflict {
        /// Problem code.
        code: &'static str,
        /// What conflicts.
        detail: String,
    },
    /// The request is well formed but its content is invalid.
    #[error("{detail}")]
    Invalid {
        /// Problem code.
        code: &'static str,
        /// What is wrong.
        detail: String,
        /// One line per problem (`path: message`), when there are several.
        errors: Vec<String>,
    },
    /// One field of the body is invalid: a 422 whose `pointer` (RFC 6901) names it.
    #[error("{pointer}: {detail}")]
    InvalidField {
        /// Problem code.
        code: &'static str,
        /// The field, as a JSON pointer into the body (`/time_zone`).
        pointer: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The request is malformed (query, path, body).
    #[error("{detail}")]
    BadRequest {
        /// Problem code.
        code: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A dependency (database, broker, Graph) is unavailable; try again later.
    #[error("{what} is unavailable")]
    Unavailable {
        /// Which dependency.
        what: &'static str,
        /// Why (logged, never sent).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Graph failed a call the request needed (unavailable, throttled, an unexpected answer):
    /// 503, try again later.
    #[error("Microsoft Graph answered: {0}")]
    Graph(String),
    /// A bug or corrupt data (logged, never sent).
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// `what` `id` does not exist.
    pub fn not_found(what: &'static str, id: impl ToString) -> Self {
        Self::NotFound {
            what,
            id: id.to_string(),
        }
    }

    /// Invalid content with one detail line.
    pub fn invalid(code: &'static str, detail: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    /// A malformed request.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            detail: detail.into(),
        }
    }

    /// The problem this error is sent as.
    pub fn problem(&self) -> Problem {
        match self {
            ApiError::NotFound { what, .. } => Problem::new(
                StatusCode::NOT_FOUND,
                &format!("unknown-{}", what.replace(' ', "-")),
                "Not found",
                self.to_string(),
            ),
            ApiError::TenantForbidden(_) => Problem::new(
                StatusCode::FORBIDDEN,
                "tenant-forbidden",
                "Forbidden",
                self.to_string(),
            ),
            ApiError::AllTenantsRequired => Problem::new(
                StatusCode::FORBIDDEN,
                "all-tenants-required",
                "Forbidden",
                self.to_string(),
            ),
            ApiError::Conflict { code, detail } => {
                Problem::new(StatusCode::CONFLICT, code, "Conflict", detail.clone())
            }
            ApiError::Invalid {
                code,
                detail,
                errors,
            } => {
                let problem = Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    code,
                    "Invalid request content",
                    detail.clone(),
                );
                if errors.is_empty() {
                    problem
                } else {
                    problem.with("errors", serde_json::json!(errors))
                }
            }
            ApiError::InvalidField { code, pointer, .. } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                code,
                "Invalid request content",
                self.to_string(),
            )
            .with("pointer", serde_json::json!(pointer))
            .with("errors", serde_json::json!([self.to_string()])),
            ApiError::BadRequest { code, detail } => {
                Problem::new(StatusCode::BAD_REQUEST, code, "Bad request", detail.clone())
            }
            ApiError::Unavailable { what, .. } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Temporarily unavailable",
                format!("{what} is unavailable; try again later"),
            ),
            ApiError::Graph(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "graph-failed",
                "Microsoft Graph failed",
                self.to_string(),
            ),
            ApiError::Internal(_) => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                "the request failed; the cause is logged",
            ),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if error.is_transient() {
            ApiError::Unavailable {
                what: "the database",
                source: error.into(),
            }
        } else {
            ApiError::Internal(error.into())
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        StoreError::from(error).into()
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.problem().status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let problem = self.problem();
        if problem.status >= 500 {
            tracing::error!(error = %cardsync_telemetry::error_chain(self), "request failed");
        }
        problem.to_response()
    }
}
