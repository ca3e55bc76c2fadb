//! The token issuer's signing keys, fetched from its JWKS URL and cached. An unknown `kid` (the
//! issuer rolled its keys) refetches the document, but at most once per refresh interval
//! whatever the `kid`, so a caller sending made-up `kid`s cannot turn the API into a load on
//! the issuer. Keys older than the maximum age are fetched again on the next request.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Why no key could be had.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The JWKS document could not be fetched or read, and no keys are cached.
    #[error("the token issuer's keys cannot be fetched")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// No key has this `kid`, even after a refresh (or a refresh was not due).
    #[error("no signing key has this kid")]
    UnknownKid,
}

/// One usable signing key.
#[derive(Clone)]
pub(crate) struct SigningKey {
    pub(crate) algorithm: Algorithm,
    pub(crate) key: DecodingKey,
}

#[derive(Default)]
struct Cache {
    keys: HashMap<String, SigningKey>,
    fetched_at: Option<Instant>,
}

/// When to fetch the JWKS document again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RefreshRule {
    /// The least time between two fetches caused by unknown `kid`s.
    pub(crate) unknown_kid_interval: Duration,
    /// How long keys are used before they are fetched again anyway.
    pub(crate) max_age: Duration,
}

impl RefreshRule {
    /// Whether a request needing `kid` should fetch the document now.
    pub(crate) fn should_fetch(
        self,
        fetched_at: Option<Instant>,
        kid_known: bool,
        now: Instant,
    ) -> bool {
        let Some(fetched_at) = fetched_at else {
            return true;
        };
        let age = now.saturating_duration_since(fetched_at);
        age >= self.max_age || (!kid_known && age >= self.unknown_kid_interval)
    }
}

/// The issuer's keys behind a JWKS URL.
#[derive(Clone)]
pub struct KeySet {
    url: String,
    /// None for fixed keys, which are never fetched.
    http: Option<reqwest::Client>,
    rule: RefreshRule,
    cache: Arc<RwLock<Cache>>,
    fetching: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("url", &self.url)
            .field("rule", &self.rule)
            .finish_non_exhaustive()
    }
}

impl KeySet {
    /// Keys from `url`, fetched on first use.
    pub(crate) fn new(
        url: String,
        timeout: Duration,
        rule: RefreshRule,
    ) -> Result<Self, KeysError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|error| KeysError::Unavailable(error.into()))?;
        Ok(Self {
            url,
            http: Some(http),
            rule,
            cache: Arc::default(),
            fetching: Arc::default(),
        })
    }

    /// The keys of a JWKS document given once and never fetched again: a verifier without
    /// network (tests, fuzzing, an issuer whose keys are configured rather than published).
    pub fn fixed(document: &serde_json::Value) -> Self {
        let cache = Cache {
            keys: parse_jwks(document),
            fetched_at: Some(Instant::now()),
        };
        Self {
            url: String::new(),
            http: None,
            rule: RefreshRule {
                unknown_kid_interval: Duration::MAX,
                max_age: Duration::MAX,
            },
            cache: Arc::new(RwLock::new(cache)),
            fetching: Arc::default(),
        }
    }

    fn cached(&self, kid: &str) -> (Option<SigningKey>, Option<Instant>) {
        let cache = self
            .cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (cache.keys.get(kid).cloned(), cache.fetched_at)
    }

    /// The key named `kid`, fetching the document first when the refresh rule says so.
    pub(crate) async fn key(&self, kid: &str) -> Result<SigningKey, KeysError> {
        let (key, fetched_at) = self.cached(kid);
        if !self
            .rule
            .should_fetch(fetched_at, key.is_some(), Instant::now())
        {
            return key.ok_or(KeysError::UnknownKid);
        }
        let _one_fetch_at_a_time = self.fetching.lock().await;
        // Another request may have fetched while this one waited.
        let (key, fetched_at) = self.cached(kid);
        if self
            .rule
            .should_fetch(fetched_at, key.is_some(), Instant::now())
        {
            match self.fetch().await {
                Ok(keys) => {
                    tracing::info!(keys = keys.len(), "jwks fetched");
                    let mut cache = self
                        .cache
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    cache.keys = keys;
                    cache.fetched_at = Some(Instant::now());
                }
                Err(error) => {
                    tracing::warn!(error = %error, "jwks fetch failed");
                    let mut cache = self
                        .cache
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if cache.fetched_at.is_none() {
                        return Err(KeysError::Unavailable(error));
                    }
                    // Keep the old keys; count the failed attempt so the next try waits too.
                    cache.fetched_at = Some(Instant::now());
                }
            }
        }
        self.cached(kid).0.ok_or(KeysError::UnknownKid)
    }

    async fn fetch(
        &self,
    ) -> Result<HashMap<String, SigningKey>, Box<dyn std::error::Error + Send + Sync>> {
        let http = self.http.as_ref().ok_or("fixed keys are never fetched")?;
        let response = http.get(&self.url).send().await?.error_for_status()?;
        let document: serde_json::Value = response.json().await?;
        Ok(parse_jwks(&document))
    }
}

/// The RS256 and ES256 signing keys of a JWKS document, by `kid`; every other key (encryption
/// keys, other curves, keys without a `kid`) is left out.
pub(crate) fn parse_jwks(document: &serde_json::Value) -> HashMap<String, SigningKey> {
    let Some(keys) = document.get("keys").and_then(serde_json::Value::as_array) else {
        return HashMap::new();
    };
    keys.iter()
        .take(100)
        .filter(|key| {
            key.get("use")
                .and_then(serde_json::Value::as_str)
                .is_none_or(|u| u == "sig")
        })
        .filter_map(|key| serde_json::from_value::<Jwk>(key.clone()).ok())
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let algorithm = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(params)
                    if params.curve == EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                _ => return None,
            };
            let key = DecodingKey::from_jwk(&jwk).ok()?;
            Some((kid, SigningKey { algorithm, key }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: RefreshRule = RefreshRule {
        unknown_kid_interval: Duration::from_secs(60),
        max_age: Duration::from_secs(3600),
    };

    #[test]
    fn keys_are_fetched_the_first_time_and_when_too_old() {
        let now = Instant::now();
        assert!(RULE.should_fetch(None, false, now));
        let old = now.checked_sub(Duration::from_secs(3601)).unwrap_or(now);
        if old < now {
            assert!(RULE.should_fetch(Some(old), true, now));
        }
    }

    #[test]
    fn an_unknown_kid_refetches_at_most_once_per_interval_whatever_the_kid() {
        let now = Instant::now();
        let just = now.checked_sub(Duration::from_secs(59)).unwrap_or(now);
        assert!(!RULE.should_fetch(Some(just), false, now));
        assert!(!RULE.should_fetch(Some(now), false, now));
        let minute = now.checked_sub(Duration::from_secs(60));
        if let Some(minute) = minute {
            assert!(RULE.should_fetch(Some(minute), false, now));
            assert!(!RULE.should_fetch(Some(minute), true, now));
        }
    }

    #[test]
    fn only_signing_keys_with_a_kid_and_a_supported_type_are_kept() {
        let document = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "r1", "use": "sig", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "n": "sXch", "e": "AQAB"},
            {"kty": "EC", "kid": "e1", "crv": "P-256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "OKP", "kid": "o1", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "nonsense", "kid": "n1"}
        ]});
        let keys = parse_jwks(&document);
        let mut kids: Vec<&str> = keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        assert_eq!(kids, ["e1", "r1"]);
        assert_eq!(keys["e1"].algorithm, Algorithm::ES256);
        assert_eq!(keys["r1"].algorithm, Algorithm::RS256);
    }
}
