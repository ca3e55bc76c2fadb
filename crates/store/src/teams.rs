//! Teams: the tenant's groups in scope, by group object id, with the group's current name and
//! description. The card-writer creates a team when a card first joins it, named from the
//! directory snapshot; the rounds keep its name and description in step with the snapshot
//! ([`follow_groups`]).

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
    /// The group's description, when it has one.
    pub description: Option<String>,
}

/// Makes sure the teams exist, in one statement. A new team (or one stored without a name) is
/// named from the directory snapshot when the snapshot knows its group, with the group's
/// description, else from the name the command knew; a stored name is never replaced: renames
/// come from the snapshot ([`follow_groups`]), so a command emitted before a rename and applied
/// after it cannot bring the old name back. Teams already stored as asked are left alone, so
/// concurrent writers of the same teams do not queue behind each other's row locks. Each
/// `(tenant_id, group_id)` must appear once.
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
        "INSERT INTO teams (tenant_id, group_id, name, description)
         SELECT n.tid, n.gid, coalesce(dg.display_name, n.name), dg.description
           FROM unnest($1::uuid[], $2::text[], $3::text[]) WITH ORDINALITY AS n(tid, gid, name, i)
           LEFT JOIN directory_groups dg
                  ON dg.tenant_id = n.tid AND dg.group_id = n.gid AND dg.present
          WHERE NOT EXISTS (SELECT 1 FROM teams
                             WHERE teams.tenant_id = n.tid AND teams.group_id = n.gid
                               AND (teams.name IS NOT NULL
                                    OR coalesce(dg.display_name, n.name) IS NULL))
          ORDER BY n.i
         ON CONFLICT (tenant_id, group_id) DO UPDATE
            SET name = EXCLUDED.name, description = EXCLUDED.description, updated_at = now()
          WHERE EXCLUDED.name IS NOT NULL AND teams.name IS NULL",
    )
    .bind(&tenant_ids)
    .bind(&group_ids)
    .bind(&names)
    .execute(conn)
    .await?;
    Ok(())
}

/// Copies the name and description of the tenant's groups in the directory snapshot onto their
/// teams, where they differ, and returns the teams renamed or re-described. Set-based over the
/// tenant's teams, so it also heals a team a late command named before the rename. A group the
/// snapshot knows no name of, or that is gone, leaves its team as it is.
pub async fn follow_groups(conn: &mut PgConnection, tenant_id: Uuid) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE teams
            SET name = g.display_name, description = g.description, updated_at = now()
           FROM directory_groups g
          WHERE teams.tenant_id = $1 AND g.tenant_id = teams.tenant_id
            AND g.group_id = teams.group_id AND g.present AND g.display_name IS NOT NULL
            AND (teams.name IS DISTINCT FROM g.display_name
                 OR teams.description IS DISTINCT FROM g.description)",
    )
    .bind(tenant_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Every team of a tenant, by group id.
pub async fn list(executor: impl PgExecutor<'_>, tenant_id: Uuid) -> Result<Vec<Team>, StoreError> {
    Ok(sqlx::query_as::<_, Team>(
        "SELECT tenant_id, group_id, name, description FROM teams WHERE tenant_id = $1 ORDER BY group_id",
    )
    .bind(tenant_id)
    .fetch_all(executor)
    .await?)
}

/// The teams of one card, by group id, with their names and descriptions.
pub async fn of_card(
    executor: impl PgExecutor<'_>,
    tenant_id: Uuid,
    card_id: Uuid,
) -> Result<Vec<Team>, StoreError> {
    Ok(sqlx::query_as::<_, Team>(
        "SELECT t.tenant_id, t.group_id, t.name, t.description
           FROM card_teams ct
           JOIN teams t ON t.tenant_id = ct.tenant_id AND t.group_id = ct.group_id
          WHERE ct.tenant_id = $1 AND ct.card_id = $2
          ORDER BY t.group_id",
    )
    .bind(tenant_id)
    .bind(card_id)
    .fetch_all(executor)
    .await?)
}
