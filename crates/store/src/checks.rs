//! When each tenant's photo and admin-role checks last ran: Graph announces neither a photo
//! change nor a role assignment, so both are checked on a cadence of their own per tenant,
//! whatever the tenant's notifications do (a busy tenant gets them in its notification rounds,
//! an idle one in a round the safety poll starts).

use crate::StoreError;
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

/// Which checks a tenant is due for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DueChecks {
    /// Its budgeted photo check (never run, or last run at least the photo interval ago).
    pub photos: bool,
    /// Its admin-role check (likewise, with the roles interval).
    pub roles: bool,
}

/// Which of `tenant`'s checks are due, given how often each runs.
pub async fn due(
    pool: &PgPool,
    tenant: Uuid,
    photos_every: Duration,
    roles_every: Duration,
) -> Result<DueChecks, StoreError> {
    let row: Option<(bool, bool)> = sqlx::query_as(
        "SELECT photos_checked_at IS NULL OR photos_checked_at <= now() - make_interval(secs => $2),
                roles_checked_at IS NULL OR roles_checked_at <= now() - make_interval(secs => $3)
           FROM tenant_sync_state WHERE tenant_id = $1",
    )
    .bind(tenant)
    .bind(photos_every.as_secs_f64())
    .bind(roles_every.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    let (photos, roles) = row.unwrap_or((true, true));
    Ok(DueChecks { photos, roles })
}

/// Notes that `tenant`'s photo check ran now.
pub async fn record_photos_checked(pool: &PgPool, tenant: Uuid) -> Result<(), StoreError> {
    sqlx::query("UPDATE tenant_sync_state SET photos_checked_at = now() WHERE tenant_id = $1")
        .bind(tenant)
        .execute(pool)
        .await?;
    Ok(())
}

/// Notes that `tenant`'s admin-role check ran now.
pub async fn record_roles_checked(pool: &PgPool, tenant: Uuid) -> Result<(), StoreError> {
    sqlx::query("UPDATE tenant_sync_state SET roles_checked_at = now() WHERE tenant_id = $1")
        .bind(tenant)
        .execute(pool)
        .await?;
    Ok(())
}

/// Connected, not disconnected tenants with a check due and no round (not even a failed one)
/// for the check's interval: a busy tenant's own rounds run its checks, so only the others need
/// a round started for them, and a failing tenant is tried once an interval, not every tick.
/// The role check counts only where the tenant maps admin roles.
pub async fn tenants_due(
    pool: &PgPool,
    photos_every: Duration,
    roles_every: Duration,
) -> Result<Vec<Uuid>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT c.tenant_id FROM tenant_connections c
           JOIN tenant_sync_state s ON s.tenant_id = c.tenant_id
           LEFT JOIN tenants t ON t.tenant_id = c.tenant_id
          WHERE t.disconnected_at IS NULL
            AND s.last_round_at IS NOT NULL
            AND ((s.last_round_at <= now() - make_interval(secs => $1)
                  AND (s.photos_checked_at IS NULL
                       OR s.photos_checked_at <= now() - make_interval(secs => $1)))
              OR (COALESCE(t.admin_roles_enabled, false)
                  AND s.last_round_at <= now() - make_interval(secs => $2)
                  AND (s.roles_checked_at IS NULL
                       OR s.roles_checked_at <= now() - make_interval(secs => $2))))",
    )
    .bind(photos_every.as_secs_f64())
    .bind(roles_every.as_secs_f64())
    .fetch_all(pool)
    .await?)
}
