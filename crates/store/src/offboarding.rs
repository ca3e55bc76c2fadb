//! Offboarding: a tenant's rows leave the database in one transaction. What needs the tenant's
//! Graph credential to undo (its Graph subscriptions) is handed to the subscription manager
//! through a requested disconnect: the manager deletes the subscriptions in Graph, their slots
//! and registry rows, then the connection itself (see [`crate::subscription_slots::wanted`] and
//! [`crate::subscription_slots::finish_disconnect`]).

use crate::StoreError;
use sqlx::PgConnection;
use uuid::Uuid;

/// The tables a tenant's rows live in, each with the statement that empties it, in the order offboarding empties them (children before
/// their parents). `tenant_sync_state` comes first: every fenced write of a delta round updates
/// its row, so deleting it waits for a round's write in flight and makes every later one fail
/// as a lost lease instead of writing again.
pub const TENANT_TABLES: &[(&str, &str)] = &[
    (
        "tenant_sync_state",
        "DELETE FROM tenant_sync_state WHERE tenant_id = $1",
    ),
    ("card_teams", "DELETE FROM card_teams WHERE tenant_id = $1"),
    ("audit_log", "DELETE FROM audit_log WHERE tenant_id = $1"),
    ("cards", "DELETE FROM cards WHERE tenant_id = $1"),
    ("teams", "DELETE FROM teams WHERE tenant_id = $1"),
    ("outbox", "DELETE FROM outbox WHERE tenant_id = $1"),
    (
        "directory_users",
        "DELETE FROM directory_users WHERE tenant_id = $1",
    ),
    (
        "directory_groups",
        "DELETE FROM directory_groups WHERE tenant_id = $1",
    ),
    (
        "tenant_scopes",
        "DELETE FROM tenant_scopes WHERE tenant_id = $1",
    ),
    (
        "sync_schedules",
        "DELETE FROM sync_schedules WHERE tenant_id = $1",
    ),
    // A held plan's commands (held_commands) go with it (ON DELETE CASCADE).
    ("held_plans", "DELETE FROM held_plans WHERE tenant_id = $1"),
    (
        "parked_requests",
        "DELETE FROM parked_requests WHERE tenant_id = $1",
    ),
    (
        "tenant_safety",
        "DELETE FROM tenant_safety WHERE tenant_id = $1",
    ),
    // A run's counts, people and failed commands go with it (ON DELETE CASCADE).
    ("sync_runs", "DELETE FROM sync_runs WHERE tenant_id = $1"),
    (
        "live_digests",
        "DELETE FROM live_digests WHERE tenant_id = $1",
    ),
    (
        "tenant_rules_history",
        "DELETE FROM tenant_rules_history WHERE tenant_id = $1",
    ),
    (
        "admin_audit",
        "DELETE FROM admin_audit WHERE tenant_id = $1",
    ),
    ("tenants", "DELETE FROM tenants WHERE tenant_id = $1"),
];

/// The tables the subscription manager empties after an offboarding (it needs the connection
/// to delete the subscriptions in Graph first).
pub const LEFT_TO_THE_MANAGER: &[&str] =
    &["subscription_slots", "subscriptions", "tenant_connections"];

/// What an offboarding deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offboarded {
    /// Rows deleted, per table (in [`TENANT_TABLES`] order).
    pub rows: Vec<(&'static str, u64)>,
    /// Whether the tenant had a connection: the manager then deletes its subscriptions in Graph
    /// and the connection on its next pass.
    pub connection_pending: bool,
    /// Registry rows of subscriptions no slot holds (registered by hand), forgotten at once, so
    /// the webhook drops their notifications; Graph ends them at their expiry.
    pub unslotted_subscriptions: u64,
}

/// Deletes every row of `tenant` in `tx`, except the connection, subscription slots and their
/// registry rows, whose disconnect it requests. The tenant's row is locked first, so a
/// concurrent offboarding, patch or card batch of the tenant waits. `None` when the tenant does
/// not exist. The caller records the offboarding itself in `admin_audit` after this (the
/// tenant's earlier admin audit rows are deleted with everything else).
pub async fn offboard(
    tx: &mut PgConnection,
    tenant: Uuid,
) -> Result<Option<Offboarded>, StoreError> {
    let exists: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM tenants WHERE tenant_id = $1 FOR UPDATE")
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?;
    if exists.is_none() {
        return Ok(None);
    }
    let connection_pending =
        crate::subscription_slots::request_disconnect(&mut *tx, tenant).await?;
    let mut rows = Vec::with_capacity(TENANT_TABLES.len());
    for (table, delete) in TENANT_TABLES {
        let deleted = sqlx::query(*delete).bind(tenant).execute(&mut *tx).await?;
        rows.push((*table, deleted.rows_affected()));
    }
    let unslotted = sqlx::query(
        "DELETE FROM subscriptions r
          WHERE r.tenant_id = $1
            AND NOT EXISTS (SELECT 1 FROM subscription_slots s
                             WHERE s.tenant_id = $1 AND s.subscription_id = r.subscription_id)",
    )
    .bind(tenant)
    .execute(&mut *tx)
    .await?;
    Ok(Some(Offboarded {
        rows,
        connection_pending,
        unslotted_subscriptions: unslotted.rows_affected(),
    }))
}
