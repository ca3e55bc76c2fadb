//! Teams: the tenant's groups in scope, by group object id, with the group's current name.

use crate::StoreError;
use sqlx::{FromRow, PgConnection, PgExecutor};
use uuid::Uuid;

/// One team.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Team {
    /// The tenant.
    pub tenant_id: Uuid,
    /// The Entra group object id.
    pub group_id: String,
    /// The group's display name, when known.
    pub name: Option<String>,
}

/// Makes sure the team exists; a known `name` replaces the stored one (renames follow the
/// group), an unknown one (`None`) keeps it. Returns whether anything changed.
pub async fn upsert(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    group_id: &str,
    name: Option<&str>,
) -> Result<bool, StoreError> {
    let changed = sqlx::query(
        "INSERT INTO teams (tenant_id, group_id, name) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id, group_id) DO UPDATE
            SET name = EXCLUDED.name, updated_at = now()
          WHERE EXCLUDED.name IS NOT NULL AND teams.name IS DISTINCT FROM EXCLUDED.name",
    )
    .bind(tenant_id)
    .bind(group_id)
    .bind(name)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(changed > 0)
}

/// Every team of a tenant, by group id.
pub async fn list(executor: impl PgExecutor<'_>, tenant_id: Uuid) -> Result<Vec<Team>, StoreError> {
    Ok(sqlx::query_as::<_, Team>(
        "SELECT tenant_id, group_id, name FROM teams WHERE tenant_id = $1 ORDER BY group_id",
    )
    .bind(tenant_id)
    .fetch_all(executor)
    .await?)
}
