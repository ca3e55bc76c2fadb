//! The `[auth]` section of a service protected by bearer tokens.

use cardsync_config::{Validate, check_url};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use std::time::Duration;

/// How tokens are checked and what they grant.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    /// The issuer's JWKS document (Entra: `https://login.microsoftonline.com/{tid}/discovery/v2.0/keys`
    /// or `…/common/discovery/v2.0/keys`; Keycloak: `…/realms/{realm}/protocol/openid-connect/certs`).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Accepted `iss` values. `{tid}` stands for the token's `tid` claim (a multi-tenant Entra
    /// app accepts `https://sts.windows.net/{tid}/` and `https://login.microsoftonline.com/{tid}/v2.0`).
    pub issuers: Vec<String>,
    /// Accepted `aud` values: the App ID URI (`api://…`, v1.0 tokens) and the client id (v2.0).
    pub audiences: Vec<String>,
    /// Where the roles are: a dot path into the claims (`roles`, `realm_access.roles`).
    pub roles_claim: String,
    /// The role that may read.
    pub reader_role: String,
    /// The role that may change (and read).
    pub admin_role: String,
    /// A claim naming the tenants a caller may see (`tid`); none: every tenant.
    #[serde(default)]
    pub tenant_claim: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub leeway: Duration,
    /// The least time between two JWKS fetches caused by unknown `kid`s.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub jwks_refresh_interval: Duration,
    /// How long fetched keys are used before they are fetched again anyway.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub jwks_max_age: Duration,
    /// Time allowed for a JWKS fetch.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub jwks_timeout: Duration,
    /// Development only: also accept HS256 tokens signed with `hs256_secret`. Off by default.
    #[serde(default)]
    pub allow_hs256: bool,
    /// The shared HS256 secret (at least 32 bytes), used only when `allow_hs256` is on.
    #[serde(default)]
    pub hs256_secret: Option<SecretString>,
}

impl Validate for AuthSettings {
    fn validate(&self, problems: &mut Vec<String>) {
        match &self.jwks_url {
            Some(url) => check_url(url, &["http", "https"], "auth.jwks_url", problems),
            None if !self.allow_hs256 => problems.push(
                "auth.jwks_url: required (the token issuer's JWKS document), unless auth.allow_hs256 is on for development".into(),
            ),
            None => {}
        }
        if self.issuers.is_empty() || self.issuers.iter().any(|issuer| issuer.trim().is_empty()) {
            problems.push("auth.issuers: list at least one accepted issuer, none empty".into());
        }
        if self.audiences.is_empty() || self.audiences.iter().any(|aud| aud.trim().is_empty()) {
            problems.push("auth.audiences: list at least one accepted audience, none empty".into());
        }
        for (key, value) in [
            ("auth.roles_claim", &self.roles_claim),
            ("auth.reader_role", &self.reader_role),
            ("auth.admin_role", &self.admin_role),
        ] {
            if value.trim().is_empty() {
                problems.push(format!("{key}: must not be empty"));
            }
        }
        if self
            .tenant_claim
            .as_ref()
            .is_some_and(|claim| claim.trim().is_empty())
        {
            problems.push("auth.tenant_claim: must not be empty when set".into());
        }
        if self.leeway > Duration::from_secs(300) {
            problems.push("auth.leeway: at most 5m".into());
        }
        if self.jwks_timeout.is_zero() {
            problems.push("auth.jwks_timeout: must be greater than 0".into());
        }
        if self.allow_hs256 {
            match &self.hs256_secret {
                Some(secret) if secret.expose_secret().len() >= 32 => {}
                _ => problems.push(
                    "auth.hs256_secret: at least 32 bytes when auth.allow_hs256 is on".into(),
                ),
            }
        }
    }
}
