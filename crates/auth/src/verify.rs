//! Checks a bearer token and reads its caller: the algorithm against the key that signed it,
//! the signature, `exp` and `nbf` (with leeway), `aud`, `iss` (with `{tid}` templates for
//! multi-tenant Entra apps), then the roles and the tenant claim.

use crate::keys::{KeySet, KeysError, RefreshRule};
use crate::principal::{Principal, Role, TenantAccess};
use crate::settings::AuthSettings;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::ExposeSecret as _;
use serde_json::Value;
use std::collections::BTreeSet;
use uuid::Uuid;

/// Why a request is refused. The texts say why, never which key or secret was involved.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("the request carries no bearer token")]
    Missing,
    /// Not a JWT, or a part does not decode.
    #[error("the bearer token is not a well-formed JWT")]
    Malformed,
    /// The header names an algorithm this API does not accept (`none`, HS256 when not enabled…).
    #[error("the token's algorithm is not accepted")]
    AlgorithmNotAccepted,
    /// The header has no `kid`, so no key can be chosen.
    #[error("the token's header names no key (kid)")]
    NoKeyId,
    /// No key of the issuer has the token's `kid`.
    #[error("the token was signed by a key the issuer does not publish")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the token's signature does not verify")]
    BadSignature,
    /// Past `exp`.
    #[error("the token has expired")]
    Expired,
    /// Before `nbf`.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iss` is none of the accepted issuers.
    #[error("the token's issuer is not accepted")]
    WrongIssuer,
    /// `aud` is none of the accepted audiences.
    #[error("the token is not meant for this API (audience)")]
    WrongAudience,
    /// A claim every token needs is missing.
    #[error("the token lacks the {0} claim")]
    MissingClaim(String),
    /// The token grants neither role.
    #[error("the token grants no role of this API")]
    NoRole,
    /// The token has the reader role, and the request changes something.
    #[error("this request needs the admin role")]
    NotAdmin,
    /// The tenant claim is configured and the token has none.
    #[error("the token names no tenant")]
    NoTenant,
    /// The issuer's keys cannot be fetched (and none are cached).
    #[error("the token issuer's keys cannot be fetched")]
    KeysUnavailable,
}

impl AuthError {
    /// Whether the refusal is about the token itself (401) rather than what it grants (403).
    pub fn is_unauthenticated(&self) -> bool {
        !matches!(
            self,
            AuthError::NoRole
                | AuthError::NotAdmin
                | AuthError::NoTenant
                | AuthError::KeysUnavailable
        )
    }

    /// Every [`AuthError::code`], for metrics created up front.
    pub const CODES: [&'static str; 15] = [
        "token-missing",
        "token-malformed",
        "token-algorithm",
        "token-kid-missing",
        "token-key-unknown",
        "token-signature",
        "token-expired",
        "token-not-yet-valid",
        "token-issuer",
        "token-audience",
        "token-claim-missing",
        "role-missing",
        "admin-role-required",
        "tenant-claim-missing",
        "issuer-unavailable",
    ];

    /// A stable code for problem types and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "token-missing",
            AuthError::Malformed => "token-malformed",
            AuthError::AlgorithmNotAccepted => "token-algorithm",
            AuthError::NoKeyId => "token-kid-missing",
            AuthError::UnknownKey => "token-key-unknown",
            AuthError::BadSignature => "token-signature",
            AuthError::Expired => "token-expired",
            AuthError::NotYetValid => "token-not-yet-valid",
            AuthError::WrongIssuer => "token-issuer",
            AuthError::WrongAudience => "token-audience",
            AuthError::MissingClaim(_) => "token-claim-missing",
            AuthError::NoRole => "role-missing",
            AuthError::NotAdmin => "admin-role-required",
            AuthError::NoTenant => "tenant-claim-missing",
            AuthError::KeysUnavailable => "issuer-unavailable",
        }
    }
}

/// Checks tokens as [`AuthSettings`] say.
#[derive(Clone)]
pub struct Verifier {
    settings: AuthSettings,
    keys: Option<KeySet>,
    hs256: Option<DecodingKey>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys)
            .field("hs256", &self.hs256.is_some())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for validated settings.
    pub fn new(settings: &AuthSettings) -> Result<Self, KeysError> {
        let keys = settings
            .jwks_url
            .clone()
            .map(|url| {
                KeySet::new(
                    url,
                    settings.jwks_timeout,
                    RefreshRule {
                        unknown_kid_interval: settings.jwks_refresh_interval,
                        max_age: settings.jwks_max_age,
                    },
                )
            })
            .transpose()?;
        Ok(Self::with_keys(settings, keys))
    }

    /// A verifier with these keys instead of the settings' JWKS URL (see [`KeySet::fixed`]).
    pub fn with_keys(settings: &AuthSettings, keys: Option<KeySet>) -> Self {
        let hs256 = settings
            .allow_hs256
            .then_some(settings.hs256_secret.as_ref())
            .flatten()
            .map(|secret| DecodingKey::from_secret(secret.expose_secret().as_bytes()));
        Self {
            settings: settings.clone(),
            keys,
            hs256,
        }
    }

    /// Verifies `token` and reads its caller.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let key = match header.alg {
            Algorithm::RS256 | Algorithm::ES256 => {
                let keys = self.keys.as_ref().ok_or(AuthError::AlgorithmNotAccepted)?;
                let kid = header.kid.as_deref().ok_or(AuthError::NoKeyId)?;
                let key = keys.key(kid).await.map_err(|error| match error {
                    KeysError::UnknownKid => AuthError::UnknownKey,
                    KeysError::Unavailable(_) => AuthError::KeysUnavailable,
                })?;
                // A key is used only with its own algorithm (no RS256 key verifying an ES256
                // or HS256 claim, the classic confusion).
                if key.algorithm != header.alg {
                    return Err(AuthError::AlgorithmNotAccepted);
                }
                key.key
            }
            Algorithm::HS256 => self.hs256.clone().ok_or(AuthError::AlgorithmNotAccepted)?,
            _ => return Err(AuthError::AlgorithmNotAccepted),
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.settings.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_audience(&self.settings.audiences);
        validation.iss = None;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|error| match error.into_kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    AuthError::AlgorithmNotAccepted
                }
                ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim),
                _ => AuthError::Malformed,
            })?
            .claims;
        self.check_issuer(&claims)?;
        Ok(Principal {
            subject: subject(&claims),
            role: self.role(&claims)?,
            tenants: self.tenants(&claims)?,
        })
    }

    fn check_issuer(&self, claims: &Value) -> Result<(), AuthError> {
        let issuer = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(AuthError::WrongIssuer)?;
        let tid = claims.get("tid").and_then(Value::as_str);
        let accepted = self.settings.issuers.iter().any(|pattern| {
            if pattern.contains("{tid}") {
                tid.filter(|tid| Uuid::parse_str(tid).is_ok())
                    .is_some_and(|tid| pattern.replace("{tid}", tid) == issuer)
            } else {
                pattern == issuer
            }
        });
        if accepted {
            Ok(())
        } else {
            Err(AuthError::WrongIssuer)
        }
    }

    fn role(&self, claims: &Value) -> Result<Role, AuthError> {
        let roles = strings_at(claims, &self.settings.roles_claim);
        if roles.contains(&self.settings.admin_role) {
            Ok(Role::Admin)
        } else if roles.contains(&self.settings.reader_role) {
            Ok(Role::Reader)
        } else {
            Err(AuthError::NoRole)
        }
    }

    fn tenants(&self, claims: &Value) -> Result<TenantAccess, AuthError> {
        let Some(path) = &self.settings.tenant_claim else {
            return Ok(TenantAccess::All);
        };
        let tenants: BTreeSet<Uuid> = strings_at(claims, path)
            .iter()
            .filter_map(|text| Uuid::parse_str(text).ok())
            .collect();
        if tenants.is_empty() {
            return Err(AuthError::NoTenant);
        }
        Ok(TenantAccess::Only(tenants))
    }
}

/// The strings at a dot path of the claims: an array of strings, or one string (split on
/// spaces, as OAuth `scope` claims are).
fn strings_at(claims: &Value, path: &str) -> Vec<String> {
    let value = path
        .split('.')
        .try_fold(claims, |value, part| value.get(part));
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(text)) => text.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// Who the token speaks for, readable in the audit log: a user's sign-in name, else the app
/// (`app:<client id>`, Entra v1 `appid` or v2 `azp`), else the subject.
fn subject(claims: &Value) -> String {
    let text = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|text| !text.is_empty())
    };
    let who = ["preferred_username", "upn", "unique_name", "email"]
        .into_iter()
        .find_map(text)
        .map(str::to_owned)
        .or_else(|| {
            text("appid")
                .or_else(|| text("azp"))
                .map(|app| format!("app:{app}"))
        })
        .or_else(|| text("sub").map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());
    who.chars().filter(|c| !c.is_control()).take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn roles_are_read_from_a_dot_path_as_an_array_or_a_spaced_string() {
        let claims =
            json!({"roles": ["admin"], "realm_access": {"roles": ["reader", "x"]}, "scp": "a b"});
        assert_eq!(strings_at(&claims, "roles"), ["admin"]);
        assert_eq!(strings_at(&claims, "realm_access.roles"), ["reader", "x"]);
        assert_eq!(strings_at(&claims, "scp"), ["a", "b"]);
        assert!(strings_at(&claims, "realm_access.nothing").is_empty());
        assert!(strings_at(&claims, "realm_access").is_empty());
    }

    #[test]
    fn the_subject_prefers_a_users_name_then_the_app_then_sub() {
        assert_eq!(
            subject(&json!({"upn": "ann@x", "appid": "a", "sub": "s"})),
            "ann@x"
        );
        assert_eq!(subject(&json!({"appid": "c1", "sub": "s"})), "app:c1");
        assert_eq!(subject(&json!({"azp": "c2", "sub": "s"})), "app:c2");
        assert_eq!(subject(&json!({"sub": "s"})), "s");
        assert_eq!(subject(&json!({})), "unknown");
    }

    #[test]
    fn only_the_token_errors_are_unauthenticated() {
        assert!(AuthError::Expired.is_unauthenticated());
        assert!(AuthError::Missing.is_unauthenticated());
        assert!(!AuthError::NoRole.is_unauthenticated());
        assert!(!AuthError::NotAdmin.is_unauthenticated());
    }

    fn settings() -> AuthSettings {
        AuthSettings {
            jwks_url: None,
            issuers: vec![
                "https://sts.windows.net/{tid}/".into(),
                "https://idp.test".into(),
            ],
            audiences: vec!["api://cardsync".into()],
            roles_claim: "roles".into(),
            reader_role: "reader".into(),
            admin_role: "admin".into(),
            tenant_claim: None,
            leeway: std::time::Duration::from_secs(5),
            jwks_refresh_interval: std::time::Duration::from_secs(60),
            jwks_max_age: std::time::Duration::from_secs(3600),
            jwks_timeout: std::time::Duration::from_secs(1),
            allow_hs256: true,
            hs256_secret: Some("0123456789abcdef0123456789abcdef".to_owned().into()),
        }
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
            .unwrap_or(0)
    }

    fn token(claims: &Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            claims,
            &jsonwebtoken::EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap()
    }

    fn good() -> Value {
        json!({"iss": "https://idp.test", "aud": "api://cardsync", "exp": now() + 600,
               "nbf": now() - 10, "roles": ["reader"], "sub": "s"})
    }

    async fn verify(settings: &AuthSettings, claims: Value) -> Result<Principal, AuthError> {
        Verifier::new(settings)
            .unwrap()
            .verify(&token(&claims))
            .await
    }

    #[tokio::test]
    async fn each_wrong_claim_is_named() {
        let s = settings();
        let principal = verify(&s, good()).await.unwrap();
        assert_eq!(
            (principal.role, principal.tenants),
            (Role::Reader, TenantAccess::All)
        );
        let with = |key: &str, value: Value| {
            let mut claims = good();
            claims[key] = value;
            claims
        };
        assert_eq!(
            verify(&s, with("exp", json!(now() - 60))).await,
            Err(AuthError::Expired)
        );
        assert_eq!(
            verify(&s, with("nbf", json!(now() + 600))).await,
            Err(AuthError::NotYetValid)
        );
        assert_eq!(
            verify(&s, with("iss", json!("https://evil.test"))).await,
            Err(AuthError::WrongIssuer)
        );
        assert_eq!(
            verify(&s, with("aud", json!("api://other"))).await,
            Err(AuthError::WrongAudience)
        );
        assert_eq!(
            verify(&s, with("roles", json!(["nobody"]))).await,
            Err(AuthError::NoRole)
        );
        let mut no_exp = good();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert_eq!(
            verify(&s, no_exp).await,
            Err(AuthError::MissingClaim("exp".into()))
        );
    }

    #[tokio::test]
    async fn a_tid_template_accepts_only_its_own_tenants_issuer() {
        let s = settings();
        let tid = "72f988bf-86f1-41af-91ab-2d7cd011db47";
        let mut claims = good();
        claims["iss"] = json!(format!("https://sts.windows.net/{tid}/"));
        claims["tid"] = json!(tid);
        assert!(verify(&s, claims.clone()).await.is_ok());
        claims["tid"] = json!("00000000-0000-0000-0000-000000000001");
        assert_eq!(verify(&s, claims).await, Err(AuthError::WrongIssuer));
    }

    #[tokio::test]
    async fn the_tenant_claim_limits_the_caller_and_its_absence_is_refused() {
        let mut s = settings();
        s.tenant_claim = Some("tid".into());
        let tid = uuid::Uuid::new_v4();
        let mut claims = good();
        claims["tid"] = json!(tid.to_string());
        let principal = verify(&s, claims).await.unwrap();
        assert!(principal.may_access(tid));
        assert!(!principal.may_access(uuid::Uuid::new_v4()));
        assert_eq!(verify(&s, good()).await, Err(AuthError::NoTenant));
    }

    #[tokio::test]
    async fn hs256_is_refused_unless_enabled_and_rs256_needs_a_jwks() {
        let mut s = settings();
        s.allow_hs256 = false;
        assert_eq!(
            verify(&s, good()).await,
            Err(AuthError::AlgorithmNotAccepted)
        );
    }
}
