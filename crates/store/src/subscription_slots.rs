//! The subscription manager's registry: per tenant, one slot per watched resource, with the state
//! of its Graph subscription, its expiry, the pending registration of a create in flight and the
//! last error. Timestamps come from the caller's clock (the manager's is injectable), except the
//! webhook's check that a pending registration is still live, which reads the database's.

use crate::StoreError;
use crate::subscriptions::{self, ClientStateHash, Subscription};
use sqlx::{PgExecutor, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

/// Where a slot stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlotState {
    /// A create was sent (or is about to be); its clientState is pending.
    Creating,
    /// Graph holds a live subscription, registered for the webhook.
    Active,
    /// The last create failed; it is retried at `next_attempt_at`.
    Retrying,
    /// Graph refused the create because the app's subscriptions in the tenant reached the quota.
    QuotaExceeded,
}

impl SlotState {
    /// Every state, for metrics that pre-create their label values.
    pub const ALL: [SlotState; 4] = [
        SlotState::Creating,
        SlotState::Active,
        SlotState::Retrying,
        SlotState::QuotaExceeded,
    ];

    /// The stored name (and metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            SlotState::Creating => "creating",
            SlotState::Active => "active",
            SlotState::Retrying => "retrying",
            SlotState::QuotaExceeded => "quota_exceeded",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        SlotState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// One tenant's subscription to one resource, as the manager sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The tenant.
    pub tenant_id: Uuid,
    /// The watched resource (`/users`, `/groups`).
    pub resource: String,
    /// Where it stands.
    pub state: SlotState,
    /// The live subscription, once created.
    pub subscription_id: Option<Uuid>,
    /// When Graph stops delivering unless renewed.
    pub expires_at: Option<OffsetDateTime>,
    /// Consecutive failures of the current operation.
    pub failures: i32,
    /// When the manager next acts on it unasked.
    pub next_attempt_at: Option<OffsetDateTime>,
    /// The last error, for operators.
    pub last_error: Option<String>,
    /// When that error happened.
    pub last_error_at: Option<OffsetDateTime>,
    /// The last successful renewal (or creation).
    pub renewed_at: Option<OffsetDateTime>,
    /// The last reauthorization.
    pub reauthorized_at: Option<OffsetDateTime>,
    /// Until when a create in flight vouches for notifications (while `creating`).
    pub pending_until: Option<OffsetDateTime>,
    /// An operator asked for a new subscription in place of this one ([`request_recreate`]).
    pub recreate_requested_at: Option<OffsetDateTime>,
}

type Row = (
    Uuid,
    String,
    String,
    Option<Uuid>,
    Option<OffsetDateTime>,
    i32,
    Option<OffsetDateTime>,
    Option<String>,
    Option<OffsetDateTime>,
    Option<OffsetDateTime>,
    Option<OffsetDateTime>,
    Option<OffsetDateTime>,
    Option<OffsetDateTime>,
);

/// `SELECT <every column> FROM subscription_slots <tail>`, as one static statement.
macro_rules! select_slots {
    ($tail:literal) => {
        concat!(
            "SELECT tenant_id, resource, state, subscription_id, expires_at, failures, ",
            "next_attempt_at, last_error, last_error_at, renewed_at, reauthorized_at, pending_until, ",
            "recreate_requested_at ",
            "FROM subscription_slots ",
            $tail
        )
    };
}

fn from_row(row: Row) -> Option<Slot> {
    let (tenant_id, resource, state, subscription_id, expires_at, failures, next, error, error_at) = (
        row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8,
    );
    Some(Slot {
        tenant_id,
        resource,
        state: SlotState::parse(&state)?,
        subscription_id,
        expires_at,
        failures,
        next_attempt_at: next,
        last_error: error,
        last_error_at: error_at,
        renewed_at: row.9,
        reauthorized_at: row.10,
        pending_until: row.11,
        recreate_requested_at: row.12,
    })
}

/// Claims the slot for a create about to be sent: the slot is `creating` and the clientState's
/// hash is a pending registration until `pending_until`, so the webhook can verify a notification
/// that arrives before Graph's 201 does. Committed before Graph is asked. Only a new slot, one
/// whose retry is due, or one whose create was abandoned (its pending registration expired at
/// `now`) can be claimed; otherwise this returns false and changes nothing, so two replicas never
/// create the same subscription twice, whatever snapshot each decided on.
pub async fn begin_create(
    pool: &PgPool,
    tenant: Uuid,
    resource: &str,
    client_state: &ClientStateHash,
    pending_until: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let claimed = sqlx::query(
        "INSERT INTO subscription_slots
            (tenant_id, resource, state, pending_client_state_sha256, pending_until, created_at, updated_at)
         VALUES ($1, $2, 'creating', $3, $4, $5, $5)
         ON CONFLICT (tenant_id, resource) DO UPDATE
            SET state = 'creating',
                pending_client_state_sha256 = EXCLUDED.pending_client_state_sha256,
                pending_until = EXCLUDED.pending_until,
                updated_at = EXCLUDED.updated_at
          WHERE (subscription_slots.state IN ('retrying', 'quota_exceeded')
                 AND (subscription_slots.next_attempt_at IS NULL
                      OR subscription_slots.next_attempt_at <= EXCLUDED.updated_at))
             OR (subscription_slots.state = 'creating'
                 AND subscription_slots.pending_until <= EXCLUDED.updated_at)",
    )
    .bind(tenant)
    .bind(resource)
    .bind(client_state.as_bytes())
    .bind(pending_until)
    .bind(now)
    .execute(pool)
    .await?
    .rows_affected()
        > 0;
    Ok(claimed)
}

/// Graph created `subscription`: registers it for the webhook, makes the slot `active` and ends
/// its pending registration, in one transaction. A subscription the slot held before (recreated
/// after a 404 or `subscriptionRemoved`) is unregistered; its id is returned.
pub async fn activate(
    pool: &PgPool,
    subscription: &Subscription,
    renew_at: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<Option<Uuid>, StoreError> {
    let mut tx = pool.begin().await?;
    let previous: Option<Option<Uuid>> = sqlx::query_scalar(
        "SELECT subscription_id FROM subscription_slots
          WHERE tenant_id = $1 AND resource = $2 FOR UPDATE",
    )
    .bind(subscription.tenant_id)
    .bind(&subscription.resource)
    .fetch_optional(&mut *tx)
    .await?;
    let replaced = previous.flatten().filter(|id| *id != subscription.id);
    if let Some(old) = replaced {
        subscriptions::remove(&mut *tx, old).await?;
    }
    subscriptions::register(&mut *tx, subscription).await?;
    sqlx::query(
        "INSERT INTO subscription_slots
            (tenant_id, resource, state, subscription_id, expires_at, failures, next_attempt_at,
             renewed_at, created_at, updated_at)
         VALUES ($1, $2, 'active', $3, $4, 0, $5, $6, $6, $6)
         ON CONFLICT (tenant_id, resource) DO UPDATE
            SET state = 'active', subscription_id = EXCLUDED.subscription_id,
                expires_at = EXCLUDED.expires_at, failures = 0,
                next_attempt_at = EXCLUDED.next_attempt_at, renewed_at = EXCLUDED.renewed_at,
                pending_client_state_sha256 = NULL, pending_until = NULL,
                recreate_requested_at = NULL, updated_at = EXCLUDED.updated_at",
    )
    .bind(subscription.tenant_id)
    .bind(&subscription.resource)
    .bind(subscription.id)
    .bind(subscription.expires_at)
    .bind(renew_at)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(replaced)
}

/// A renewal succeeded: the new expiry for the webhook and the slot, the next renewal's time.
pub async fn renewed(
    pool: &PgPool,
    tenant: Uuid,
    resource: &str,
    subscription_id: Uuid,
    expires_at: OffsetDateTime,
    renew_at: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE subscriptions SET expires_at = $2, updated_at = now() WHERE subscription_id = $1",
    )
    .bind(subscription_id)
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE subscription_slots
            SET state = 'active', expires_at = $3, failures = 0, next_attempt_at = $4,
                renewed_at = $5, updated_at = $5
          WHERE tenant_id = $1 AND resource = $2",
    )
    .bind(tenant)
    .bind(resource)
    .bind(expires_at)
    .bind(renew_at)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A reauthorization succeeded.
pub async fn reauthorized(
    pool: &PgPool,
    tenant: Uuid,
    resource: &str,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE subscription_slots SET reauthorized_at = $3, updated_at = $3
          WHERE tenant_id = $1 AND resource = $2",
    )
    .bind(tenant)
    .bind(resource)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// An operation failed: the slot moves to `state`, counts the failure, keeps the error for
/// operators and is retried at `next_attempt_at`. Returns the consecutive failures so far.
pub async fn failed(
    pool: &PgPool,
    tenant: Uuid,
    resource: &str,
    state: SlotState,
    error: &str,
    next_attempt_at: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<i32, StoreError> {
    let error: String = error.chars().take(2048).collect();
    let failures: i32 = sqlx::query_scalar(
        "INSERT INTO subscription_slots
            (tenant_id, resource, state, failures, next_attempt_at, last_error, last_error_at,
             created_at, updated_at)
         VALUES ($1, $2, $3, 1, $4, $5, $6, $6, $6)
         ON CONFLICT (tenant_id, resource) DO UPDATE
            SET state = EXCLUDED.state, failures = subscription_slots.failures + 1,
                next_attempt_at = EXCLUDED.next_attempt_at, last_error = EXCLUDED.last_error,
                last_error_at = EXCLUDED.last_error_at, updated_at = EXCLUDED.updated_at
         RETURNING failures",
    )
    .bind(tenant)
    .bind(resource)
    .bind(state.as_str())
    .bind(next_attempt_at)
    .bind(&error)
    .bind(now)
    .fetch_one(pool)
    .await?;
    Ok(failures)
}

/// The slot's subscription `gone` no longer exists in Graph (404 on renewal, `subscriptionRemoved`):
/// it is unregistered at once and the slot is due for a create now. Returns false (and changes
/// nothing) when the slot already moved on to another subscription.
pub async fn lost(
    pool: &PgPool,
    tenant: Uuid,
    resource: &str,
    gone: Uuid,
    why: &str,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let updated = sqlx::query(
        "UPDATE subscription_slots
            SET state = 'retrying', subscription_id = NULL, expires_at = NULL, next_attempt_at = $4,
                last_error = $5, last_error_at = $4, recreate_requested_at = NULL, updated_at = $4
          WHERE tenant_id = $1 AND resource = $2 AND subscription_id = $3",
    )
    .bind(tenant)
    .bind(resource)
    .bind(gone)
    .bind(now)
    .bind(why)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        > 0;
    if updated {
        subscriptions::remove(&mut *tx, gone).await?;
    }
    tx.commit().await?;
    Ok(updated)
}

/// One slot.
pub async fn get(
    executor: impl PgExecutor<'_>,
    tenant: Uuid,
    resource: &str,
) -> Result<Option<Slot>, StoreError> {
    let row: Option<Row> = sqlx::query_as(select_slots!("WHERE tenant_id = $1 AND resource = $2"))
        .bind(tenant)
        .bind(resource)
        .fetch_optional(executor)
        .await?;
    Ok(row.and_then(from_row))
}

/// The slot holding a subscription.
pub async fn by_subscription(pool: &PgPool, id: Uuid) -> Result<Option<Slot>, StoreError> {
    let row: Option<Row> = sqlx::query_as(select_slots!("WHERE subscription_id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(row.and_then(from_row))
}

/// A tenant's slots, by resource.
pub async fn for_tenant(pool: &PgPool, tenant: Uuid) -> Result<Vec<Slot>, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(select_slots!("WHERE tenant_id = $1 ORDER BY resource"))
        .bind(tenant)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().filter_map(from_row).collect())
}

/// Every slot (two per tenant at most; bounded by Graph's 50,000 subscriptions per app).
pub async fn all(pool: &PgPool) -> Result<Vec<Slot>, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(select_slots!("ORDER BY tenant_id, resource"))
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().filter_map(from_row).collect())
}

/// Deletes a slot and unregisters its subscription; returns the subscription it held.
pub async fn remove(
    pool: &PgPool,
    tenant: Uuid,
    resource: &str,
) -> Result<Option<Uuid>, StoreError> {
    let mut tx = pool.begin().await?;
    let held: Option<Option<Uuid>> = sqlx::query_scalar(
        "DELETE FROM subscription_slots WHERE tenant_id = $1 AND resource = $2
         RETURNING subscription_id",
    )
    .bind(tenant)
    .bind(resource)
    .fetch_optional(&mut *tx)
    .await?;
    let held = held.flatten();
    if let Some(id) = held {
        subscriptions::remove(&mut *tx, id).await?;
    }
    tx.commit().await?;
    Ok(held)
}

/// A tenant cardsync should keep subscribed: it has a Graph connection; `groups` when its scope
/// names groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    /// The tenant.
    pub tenant_id: Uuid,
    /// Scoped to groups, so `/groups` is watched too.
    pub groups: bool,
}

/// Every connected tenant (whose disconnect was not requested) and whether it is scoped to groups.
pub async fn wanted(pool: &PgPool) -> Result<Vec<Wanted>, StoreError> {
    let rows: Vec<(Uuid, bool)> = sqlx::query_as(
        "SELECT c.tenant_id, COALESCE(cardinality(s.group_ids), 0) > 0
           FROM tenant_connections c LEFT JOIN tenant_scopes s USING (tenant_id)
                LEFT JOIN tenants t USING (tenant_id)
          WHERE c.disconnect_requested_at IS NULL AND t.disconnected_at IS NULL
          ORDER BY c.tenant_id",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(tenant_id, groups)| Wanted { tenant_id, groups })
        .collect())
}

/// Asks for a tenant to be disconnected: the subscription manager deletes its Graph
/// subscriptions while the credential is still there, then removes the connection. Returns
/// whether the tenant had a connection.
pub async fn request_disconnect(
    executor: impl PgExecutor<'_>,
    tenant: Uuid,
) -> Result<bool, StoreError> {
    let marked = sqlx::query(
        "UPDATE tenant_connections SET disconnect_requested_at = COALESCE(disconnect_requested_at, now())
          WHERE tenant_id = $1",
    )
    .bind(tenant)
    .execute(executor)
    .await?;
    Ok(marked.rows_affected() > 0)
}

/// Completes a requested disconnect: removes the connection, unless the tenant connected again
/// meanwhile. Returns whether it was removed.
pub async fn finish_disconnect(pool: &PgPool, tenant: Uuid) -> Result<bool, StoreError> {
    let removed = sqlx::query(
        "DELETE FROM tenant_connections WHERE tenant_id = $1 AND disconnect_requested_at IS NOT NULL",
    )
    .bind(tenant)
    .execute(pool)
    .await?;
    Ok(removed.rows_affected() > 0)
}

/// Tenants whose disconnect was requested and whose connection is still there.
pub async fn disconnecting(pool: &PgPool) -> Result<Vec<Uuid>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT tenant_id FROM tenant_connections WHERE disconnect_requested_at IS NOT NULL
          ORDER BY tenant_id",
    )
    .fetch_all(pool)
    .await?)
}

/// Asks the subscription manager for a new subscription in place of the slot's current one (an
/// operator's "recreate"): on its next pass the manager unregisters the old one, creates a new
/// one and requests a catch-up round. False when the tenant has no such slot.
pub async fn request_recreate(
    executor: impl PgExecutor<'_>,
    tenant: Uuid,
    resource: &str,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE subscription_slots
            SET recreate_requested_at = $3, next_attempt_at = $3, updated_at = $3
          WHERE tenant_id = $1 AND resource = $2",
    )
    .bind(tenant)
    .bind(resource)
    .bind(now)
    .execute(executor)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// One of a tenant's subscriptions as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Overview {
    /// The watched resource.
    pub resource: String,
    /// The slot's state, or `registered` for a subscription registered by hand (no slot).
    pub state: String,
    /// Graph's subscription id, once there is one.
    pub subscription_id: Option<Uuid>,
    /// When Graph stops delivering unless renewed.
    pub expires_at: Option<OffsetDateTime>,
    /// When the webhook last accepted one of its notifications (to within a registry refresh).
    pub last_notification_at: Option<OffsetDateTime>,
    /// Consecutive failures of the current operation.
    pub failures: i32,
    /// When the manager next acts on it unasked.
    pub next_attempt_at: Option<OffsetDateTime>,
    /// The last error and when it happened.
    pub last_error: Option<String>,
    /// When the last error happened.
    pub last_error_at: Option<OffsetDateTime>,
    /// The last successful renewal (or creation).
    pub renewed_at: Option<OffsetDateTime>,
    /// A recreate asked for and not yet carried out.
    pub recreate_requested_at: Option<OffsetDateTime>,
}

/// A tenant's subscriptions: every slot with its live subscription, and subscriptions registered
/// by hand that no slot holds.
pub async fn overview(
    executor: impl PgExecutor<'_>,
    tenant: Uuid,
) -> Result<Vec<Overview>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT coalesce(sl.resource, s.resource) AS resource,
                coalesce(sl.state, 'registered') AS state,
                coalesce(sl.subscription_id, s.subscription_id) AS subscription_id,
                coalesce(sl.expires_at, s.expires_at) AS expires_at,
                s.last_notification_at, coalesce(sl.failures, 0) AS failures,
                sl.next_attempt_at, sl.last_error, sl.last_error_at, sl.renewed_at,
                sl.recreate_requested_at
           FROM (SELECT * FROM subscription_slots WHERE tenant_id = $1) sl
           FULL JOIN (SELECT * FROM subscriptions WHERE tenant_id = $1) s
             ON s.subscription_id = sl.subscription_id
          ORDER BY 1, 3",
    )
    .bind(tenant)
    .fetch_all(executor)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_stored_names() {
        for state in SlotState::ALL {
            assert_eq!(SlotState::parse(state.as_str()), Some(state));
        }
        assert_eq!(SlotState::parse("expired"), None);
    }
}
