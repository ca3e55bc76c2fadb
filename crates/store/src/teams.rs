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

/// Makes sure the teams exist, in one statement; a known name replaces the stored one (renames
/// follow the group), an unknown one (`None`) keeps it. Teams already stored as asked are left
/// alone, so concurrent writers of the same teams do not queue behind each other's row locks.
/// Each `(tenant_id, group_id)` must appear once.
pub async fn upsert_all(
    conn: &mut PgConnection,
    teams: &[(Uuid, &str, Option<&str>)],
) -> Result<(), StoreError> {
    if teams.is_empty() {
        return Ok(());
    }
    let mut sorted = teams.to_vec();
    // One lock order for every writer.
    sorted.sort_unstable();
    let tenant_ids: Vec<Uuid> = sorted.iter().map(|team| team.0).collect();
    let group_ids: Vec<&str> = sorted.iter().map(|team| team.1).collect();
    let names: Vec<Option<&str>> = sorted.iter().map(|team| team.2).collect();
    sqlx::query(
        "INSERT INTO teams (tenant_id, group_id, name)
         SELECT n.t, n.g, n.name
           FROM unnest($1::uuid[], $2::text[], $3::text[]) WITH ORDINALITY AS n(t, g, name, i)
          WHERE NOT EXISTS (SELECT 1 FROM teams
                             WHERE teams.tenant_id = n.t AND teams.group_id = n.g
                               AND (n.name IS NULL OR teams.name IS NOT DISTINCT FROM n.name))
          ORDER BY n.i
         ON CONFLICT (tenant_id, group_id) DO UPDATE
            SET name = EXCLUDED.name, updated_at = now()
          WHERE EXCLUDED.name IS NOT NULL AND teams.name IS DISTINCT FROM EXCLUDED.name",
    )
    .bind(&tenant_ids)
    .bind(&group_ids)
    .bind(&names)
    .execute(conn)
    .await?;
    Ok(())
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
