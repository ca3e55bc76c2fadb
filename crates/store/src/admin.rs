//! What the admin API reads and changes beyond the shared modules: the tenant list and its
//! flags (merge updates, disconnect), versioned field rules with their history, and the admin
//! audit log (migration 0040).

use crate::StoreError;
use cardsync_rules::FieldRules;
use sqlx::types::Json;
use sqlx::{FromRow, PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

/// A tenant as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct TenantSummary {
    /// The Entra tenant id.
    pub tenant_id: Uuid,
    /// Display name.
    pub name: String,
    /// Whether invites are sent.
    pub invites_enabled: bool,
    /// Whether admin roles are applied.
    pub admin_roles_enabled: bool,
    /// The version of the rules in force.
    pub rules_version: i64,
    /// Whether a Graph connection is stored.
    pub has_connection: bool,
    /// When it was disconnected (`None`: connected).
    pub disconnected_at: Option<OffsetDateTime>,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it last changed.
    pub updated_at: OffsetDateTime,
}

/// The columns of a [`TenantSummary`], as a literal so statements stay literal SQL.
macro_rules! summary_columns {
    () => {
        "t.tenant_id, t.name, t.invites_enabled, t.admin_roles_enabled, t.rules_version,
         EXISTS (SELECT 1 FROM tenant_connections c WHERE c.tenant_id = t.tenant_id) AS has_connection,
         t.disconnected_at, t.created_at, t.updated_at"
    };
}

/// One tenant, or `None`.
pub async fn tenant(
    executor: impl PgExecutor<'_>,
    tenant_id: Uuid,
) -> Result<Option<TenantSummary>, StoreError> {
    Ok(sqlx::query_as::<_, TenantSummary>(concat!(
        "SELECT ",
        summary_columns!(),
        " FROM tenants t WHERE t.tenant_id = $1"
    ))
    .bind(tenant_id)
    .fetch_optional(executor)
    .await?)
}

/// Tenants ordered by id, after `after`, at most `limit`, only those in `only` when given.
pub async fn tenants(
    executor: impl PgExecutor<'_>,
    only: Option<&[Uuid]>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<TenantSummary>, StoreError> {
    Ok(sqlx::query_as::<_, TenantSummary>(concat!(
        "SELECT ",
        summary_columns!(),
        " FROM tenants t
          WHERE ($1::uuid[] IS NULL OR t.tenant_id = ANY($1))
            AND ($2::uuid IS NULL OR t.tenant_id > $2)
          ORDER BY t.tenant_id LIMIT $3"
    ))
    .bind(only)
    .bind(after)
    .bind(limit)
    .fetch_all(executor)
    .await?)
}

/// A new tenant; `false` when the id exists already.
pub async fn create_tenant(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    name: &str,
    rules: &FieldRules,
    invites_enabled: bool,
    admin_roles_enabled: bool,
    actor: &str,
) -> Result<bool, StoreError> {
    let created = sqlx::query(
        "INSERT INTO tenants (tenant_id, name, rules, invites_enabled, admin_roles_enabled)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(tenant_id)
    .bind(name)
    .bind(Json(rules))
    .bind(invites_enabled)
    .bind(admin_roles_enabled)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if created {
        record_rules(conn, tenant_id, 1, rules, actor).await?;
    }
    Ok(created)
}

/// What a merge update changes; `None` leaves a value as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantChanges {
    /// New display name.
    pub name: Option<String>,
    /// Invites on or off.
    pub invites_enabled: Option<bool>,
    /// Admin roles on or off.
    pub admin_roles_enabled: Option<bool>,
}

/// Applies `changes` to the tenant (locked for the transaction); `false` when it is unknown.
pub async fn update_tenant(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    changes: &TenantChanges,
) -> Result<bool, StoreError> {
    Ok(sqlx::query(
        "UPDATE tenants
            SET name = coalesce($2, name),
                invites_enabled = coalesce($3, invites_enabled),
                admin_roles_enabled = coalesce($4, admin_roles_enabled),
                updated_at = now()
          WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .bind(&changes.name)
    .bind(changes.invites_enabled)
    .bind(changes.admin_roles_enabled)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// Marks the tenant disconnected (`true`) or connected again; `false` when it is unknown.
pub async fn set_disconnected(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    disconnected: bool,
) -> Result<bool, StoreError> {
    Ok(sqlx::query(
        "UPDATE tenants
            SET disconnected_at = CASE WHEN $2 THEN coalesce(disconnected_at, now()) END,
                updated_at = now()
          WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .bind(disconnected)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// The tenant's rules and their version, locking the row for the transaction against other
/// rule changes (`FOR NO KEY UPDATE`, the lock the rules' own `UPDATE` takes: card writes, which
/// hold the row only against deletion, go on meanwhile).
pub async fn lock_rules(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<Option<(FieldRules, i64)>, StoreError> {
    let row: Option<(Json<FieldRules>, i64)> = sqlx::query_as(
        "SELECT rules, rules_version FROM tenants WHERE tenant_id = $1 FOR NO KEY UPDATE",
    )
    .bind(tenant_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(rules, version)| (rules.0, version)))
}

/// Saves new rules as the next version (the row must be locked by [`lock_rules`]); returns the
/// new version.
pub async fn save_rules(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    rules: &FieldRules,
    actor: &str,
) -> Result<i64, StoreError> {
    let version: i64 = sqlx::query_scalar(
        "UPDATE tenants SET rules = $2, rules_version = rules_version + 1, updated_at = now()
          WHERE tenant_id = $1 RETURNING rules_version",
    )
    .bind(tenant_id)
    .bind(Json(rules))
    .fetch_one(&mut *conn)
    .await?;
    record_rules(conn, tenant_id, version, rules, actor).await?;
    Ok(version)
}

async fn record_rules(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    version: i64,
    rules: &FieldRules,
    actor: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO tenant_rules_history (tenant_id, version, rules, changed_by)
         VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, version) DO NOTHING",
    )
    .bind(tenant_id)
    .bind(version)
    .bind(Json(rules))
    .bind(actor)
    .execute(conn)
    .await?;
    Ok(())
}

/// One saved version of a tenant's rules.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct RulesVersion {
    /// The version.
    pub version: i64,
    /// The rules.
    #[sqlx(json)]
    pub rules: FieldRules,
    /// Who saved them.
    pub changed_by: String,
    /// When.
    pub changed_at: OffsetDateTime,
}

/// A tenant's saved rules, newest first, at most `limit`.
pub async fn rules_history(
    executor: impl PgExecutor<'_>,
    tenant_id: Uuid,
    limit: i64,
) -> Result<Vec<RulesVersion>, StoreError> {
    Ok(sqlx::query_as::<_, RulesVersion>(
        "SELECT version, rules, changed_by, changed_at FROM tenant_rules_history
          WHERE tenant_id = $1 ORDER BY version DESC LIMIT $2",
    )
    .bind(tenant_id)
    .bind(limit)
    .fetch_all(executor)
    .await?)
}

/// One admin change to record.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminChange<'a> {
    /// The tenant, when the change is about one.
    pub tenant_id: Option<Uuid>,
    /// Who (the token's subject).
    pub actor: &'a str,
    /// What (`tenant.update`, `rules.update`, …).
    pub action: &'a str,
    /// A narrower target (a card, a run, a queue).
    pub target: Option<&'a str>,
    /// The state before (never a secret).
    pub before: Option<serde_json::Value>,
    /// The state after (never a secret).
    pub after: Option<serde_json::Value>,
}

/// Appends an admin change (inside the transaction of the change it records).
pub async fn record_change(
    executor: impl PgExecutor<'_>,
    change: &AdminChange<'_>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO admin_audit (tenant_id, actor, action, target, before, after)
         VALUES ($1, $2, $3, $4, $5::json, $6::json)",
    )
    .bind(change.tenant_id)
    .bind(change.actor)
    .bind(change.action)
    .bind(change.target)
    .bind(change.before.as_ref().map(crate::json_text).transpose()?)
    .bind(change.after.as_ref().map(crate::json_text).transpose()?)
    .execute(executor)
    .await?;
    Ok(())
}

/// One recorded admin change.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct AdminChangeRecord {
    /// Insertion order (the cursor of [`changes`]).
    pub id: i64,
    /// The tenant.
    pub tenant_id: Option<Uuid>,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// A narrower target.
    pub target: Option<String>,
    /// Before.
    pub before: Option<Json<serde_json::Value>>,
    /// After.
    pub after: Option<Json<serde_json::Value>>,
    /// When.
    pub at: OffsetDateTime,
}

/// A tenant's admin changes, newest first, older than `before_id` when given, at most `limit`.
pub async fn changes(
    executor: impl PgExecutor<'_>,
    tenant_id: Uuid,
    before_id: Option<i64>,
    limit: i64,
) -> Result<Vec<AdminChangeRecord>, StoreError> {
    Ok(sqlx::query_as::<_, AdminChangeRecord>(
        "SELECT id, tenant_id, actor, action, target, before, after, at FROM admin_audit
          WHERE tenant_id = $1 AND ($2::bigint IS NULL OR id < $2)
          ORDER BY id DESC LIMIT $3",
    )
    .bind(tenant_id)
    .bind(before_id)
    .bind(limit)
    .fetch_all(executor)
    .await?)
}

/// A stored connection without its credential.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ConnectionSummary {
    /// The app (client) id.
    pub client_id: String,
    /// `secret`, `certificate` or `federated`.
    pub credential_kind: String,
    /// When it was stored or last changed.
    pub updated_at: OffsetDateTime,
}

/// The tenant's connection, credential left sealed and unread, or `None`.
pub async fn connection(
    executor: impl PgExecutor<'_>,
    tenant_id: Uuid,
) -> Result<Option<ConnectionSummary>, StoreError> {
    Ok(sqlx::query_as::<_, ConnectionSummary>(
        "SELECT client_id, credential_kind, updated_at
           FROM tenant_connections WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_optional(executor)
    .await?)
}

/// Which cards a list returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CardFilter {
    /// Only this status (`active`, `deactivated`, `deleted`).
    pub status: Option<String>,
    /// Only this email (compared case-insensitively).
    pub email: Option<String>,
    /// Only names containing this text (case-insensitive).
    pub name: Option<String>,
    /// Only members of this team (group id).
    pub team: Option<String>,
}

/// A page of a tenant's cards in card id order, after `after`, at most `limit`.
///
/// The statement holds only the filters given, so each combination is its own prepared
/// statement whose every plan seeks to the cursor and uses the email index. With the
/// `$n IS NULL OR ...` form only a custom plan (one that folds the parameters in) can; a generic
/// plan of it, which PostgreSQL may choose for a prepared statement after five runs, would read
/// every card before the cursor.
pub async fn cards(
    executor: impl PgExecutor<'_>,
    tenant_id: Uuid,
    filter: &CardFilter,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<crate::cards::Card>, StoreError> {
    let mut query = sqlx::QueryBuilder::new("SELECT c.* FROM cards c WHERE c.tenant_id = ");
    query.push_bind(tenant_id);
    if let Some(status) = &filter.status {
        query.push(" AND c.status = ").push_bind(status);
    }
    if let Some(email) = &filter.email {
        query
            .push(" AND lower(c.email) = lower(")
            .push_bind(email)
            .push(")");
    }
    if let Some(name) = &filter.name {
        let escaped = name
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        query
            .push(" AND (c.fields -> 'name' ->> 'value') ILIKE ")
            .push_bind(format!("%{escaped}%"));
    }
    if let Some(team) = &filter.team {
        query
            .push(
                " AND EXISTS (SELECT 1 FROM card_teams t
                   WHERE t.tenant_id = c.tenant_id AND t.card_id = c.card_id AND t.group_id = ",
            )
            .push_bind(team)
            .push(")");
    }
    if let Some(after) = after {
        query.push(" AND c.card_id > ").push_bind(after);
    }
    query.push(" ORDER BY c.card_id LIMIT ").push_bind(limit);
    Ok(query
        .build_query_as::<crate::cards::Card>()
        .fetch_all(executor)
        .await?)
}

/// Whether the tenant is disconnected: no rounds run for it and its directory-locked fields are
/// editable on the cards. An unknown tenant is not disconnected.
pub async fn is_disconnected(
    executor: impl PgExecutor<'_>,
    tenant_id: Uuid,
) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar::<_, bool>(
        "SELECT disconnected_at IS NOT NULL FROM tenants WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_optional(executor)
    .await?
    .unwrap_or(false))
}
