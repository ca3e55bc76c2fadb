//! The snapshot's groups: names and descriptions (teams follow them) and direct members.

use crate::StoreError;
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use std::collections::HashMap;
use uuid::Uuid;

/// One group of the snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRow {
    /// Entra object id.
    pub group_id: String,
    /// Its name (teams follow renames).
    pub display_name: Option<String>,
    /// Its description (kept with the team).
    pub description: Option<String>,
    /// Direct members by id, with their kind (`user`, `group`, `other`).
    pub members: HashMap<String, String>,
    /// Still exists.
    pub present: bool,
}

/// Every group of a tenant.
pub async fn groups(pool: &PgPool, tenant: Uuid) -> Result<Vec<GroupRow>, StoreError> {
    /// `group_id, display_name, description, members, present`.
    type Stored = (String, Option<String>, Option<String>, Value, bool);
    let rows: Vec<Stored> =
        sqlx::query_as("SELECT group_id, display_name, description, members, present FROM directory_groups WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(
            |(group_id, display_name, description, members, present)| GroupRow {
                group_id,
                display_name,
                description,
                members: serde_json::from_value(members).unwrap_or_default(),
                present,
            },
        )
        .collect())
}

/// Stores groups as they are now.
pub async fn save_groups(
    tx: &mut Transaction<'_, Postgres>,
    tenant: Uuid,
    rows: &[GroupRow],
) -> Result<(), StoreError> {
    for row in rows {
        sqlx::query(
            "INSERT INTO directory_groups (tenant_id, group_id, display_name, description, members, present) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (tenant_id, group_id) DO UPDATE SET
                 display_name = EXCLUDED.display_name, description = EXCLUDED.description,
                 members = EXCLUDED.members, present = EXCLUDED.present",
        )
        .bind(tenant)
        .bind(&row.group_id)
        .bind(&row.display_name)
        .bind(&row.description)
        .bind(serde_json::to_value(&row.members).unwrap_or_default())
        .bind(row.present)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
