//! Bearer JWT authentication and role authorisation for cardsync's HTTP APIs.
//!
//! - [`AuthSettings`]: the `[auth]` section: JWKS URL, accepted issuers and audiences, the roles
//!   claim path, the optional tenant claim, leeway, and HS256 only when explicitly enabled.
//! - [`KeySet`]: the issuer's signing keys from its JWKS URL, cached, refreshed on an unknown
//!   `kid` at most once per `jwks_refresh_interval` whatever the `kid`.
//! - [`Verifier`]: checks a token (algorithm, signature, `iss`, `aud`, `exp`, `nbf`) and reads
//!   the caller's [`Principal`]: who, which [`Role`], which tenants.
//! - [`middleware::authenticate`]: an actix middleware that refuses every request without a
//!   valid token (401 with `WWW-Authenticate: Bearer`) or without the role its method needs
//!   (403): `reader` for reads, `admin` for every change. Refusals are RFC 9457 problems, counted
//!   by reason in [`AuthMetrics`] when the app has one.

mod keys;
mod metrics;
pub mod middleware;
mod principal;
mod settings;
mod verify;

pub use keys::{KeySet, KeysError};
pub use metrics::AuthMetrics;
pub use principal::{Principal, Role, TenantAccess};
pub use settings::AuthSettings;
pub use verify::{AuthError, Verifier};
