//! How cardsync signs in to each tenant's Graph, with the credential sealed (AES-256-GCM) under
//! a key from configuration, so a database dump alone reveals no secret.

use crate::StoreError;
use base64::Engine as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::{ExposeSecret, SecretString};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// The kind of credential a connection holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// A client secret.
    Secret,
    /// A certificate and its private key (PEM, concatenated).
    Certificate,
    /// A federated token file path (workload identity).
    Federated,
}

impl CredentialKind {
    fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Secret => "secret",
            CredentialKind::Certificate => "certificate",
            CredentialKind::Federated => "federated",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "secret" => Some(CredentialKind::Secret),
            "certificate" => Some(CredentialKind::Certificate),
            "federated" => Some(CredentialKind::Federated),
            _ => None,
        }
    }
}

/// A tenant's connection with the credential unsealed.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The tenant.
    pub tenant_id: Uuid,
    /// The app (client) id.
    pub client_id: String,
    /// The credential kind.
    pub kind: CredentialKind,
    /// The credential itself (secret, PEM bundle, or token file path).
    pub credential: SecretString,
}

/// Why a credential could not be sealed or unsealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The sealing key is not 32 bytes of base64.
    #[error("the credential sealing key must be 32 bytes, base64-encoded")]
    BadKey,
    /// The ciphertext was altered, or sealed under another key.
    #[error("the sealed credential does not open with this key")]
    Tampered,
}

/// The AES-256-GCM key credentials are sealed with.
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
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(key.expose_secret().trim())
            .map_err(|_| SealError::BadKey)?;
        let unbound = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| SealError::BadKey)?;
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

/// Stores (or replaces) a tenant's connection, sealing its credential. Connecting again cancels a
/// requested disconnect.
pub async fn put(
    pool: &PgPool,
    key: &SealingKey,
    connection: &Connection,
) -> Result<(), ConnectionError> {
    let sealed = key.seal(connection.tenant_id, connection.credential.expose_secret())?;
    sqlx::query(
        "INSERT INTO tenant_connections (tenant_id, client_id, credential_kind, credential_sealed) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id) DO UPDATE SET client_id = EXCLUDED.client_id, credential_kind = EXCLUDED.credential_kind,
             credential_sealed = EXCLUDED.credential_sealed, disconnect_requested_at = NULL, updated_at = now()",
    )
    .bind(connection.tenant_id)
    .bind(&connection.client_id)
    .bind(connection.kind.as_str())
    .bind(sealed)
    .execute(pool)
    .await
    .map_err(StoreError::from)?;
    Ok(())
}

/// A tenant's connection with its credential opened, `None` when the tenant has none.
pub async fn get(
    pool: &PgPool,
    key: &SealingKey,
    tenant: Uuid,
) -> Result<Option<Connection>, ConnectionError> {
    let row: Option<(String, String, Vec<u8>)> =
        sqlx::query_as("SELECT client_id, credential_kind, credential_sealed FROM tenant_connections WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_optional(pool)
            .await
            .map_err(StoreError::from)?;
    let Some((client_id, kind, sealed)) = row else {
        return Ok(None);
    };
    let kind = CredentialKind::parse(&kind).ok_or(ConnectionError::UnknownKind)?;
    Ok(Some(Connection {
        tenant_id: tenant,
        client_id,
        kind,
        credential: key.open(tenant, &sealed)?,
    }))
}

/// Removes a tenant's connection, so no round (and no safety poll) runs for it any more; its
/// cards and directory state stay. Returns whether there was one.
pub async fn remove(executor: impl PgExecutor<'_>, tenant: Uuid) -> Result<bool, StoreError> {
    let removed = sqlx::query("DELETE FROM tenant_connections WHERE tenant_id = $1")
        .bind(tenant)
        .execute(executor)
        .await?;
    Ok(removed.rows_affected() > 0)
}

/// What went wrong reading or writing a connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Sealing or unsealing failed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The stored kind is not one this version knows.
    #[error("unknown credential kind")]
    UnknownKind,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SealingKey {
        SealingKey::from_base64(&SecretString::from(
            base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
        ))
        .unwrap()
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
}
