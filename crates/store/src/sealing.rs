//! The keys that seal tenants' Graph credentials (AES-256-GCM), so a database dump alone reveals
//! no secret, and the `[secrets]` section every service that opens credentials shares.
//!
//! A [`Keyring`] seals with its current key and opens with any key it holds: a sealed credential
//! is stored with the id of the key that sealed it. Rotating the key therefore needs no downtime:
//! deploy the new key as current with the old one among the previous keys, re-seal every
//! connection (`cardsync sealing-key reseal`), then drop the old key.
//!
//! The built-in development key is public (it is in this file); it is refused unless
//! `secrets.development` is set.

use base64::Engine as _;
use cardsync_config::Validate;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::collections::BTreeMap;
use uuid::Uuid;

/// The development key: 32 public bytes, for local runs only.
const DEVELOPMENT_KEY: &[u8; 32] = b"cardsync-development-key-32bytes";

/// Why a credential could not be sealed or unsealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The sealing key is not 32 bytes of base64.
    #[error("the credential sealing key must be 32 bytes, base64-encoded")]
    BadKey,
    /// The ciphertext was altered, or sealed under a key this process does not hold.
    #[error("the sealed credential does not open with any configured key")]
    Tampered,
    /// No key is configured and development mode is off.
    #[error("no credential sealing key is configured")]
    Missing,
}

/// One AES-256-GCM key.
pub struct SealingKey(LessSafeKey);

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(<redacted>)")
    }
}

const NONCE_LEN: usize = 12;

impl SealingKey {
    /// From 32 base64-encoded bytes (`openssl rand -base64 32`).
    pub fn from_base64(key: &SecretString) -> Result<Self, SealError> {
        let bytes = decode(key)?;
        Self::from_bytes(&bytes)
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| SealError::BadKey)?;
        Ok(Self(LessSafeKey::new(unbound)))
    }

    /// Seals `plaintext` bound to `tenant` (the tenant id is authenticated data, so a sealed
    /// credential moved to another tenant's row does not open).
    pub fn seal(&self, tenant: Uuid, plaintext: &str) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::BadKey)?;
        let mut buffer = plaintext.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(tenant.as_bytes()),
                &mut buffer,
            )
            .map_err(|_| SealError::BadKey)?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&buffer);
        Ok(sealed)
    }

    /// Opens what [`SealingKey::seal`] produced for the same tenant.
    pub fn open(&self, tenant: Uuid, sealed: &[u8]) -> Result<SecretString, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError::Tampered);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Tampered)?;
        let mut buffer = ciphertext.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(tenant.as_bytes()), &mut buffer)
            .map_err(|_| SealError::Tampered)?;
        let text = String::from_utf8(plain.to_vec()).map_err(|_| SealError::Tampered)?;
        Ok(SecretString::from(text))
    }
}

fn decode(key: &SecretString) -> Result<Vec<u8>, SealError> {
    base64::engine::general_purpose::STANDARD
        .decode(key.expose_secret().trim())
        .map_err(|_| SealError::BadKey)
}

/// The current key, which seals, and the previous ones, which still open.
#[derive(Debug)]
pub struct Keyring {
    /// `(id, key)`, the current key first.
    keys: Vec<(String, SealingKey)>,
}

impl Keyring {
    /// A ring of one key (tests and tools).
    pub fn single(id: &str, key: SealingKey) -> Self {
        Self {
            keys: vec![(id.to_owned(), key)],
        }
    }

    /// The id stored with what this ring seals.
    pub fn current_id(&self) -> &str {
        &self.keys[0].0
    }

    /// Every key id this ring opens, the current one first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(id, _)| id.as_str())
    }

    /// Whether `id` names a key of this ring.
    pub fn holds(&self, id: &str) -> bool {
        self.ids().any(|known| known == id)
    }

    /// Seals with the current key: `(key id, sealed bytes)`.
    pub fn seal(&self, tenant: Uuid, plaintext: &str) -> Result<(String, Vec<u8>), SealError> {
        let (id, key) = &self.keys[0];
        Ok((id.clone(), key.seal(tenant, plaintext)?))
    }

    /// Opens with the key named `key_id`; a credential sealed before key ids were stored
    /// (`None`) is tried with every key, which is safe because a wrong key never opens.
    pub fn open(
        &self,
        tenant: Uuid,
        key_id: Option<&str>,
        sealed: &[u8],
    ) -> Result<SecretString, SealError> {
        match key_id {
            Some(wanted) => self
                .keys
                .iter()
                .find(|(id, _)| id == wanted)
                .ok_or(SealError::Tampered)?
                .1
                .open(tenant, sealed),
            None => self
                .keys
                .iter()
                .find_map(|(_, key)| key.open(tenant, sealed).ok())
                .ok_or(SealError::Tampered),
        }
    }
}

/// The `[secrets]` section.
#[derive(Debug, Clone, Deserialize)]
pub struct SecretsSettings {
    /// 32 bytes, base64: the key that seals tenant credentials in PostgreSQL (and opens them).
    #[serde(default)]
    pub credential_key: Option<SecretString>,
    /// The id stored with what `credential_key` seals.
    #[serde(default = "default_key_id")]
    pub credential_key_id: String,
    /// Keys that still open credentials sealed before a rotation, by id.
    #[serde(default)]
    pub previous_credential_keys: BTreeMap<String, SecretString>,
    /// Local runs: without `credential_key`, use the built-in development key, and accept it.
    #[serde(default)]
    pub development: bool,
}

fn default_key_id() -> String {
    "primary".to_owned()
}

impl SecretsSettings {
    /// Development mode with the built-in key (benchmarks and local tools).
    pub fn development() -> Self {
        Self {
            credential_key: None,
            credential_key_id: default_key_id(),
            previous_credential_keys: BTreeMap::new(),
            development: true,
        }
    }

    /// The keyring these settings describe.
    pub fn keyring(&self) -> Result<Keyring, SealError> {
        let current = match &self.credential_key {
            Some(key) => SealingKey::from_base64(key)?,
            None if self.development => SealingKey::from_bytes(DEVELOPMENT_KEY)?,
            None => return Err(SealError::Missing),
        };
        let mut keys = vec![(self.credential_key_id.clone(), current)];
        for (id, key) in &self.previous_credential_keys {
            keys.push((id.clone(), SealingKey::from_base64(key)?));
        }
        Ok(Keyring { keys })
    }

    fn is_development_key(key: &SecretString) -> bool {
        decode(key).is_ok_and(|bytes| bytes == DEVELOPMENT_KEY)
    }
}

fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Validate for SecretsSettings {
    fn validate(&self, problems: &mut Vec<String>) {
        match &self.credential_key {
            None if !self.development => problems.push(
                "secrets.credential_key: required (32 random bytes, base64: `openssl rand -base64 32`); \
                 for a local run, secrets.development = true uses the built-in development key"
                    .into(),
            ),
            Some(key) if SealingKey::from_base64(key).is_err() => {
                problems.push("secrets.credential_key: must be 32 bytes, base64-encoded".into());
            }
            _ => {}
        }
        if !valid_key_id(&self.credential_key_id) {
            problems
                .push("secrets.credential_key_id: 1 to 64 letters, digits, '-', '_' or '.'".into());
        }
        for (id, key) in &self.previous_credential_keys {
            if !valid_key_id(id) || *id == self.credential_key_id {
                problems.push(format!(
                    "secrets.previous_credential_keys.{id}: the id must be 1 to 64 letters, digits, '-', '_' or '.', and not the current key's"
                ));
            }
            if SealingKey::from_base64(key).is_err() {
                problems.push(format!(
                    "secrets.previous_credential_keys.{id}: must be 32 bytes, base64-encoded"
                ));
            }
        }
        if !self.development {
            let public = self
                .credential_key
                .iter()
                .chain(self.previous_credential_keys.values())
                .any(Self::is_development_key);
            if public {
                problems.push(
                    "secrets: the built-in development key is public and refused outside development mode (secrets.development = true)"
                        .into(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(byte: u8) -> SecretString {
        SecretString::from(base64::engine::general_purpose::STANDARD.encode([byte; 32]))
    }

    fn key() -> SealingKey {
        SealingKey::from_base64(&encoded(7)).unwrap()
    }

    fn settings(current: Option<SecretString>, development: bool) -> SecretsSettings {
        SecretsSettings {
            credential_key: current,
            credential_key_id: "k2".into(),
            previous_credential_keys: BTreeMap::new(),
            development,
        }
    }

    fn problems(settings: &SecretsSettings) -> Vec<String> {
        let mut problems = Vec::new();
        settings.validate(&mut problems);
        problems
    }

    #[test]
    fn sealed_credentials_open_only_for_their_tenant() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let sealed = key().seal(a, "s3cret").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"s3cret"));
        assert_eq!(key().open(a, &sealed).unwrap().expose_secret(), "s3cret");
        assert!(matches!(key().open(b, &sealed), Err(SealError::Tampered)));
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(matches!(key().open(a, &altered), Err(SealError::Tampered)));
    }

    #[test]
    fn short_or_malformed_keys_are_refused() {
        assert!(matches!(
            SealingKey::from_base64(&SecretString::from("c2hvcnQ=")),
            Err(SealError::BadKey)
        ));
        assert!(matches!(
            SealingKey::from_base64(&SecretString::from("***")),
            Err(SealError::BadKey)
        ));
    }

    #[test]
    fn a_ring_seals_with_its_current_key_and_opens_with_every_key() {
        let tenant = Uuid::new_v4();
        let old = Keyring::single("k1", SealingKey::from_base64(&encoded(1)).unwrap());
        let (old_id, sealed_old) = old.seal(tenant, "before").unwrap();
        assert_eq!(old_id, "k1");

        let mut rotated = settings(Some(encoded(2)), false);
        rotated
            .previous_credential_keys
            .insert("k1".into(), encoded(1));
        let ring = rotated.keyring().unwrap();
        assert_eq!(ring.ids().collect::<Vec<_>>(), ["k2", "k1"]);
        let (id, sealed_new) = ring.seal(tenant, "after").unwrap();
        assert_eq!(id, "k2");
        assert_eq!(
            ring.open(tenant, Some("k1"), &sealed_old)
                .unwrap()
                .expose_secret(),
            "before"
        );
        assert_eq!(
            ring.open(tenant, Some("k2"), &sealed_new)
                .unwrap()
                .expose_secret(),
            "after"
        );
        // Without an id (sealed before ids were stored) every key is tried.
        assert_eq!(
            ring.open(tenant, None, &sealed_old)
                .unwrap()
                .expose_secret(),
            "before"
        );
        // A wrong or unknown id does not open.
        assert!(ring.open(tenant, Some("k2"), &sealed_old).is_err());
        assert!(ring.open(tenant, Some("k9"), &sealed_old).is_err());
        // The old ring cannot open what the new key sealed.
        assert!(old.open(tenant, None, &sealed_new).is_err());
    }

    #[test]
    fn the_development_key_needs_development_mode() {
        let development =
            SecretString::from(base64::engine::general_purpose::STANDARD.encode(DEVELOPMENT_KEY));
        let refused = problems(&settings(Some(development.clone()), false));
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(refused[0].contains("development key"), "{refused:?}");

        let mut as_previous = settings(Some(encoded(3)), false);
        as_previous
            .previous_credential_keys
            .insert("old".into(), development.clone());
        assert_eq!(problems(&as_previous).len(), 1);

        assert!(problems(&settings(Some(development), true)).is_empty());
        // Development mode without a key uses the built-in one.
        let local = settings(None, true);
        assert!(problems(&local).is_empty());
        let tenant = Uuid::new_v4();
        let (_, sealed) = local.keyring().unwrap().seal(tenant, "x").unwrap();
        assert!(
            SealingKey::from_bytes(DEVELOPMENT_KEY)
                .unwrap()
                .open(tenant, &sealed)
                .is_ok()
        );
    }

    #[test]
    fn a_missing_or_bad_key_is_a_configuration_problem_that_names_no_secret() {
        let missing = problems(&settings(None, false));
        assert!(missing[0].starts_with("secrets.credential_key: required"));
        assert!(matches!(
            settings(None, false).keyring(),
            Err(SealError::Missing)
        ));

        let bad = SecretString::from("bm90LWEta2V5LWF0LWFsbA==");
        let mut both = settings(Some(bad), false);
        both.credential_key_id = "no spaces".into();
        both.previous_credential_keys
            .insert("no spaces".into(), SecretString::from("***"));
        let found = problems(&both);
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found.iter().all(|p| !p.contains("bm90LWEta2V5")));
        assert!(!format!("{both:?}").contains("bm90LWEta2V5"));
    }
}
