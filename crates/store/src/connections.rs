//! How cardsync signs in to each tenant's Graph, with the credential sealed under a key from
//! configuration ([`crate::sealing`]), so a database dump alone reveals no secret.

use crate::StoreError;
pub use crate::sealing::{Keyring, SealError, SealingKey};
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

/// Stores (or replaces) a tenant's connection, sealing its credential. Connecting again cancels a
/// requested disconnect.
pub async fn put(
    pool: &PgPool,
    keys: &Keyring,
    connection: &Connection,
) -> Result<(), ConnectionError> {
    let (key_id, sealed) =
        keys.seal(connection.tenant_id, connection.credential.expose_secret())?;
    sqlx::query(
        "INSERT INTO tenant_connections (tenant_id, client_id, credential_kind, credential_sealed, credential_key_id)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tenant_id) DO UPDATE SET client_id = EXCLUDED.client_id, credential_kind = EXCLUDED.credential_kind,
             credential_sealed = EXCLUDED.credential_sealed, credential_key_id = EXCLUDED.credential_key_id,
             disconnect_requested_at = NULL, updated_at = now()",
    )
    .bind(connection.tenant_id)
    .bind(&connection.client_id)
    .bind(connection.kind.as_str())
    .bind(sealed)
    .bind(key_id)
    .execute(pool)
    .await
    .map_err(StoreError::from)?;
    Ok(())
}

/// A tenant's connection with its credential opened, `None` when the tenant has none.
pub async fn get(
    pool: &PgPool,
    keys: &Keyring,
    tenant: Uuid,
) -> Result<Option<Connection>, ConnectionError> {
    let row: Option<(String, String, Vec<u8>, Option<String>)> = sqlx::query_as(
        "SELECT client_id, credential_kind, credential_sealed, credential_key_id FROM tenant_connections WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_optional(pool)
    .await
    .map_err(StoreError::from)?;
    let Some((client_id, kind, sealed, key_id)) = row else {
        return Ok(None);
    };
    let kind = CredentialKind::parse(&kind).ok_or(ConnectionError::UnknownKind)?;
    Ok(Some(Connection {
        tenant_id: tenant,
        client_id,
        kind,
        credential: keys.open(tenant, key_id.as_deref(), &sealed)?,
    }))
}

/// Whether `tenant` is to be synced as far as its connection goes: it has one and no disconnect
/// of it was requested (an offboarded tenant's connection waits for the subscription manager in
/// that state).
pub async fn is_usable(executor: impl PgExecutor<'_>, tenant: Uuid) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar::<_, bool>(
        "SELECT disconnect_requested_at IS NULL FROM tenant_connections WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_optional(executor)
    .await?
    .unwrap_or(false))
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

/// What a re-seal did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resealed {
    /// Connections now sealed with the current key that were not before.
    pub resealed: u64,
    /// Connections no key of the ring opens (sealed under a key that was dropped, or altered):
    /// they stay as they are and need their credential put again.
    pub unopenable: Vec<Uuid>,
}

/// Seals every connection not sealed with the current key again with it (the middle step of a
/// key rotation). A connection put meanwhile is left alone: the update applies only while the
/// row still holds what was opened.
pub async fn reseal_all(pool: &PgPool, keys: &Keyring) -> Result<Resealed, ConnectionError> {
    let stale: Vec<(Uuid, Vec<u8>, Option<String>)> = sqlx::query_as(
        "SELECT tenant_id, credential_sealed, credential_key_id FROM tenant_connections
         WHERE credential_key_id IS DISTINCT FROM $1 ORDER BY tenant_id",
    )
    .bind(keys.current_id())
    .fetch_all(pool)
    .await
    .map_err(StoreError::from)?;
    let mut report = Resealed::default();
    for (tenant, sealed, key_id) in stale {
        let Ok(credential) = keys.open(tenant, key_id.as_deref(), &sealed) else {
            report.unopenable.push(tenant);
            continue;
        };
        let (current, resealed) = keys.seal(tenant, credential.expose_secret())?;
        let updated = sqlx::query(
            "UPDATE tenant_connections SET credential_sealed = $3, credential_key_id = $4
             WHERE tenant_id = $1 AND credential_sealed = $2",
        )
        .bind(tenant)
        .bind(&sealed)
        .bind(resealed)
        .bind(current)
        .execute(pool)
        .await
        .map_err(StoreError::from)?;
        report.resealed += updated.rows_affected();
    }
    Ok(report)
}

/// How many connections each key id sealed (`None`: sealed before ids were stored).
pub async fn key_usage(
    executor: impl PgExecutor<'_>,
) -> Result<Vec<(Option<String>, i64)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT credential_key_id, count(*) FROM tenant_connections
         GROUP BY credential_key_id ORDER BY credential_key_id NULLS FIRST",
    )
    .fetch_all(executor)
    .await?)
}
