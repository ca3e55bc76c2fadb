//! The Graph subscription registry: the subscriptions cardsync created, their tenant, resource,
//! clientState (as a SHA-256) and expiry. The webhook trusts a notification only if it matches a
//! row here, or a pending registration (a create in flight, see [`crate::subscription_slots`]) of
//! its tenant with the same clientState.

use crate::StoreError;
use sha2::{Digest, Sha256};
use sqlx::{PgExecutor, PgPool};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use uuid::Uuid;

/// SHA-256 of a clientState, the only form in which it is stored or compared.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientStateHash([u8; 32]);

impl ClientStateHash {
    /// Hashes a clientState as received or generated.
    pub fn of(client_state: &str) -> Self {
        Self(Sha256::digest(client_state.as_bytes()).into())
    }

    /// Constant-time equality, so response timing says nothing about how much of a guess matched.
    pub fn matches(&self, other: &ClientStateHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_slice()
    }
}

impl std::fmt::Debug for ClientStateHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientStateHash(<redacted>)")
    }
}

/// One registered subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Graph's subscription id.
    pub id: Uuid,
    /// The tenant whose directory the subscription watches.
    pub tenant_id: Uuid,
    /// Graph resource path, e.g. `/users`.
    pub resource: String,
    /// SHA-256 of the clientState given to Graph.
    pub client_state: ClientStateHash,
    /// When Graph stops delivering unless renewed.
    pub expires_at: OffsetDateTime,
}

type Row = (Uuid, Uuid, String, Vec<u8>, OffsetDateTime);

fn from_row((id, tenant_id, resource, hash, expires_at): Row) -> Option<Subscription> {
    Some(Subscription {
        id,
        tenant_id,
        resource,
        client_state: ClientStateHash::from_slice(&hash)?,
        expires_at,
    })
}

/// Inserts or replaces a subscription (a renewal or re-creation updates it in place).
pub async fn register(
    executor: impl PgExecutor<'_>,
    subscription: &Subscription,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO subscriptions (subscription_id, tenant_id, resource, client_state_sha256, expires_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (subscription_id) DO UPDATE
            SET tenant_id = EXCLUDED.tenant_id,
                resource = EXCLUDED.resource,
                client_state_sha256 = EXCLUDED.client_state_sha256,
                expires_at = EXCLUDED.expires_at,
                updated_at = now()",
    )
    .bind(subscription.id)
    .bind(subscription.tenant_id)
    .bind(&subscription.resource)
    .bind(subscription.client_state.as_bytes())
    .bind(subscription.expires_at)
    .execute(executor)
    .await?;
    Ok(())
}

/// Removes a subscription; returns whether it existed.
pub async fn remove(executor: impl PgExecutor<'_>, id: Uuid) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM subscriptions WHERE subscription_id = $1")
        .bind(id)
        .execute(executor)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Looks one subscription up by id.
pub async fn find(pool: &PgPool, id: Uuid) -> Result<Option<Subscription>, StoreError> {
    let row: Option<Row> = sqlx::query_as(
        "SELECT subscription_id, tenant_id, resource, client_state_sha256, expires_at
           FROM subscriptions WHERE subscription_id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(from_row))
}

/// A create in flight: the tenant, the resource and the hash of the fresh clientState the manager
/// is about to give Graph, valid until `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRegistration {
    /// The tenant whose subscription is being created.
    pub tenant_id: Uuid,
    /// The resource it will watch.
    pub resource: String,
    /// SHA-256 of its clientState.
    pub client_state: ClientStateHash,
    /// After this, the registration no longer vouches for anything.
    pub until: OffsetDateTime,
}

/// What the registry knows about a notification's subscription id and clientState.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    /// The registered subscription with that id.
    pub registered: Option<Subscription>,
    /// A pending registration of the notification's tenant with that clientState.
    pub pending: Option<PendingRegistration>,
}

type VerificationRow = (bool, Uuid, String, Vec<u8>, OffsetDateTime);

/// Looks up, in one round trip, the subscription `id` and a live pending registration of `tenant`
/// whose clientState hashes to `client_state`.
pub async fn verify(
    pool: &PgPool,
    id: Uuid,
    tenant: Uuid,
    client_state: &ClientStateHash,
) -> Result<Verification, StoreError> {
    let rows: Vec<VerificationRow> = sqlx::query_as(
        "SELECT true, tenant_id, resource, client_state_sha256, expires_at
           FROM subscriptions WHERE subscription_id = $1
         UNION ALL
         (SELECT false, tenant_id, resource, pending_client_state_sha256, pending_until
            FROM subscription_slots
           WHERE tenant_id = $2 AND pending_client_state_sha256 = $3 AND pending_until > now()
           LIMIT 1)",
    )
    .bind(id)
    .bind(tenant)
    .bind(client_state.as_bytes())
    .fetch_all(pool)
    .await?;
    let mut verification = Verification::default();
    for (registered, tenant_id, resource, hash, at) in rows {
        if registered {
            verification.registered = from_row((id, tenant_id, resource, hash, at));
        } else if let Some(client_state) = ClientStateHash::from_slice(&hash) {
            verification.pending = Some(PendingRegistration {
                tenant_id,
                resource,
                client_state,
                until: at,
            });
        }
    }
    Ok(verification)
}

/// Every live pending registration (at most one per tenant and resource).
pub async fn pending(pool: &PgPool) -> Result<Vec<PendingRegistration>, StoreError> {
    let rows: Vec<(Uuid, String, Vec<u8>, OffsetDateTime)> = sqlx::query_as(
        "SELECT tenant_id, resource, pending_client_state_sha256, pending_until
           FROM subscription_slots
          WHERE pending_client_state_sha256 IS NOT NULL AND pending_until > now()",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(tenant_id, resource, hash, until)| {
            Some(PendingRegistration {
                tenant_id,
                resource,
                client_state: ClientStateHash::from_slice(&hash)?,
                until,
            })
        })
        .collect())
}

/// Every registered subscription (bounded by Graph's quota of 50,000 per app).
pub async fn all(pool: &PgPool) -> Result<Vec<Subscription>, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT subscription_id, tenant_id, resource, client_state_sha256, expires_at FROM subscriptions",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().filter_map(from_row).collect())
}

/// Records when the webhook last accepted a notification of each subscription (`(id, at)`, in
/// one statement); a time never moves back, and unknown ids are ignored. Returns the rows updated.
pub async fn note_deliveries(
    executor: impl PgExecutor<'_>,
    deliveries: &[(Uuid, OffsetDateTime)],
) -> Result<u64, StoreError> {
    if deliveries.is_empty() {
        return Ok(0);
    }
    let (ids, times): (Vec<Uuid>, Vec<OffsetDateTime>) = deliveries.iter().copied().unzip();
    let done = sqlx::query(
        "UPDATE subscriptions s
            SET last_notification_at = greatest(s.last_notification_at, d.at)
           FROM unnest($1::uuid[], $2::timestamptz[]) AS d(id, at)
          WHERE s.subscription_id = d.id",
    )
    .bind(ids)
    .bind(times)
    .execute(executor)
    .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_client_states_match_and_different_ones_do_not() {
        assert!(ClientStateHash::of("secret").matches(&ClientStateHash::of("secret")));
        assert!(!ClientStateHash::of("secret").matches(&ClientStateHash::of("secreT")));
        assert!(!ClientStateHash::of("").matches(&ClientStateHash::of(" ")));
    }

    #[test]
    fn the_hash_never_prints() {
        assert_eq!(
            format!("{:?}", ClientStateHash::of("secret")),
            "ClientStateHash(<redacted>)"
        );
    }
}
