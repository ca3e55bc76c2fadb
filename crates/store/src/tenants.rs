//! Tenants: one Entra tenant each, with its field rules and the toggles that change what the
//! card-writer does (invites, admin roles).

use crate::StoreError;
use cardsync_rules::FieldRules;
use sqlx::types::Json;
use sqlx::{FromRow, PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Tenant {
    /// The Entra tenant id.
    #[sqlx(rename = "tenant_id")]
    pub id: Uuid,
    /// A display name for operators.
    pub name: String,
    /// The field rules every merge decision uses.
    #[sqlx(json)]
    pub rules: FieldRules,
    /// Whether new (and newly linked) members get an `invited` card event.
    pub invites_enabled: bool,
    /// Whether directory admin roles become card roles.
    pub admin_roles_enabled: bool,
    /// When the tenant was first stored.
    pub created_at: OffsetDateTime,
    /// When it last changed.
    pub updated_at: OffsetDateTime,
}

/// What an operator (or the admin API) sets on a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantConfig {
    /// The Entra tenant id.
    pub id: Uuid,
    /// A display name for operators.
    pub name: String,
    /// Field rules; validate them before storing ([`FieldRules::validate`]).
    pub rules: FieldRules,
    /// Whether invites are sent.
    pub invites_enabled: bool,
    /// Whether admin roles are applied.
    pub admin_roles_enabled: bool,
}

/// Creates the tenant or replaces its configuration; returns the stored row.
pub async fn put(
    executor: impl PgExecutor<'_>,
    config: &TenantConfig,
) -> Result<Tenant, StoreError> {
    let tenant = sqlx::query_as::<_, Tenant>(
        "INSERT INTO tenants (tenant_id, name, rules, invites_enabled, admin_roles_enabled)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tenant_id) DO UPDATE
            SET name = EXCLUDED.name,
                rules = EXCLUDED.rules,
                invites_enabled = EXCLUDED.invites_enabled,
                admin_roles_enabled = EXCLUDED.admin_roles_enabled,
                updated_at = now()
         RETURNING tenant_id, name, rules, invites_enabled, admin_roles_enabled, created_at, updated_at",
    )
    .bind(config.id)
    .bind(&config.name)
    .bind(Json(&config.rules))
    .bind(config.invites_enabled)
    .bind(config.admin_roles_enabled)
    .fetch_one(executor)
    .await?;
    Ok(tenant)
}

/// The tenant, or `None` when it is unknown.
pub async fn get(executor: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Tenant>, StoreError> {
    Ok(sqlx::query_as::<_, Tenant>(
        "SELECT tenant_id, name, rules, invites_enabled, admin_roles_enabled, created_at, updated_at
         FROM tenants WHERE tenant_id = $1",
    )
    .bind(id)
    .fetch_optional(executor)
    .await?)
}

/// The tenant, its row held against deletion until the transaction ends (`FOR KEY SHARE`, the
/// lock a foreign-key check takes), or `None` when it is unknown. A write that starts this way
/// never meets an offboarding half-way: one in progress is waited for, after which the tenant
/// is gone, and one that starts later waits for the write to commit (and then deletes it).
pub async fn get_for_write(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<Tenant>, StoreError> {
    Ok(sqlx::query_as::<_, Tenant>(
        "SELECT tenant_id, name, rules, invites_enabled, admin_roles_enabled, created_at, updated_at
         FROM tenants WHERE tenant_id = $1 FOR KEY SHARE",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// Every tenant with a Graph connection and when it was created: the tenants schedules apply to.
pub async fn connected(
    executor: impl PgExecutor<'_>,
) -> Result<Vec<(Uuid, OffsetDateTime)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT t.tenant_id, t.created_at
           FROM tenants t JOIN tenant_connections c USING (tenant_id)
          ORDER BY t.tenant_id",
    )
    .fetch_all(executor)
    .await?)
}
