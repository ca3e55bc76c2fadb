//! The delta-worker's durable directory snapshot: merged user states with their versions, group
//! memberships, per-tenant sync bookkeeping (fencing) and scope.

use crate::StoreError;
use crate::photos::PhotoImage;
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use std::collections::HashMap;
use time::OffsetDateTime;
use uuid::Uuid;

mod group_rows;
pub use group_rows::{GroupRow, groups, save_groups};

/// Whether a user still exists in the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// A live user object.
    Present,
    /// In Entra's deleted items (restorable): `@removed` with reason `changed`.
    SoftDeleted,
    /// Permanently gone: `@removed` with reason `deleted`, or missing from a full enumeration.
    Deleted,
}

impl Presence {
    fn as_str(self) -> &'static str {
        match self {
            Presence::Present => "present",
            Presence::SoftDeleted => "soft_deleted",
            Presence::Deleted => "deleted",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "soft_deleted" => Presence::SoftDeleted,
            "deleted" => Presence::Deleted,
            _ => Presence::Present,
        }
    }
}

/// One user of the snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    /// Entra object id.
    pub user_id: String,
    /// The merged Graph object.
    pub data: Value,
    /// Existence.
    pub presence: Presence,
    /// Within the tenant's scope.
    pub in_scope: bool,
    /// Scope groups (teams) containing the user.
    pub team_ids: Vec<String>,
    /// Last seen photo etag.
    pub photo_etag: Option<String>,
    /// The stored image of that photo, once downloaded (`None`: no photo, or not yet fetched).
    pub photo: Option<PhotoImage>,
    /// Current version (0 for a row not yet stored).
    pub version: i64,
    /// Last confirmed version.
    pub emitted_version: i64,
    /// Action of the last confirmed command.
    pub emitted_action: Option<String>,
    /// When the current version's change was observed.
    pub observed_at: OffsetDateTime,
    /// The admin role last read from the directory roles; `None` until roles were read.
    pub admin_role: Option<AdminRole>,
}

/// A directory admin role as cards know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdminRole {
    /// Holds neither admin role.
    Member,
    /// Global Administrator: a full team admin.
    TeamAdmin,
    /// Groups Administrator: a subteam admin.
    SubteamAdmin,
}

impl AdminRole {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminRole::Member => "member",
            AdminRole::TeamAdmin => "team_admin",
            AdminRole::SubteamAdmin => "subteam_admin",
        }
    }

    /// Parses the stored spelling (the column's CHECK admits nothing else).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "member" => Some(AdminRole::Member),
            "team_admin" => Some(AdminRole::TeamAdmin),
            "subteam_admin" => Some(AdminRole::SubteamAdmin),
            _ => None,
        }
    }
}

type UserTuple = (
    String,
    Value,
    String,
    bool,
    Vec<String>,
    Option<String>,
    i64,
    i64,
    Option<String>,
    OffsetDateTime,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn user_from(
    (
        user_id,
        data,
        presence,
        in_scope,
        team_ids,
        photo_etag,
        version,
        emitted_version,
        emitted_action,
        observed_at,
        admin_role,
        photo_sha256,
        photo_content_type,
    ): UserTuple,
) -> UserRow {
    UserRow {
        user_id,
        data,
        presence: Presence::parse(&presence),
        in_scope,
        team_ids,
        photo_etag,
        photo: PhotoImage::from_columns(photo_sha256, photo_content_type),
        version,
        emitted_version,
        emitted_action,
        observed_at,
        admin_role: admin_role.as_deref().and_then(AdminRole::parse),
    }
}

/// The user columns, as a macro so queries stay `&'static str` (sqlx refuses dynamic SQL).
macro_rules! user_columns {
    () => {
        "user_id, data, presence, in_scope, team_ids, photo_etag, version, emitted_version, emitted_action, observed_at, admin_role, photo_sha256, photo_content_type"
    };
}

/// Makes sure the tenant has a sync-state row (the fencing anchor).
pub async fn ensure_sync_state(pool: &PgPool, tenant: Uuid) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO tenant_sync_state (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(tenant)
        .execute(pool)
        .await?;
    Ok(())
}

/// Claims the tenant for `token` inside `tx`: false when a newer lease holder has written since,
/// in which case the caller must abandon the transaction.
pub async fn fence(
    tx: &mut Transaction<'_, Postgres>,
    tenant: Uuid,
    token: i64,
) -> Result<bool, StoreError> {
    let done =
        sqlx::query("UPDATE tenant_sync_state SET fence = $2 WHERE tenant_id = $1 AND fence <= $2")
            .bind(tenant)
            .bind(token)
            .execute(&mut **tx)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// The highest lease token that has written for the tenant (0 before any).
pub async fn current_fence(pool: &PgPool, tenant: Uuid) -> Result<i64, StoreError> {
    let fence: Option<i64> =
        sqlx::query_scalar("SELECT fence FROM tenant_sync_state WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_optional(pool)
            .await?;
    Ok(fence.unwrap_or(0))
}

/// The `$select` the tenant's users delta link tracks, as recorded when its last full users
/// enumeration completed; `None` when not known.
pub async fn users_select(
    executor: impl sqlx::PgExecutor<'_>,
    tenant: Uuid,
) -> Result<Option<Vec<String>>, StoreError> {
    let select: Option<Option<Vec<String>>> =
        sqlx::query_scalar("SELECT users_select FROM tenant_sync_state WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_optional(executor)
            .await?;
    Ok(select.flatten())
}

/// Records the `$select` of a users enumeration that has just completed (inside the round's
/// fenced transaction): from now on the stored delta link tracks these properties.
pub async fn record_users_select(
    tx: &mut Transaction<'_, Postgres>,
    tenant: Uuid,
    select: &[String],
) -> Result<(), StoreError> {
    sqlx::query("UPDATE tenant_sync_state SET users_select = $2 WHERE tenant_id = $1")
        .bind(tenant)
        .bind(select)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Records a finished round.
pub async fn record_round(pool: &PgPool, tenant: Uuid, cause: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE tenant_sync_state SET rounds = rounds + 1, last_round_at = now(), last_round_cause = $2 WHERE tenant_id = $1",
    )
    .bind(tenant)
    .bind(cause)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records that a round was attempted and failed, so the safety poll waits a full interval
/// before trying again instead of retrying a broken tenant on every tick.
pub async fn record_failed_attempt(pool: &PgPool, tenant: Uuid) -> Result<(), StoreError> {
    sqlx::query("UPDATE tenant_sync_state SET last_round_at = now() WHERE tenant_id = $1")
        .bind(tenant)
        .execute(pool)
        .await?;
    Ok(())
}

/// Tenants with a connection whose last round is older than `idle` (or that never had one);
/// disconnected tenants are left out (they are not synced).
///
/// A tenant that never had a round but has a run queued or running (its operator's first Sync
/// Now, say) is left to that run: a poll round beside it would enumerate the whole directory a
/// second time. If the run never ends, `reconciler due` fails it and the poll takes the tenant.
pub async fn idle_tenants(
    pool: &PgPool,
    idle: std::time::Duration,
) -> Result<Vec<Uuid>, StoreError> {
    let seconds = idle.as_secs_f64();
    Ok(sqlx::query_scalar(
        "SELECT c.tenant_id FROM tenant_connections c
           LEFT JOIN tenant_sync_state s ON s.tenant_id = c.tenant_id
          WHERE (s.last_round_at < now() - make_interval(secs => $1)
                 OR (s.last_round_at IS NULL
                     AND NOT EXISTS (SELECT 1 FROM sync_runs r
                                      WHERE r.tenant_id = c.tenant_id AND r.kind <> 'live'
                                        AND r.finished_at IS NULL
                                        AND r.status IN ('queued', 'running'))))
            AND NOT EXISTS (SELECT 1 FROM tenants t
                             WHERE t.tenant_id = c.tenant_id AND t.disconnected_at IS NOT NULL)",
    )
    .bind(seconds)
    .fetch_all(pool)
    .await?)
}

/// The stored users among `ids`.
pub async fn users(
    tx: &mut Transaction<'_, Postgres>,
    tenant: Uuid,
    ids: &[String],
) -> Result<HashMap<String, UserRow>, StoreError> {
    let rows: Vec<UserTuple> = sqlx::query_as(concat!(
        "SELECT ",
        user_columns!(),
        " FROM directory_users WHERE tenant_id = $1 AND user_id = ANY($2)"
    ))
    .bind(tenant)
    .bind(ids)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(user_from)
        .map(|row| (row.user_id.clone(), row))
        .collect())
}

/// Every stored user of a tenant (full-round bookkeeping and scope changes).
pub async fn all_users(pool: &PgPool, tenant: Uuid) -> Result<Vec<UserRow>, StoreError> {
    let rows: Vec<UserTuple> = sqlx::query_as(concat!(
        "SELECT ",
        user_columns!(),
        " FROM directory_users WHERE tenant_id = $1"
    ))
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(user_from).collect())
}

/// The tenant's stored users after `after` in user id order, at most `limit`: the reconcile
/// walks the snapshot in pages so a large tenant never sits in memory whole.
pub async fn users_after(
    executor: impl sqlx::PgExecutor<'_>,
    tenant: Uuid,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<UserRow>, StoreError> {
    let rows: Vec<UserTuple> = sqlx::query_as(concat!(
        "SELECT ",
        user_columns!(),
        " FROM directory_users WHERE tenant_id = $1 AND ($2::text IS NULL OR user_id > $2)
          ORDER BY user_id LIMIT $3"
    ))
    .bind(tenant)
    .bind(after)
    .bind(limit)
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(user_from).collect())
}

/// Ids of the tenant's present users: what a full enumeration must account for, without
/// loading every merged object (a 100,000-user tenant stays a few megabytes here).
pub async fn present_user_ids(pool: &PgPool, tenant: Uuid) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT user_id FROM directory_users WHERE tenant_id = $1 AND presence = 'present'",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?)
}

/// Whether the tenant's snapshot holds any user yet (none before its first enumeration).
pub async fn has_users(pool: &PgPool, tenant: Uuid) -> Result<bool, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM directory_users WHERE tenant_id = $1)")
            .bind(tenant)
            .fetch_one(pool)
            .await?,
    )
}

/// Stores changed users, each with a fresh version from the global sequence; returns the
/// versions given, by user id.
pub async fn save_users(
    tx: &mut Transaction<'_, Postgres>,
    tenant: Uuid,
    rows: &[UserRow],
) -> Result<HashMap<String, i64>, StoreError> {
    if rows.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<&str> = rows.iter().map(|r| r.user_id.as_str()).collect();
    let data: Vec<&Value> = rows.iter().map(|r| &r.data).collect();
    let presence: Vec<&str> = rows.iter().map(|r| r.presence.as_str()).collect();
    let in_scope: Vec<bool> = rows.iter().map(|r| r.in_scope).collect();
    // Arrays of arrays cannot be bound directly; teams travel as JSON arrays.
    let teams: Vec<Value> = rows
        .iter()
        .map(|r| Value::from(r.team_ids.clone()))
        .collect();
    let photos: Vec<Option<&str>> = rows.iter().map(|r| r.photo_etag.as_deref()).collect();
    let hashes: Vec<Option<&str>> = rows
        .iter()
        .map(|r| r.photo.as_ref().map(|p| p.sha256.as_str()))
        .collect();
    let types: Vec<Option<&str>> = rows
        .iter()
        .map(|r| r.photo.as_ref().map(|p| p.content_type.as_str()))
        .collect();
    let observed: Vec<OffsetDateTime> = rows.iter().map(|r| r.observed_at).collect();
    let roles: Vec<Option<&str>> = rows
        .iter()
        .map(|r| r.admin_role.map(AdminRole::as_str))
        .collect();
    let saved: Vec<(String, i64)> = sqlx::query_as(
        "INSERT INTO directory_users (tenant_id, user_id, data, presence, in_scope, team_ids, photo_etag, version, observed_at, admin_role, photo_sha256, photo_content_type)
         SELECT $1, u.id, u.data, u.presence, u.in_scope,
                ARRAY(SELECT jsonb_array_elements_text(u.teams)), u.photo, nextval('directory_version_seq'), u.observed, u.role,
                u.hash, u.ctype
           FROM UNNEST($2::text[], $3::jsonb[], $4::text[], $5::bool[], $6::jsonb[], $7::text[], $8::timestamptz[], $9::text[], $10::text[], $11::text[])
             AS u(id, data, presence, in_scope, teams, photo, observed, role, hash, ctype)
         ON CONFLICT (tenant_id, user_id) DO UPDATE SET
             data = EXCLUDED.data, presence = EXCLUDED.presence, in_scope = EXCLUDED.in_scope,
             team_ids = EXCLUDED.team_ids, photo_etag = EXCLUDED.photo_etag,
             photo_sha256 = EXCLUDED.photo_sha256, photo_content_type = EXCLUDED.photo_content_type,
             version = EXCLUDED.version, observed_at = EXCLUDED.observed_at,
             admin_role = EXCLUDED.admin_role
         RETURNING user_id, version",
    )
    .bind(tenant)
    .bind(&ids)
    .bind(&data)
    .bind(&presence)
    .bind(&in_scope)
    .bind(&teams)
    .bind(&photos)
    .bind(&observed)
    .bind(&roles)
    .bind(&hashes)
    .bind(&types)
    .fetch_all(&mut **tx)
    .await?;
    Ok(saved.into_iter().collect())
}

/// Users whose current version has no confirmed card command yet (oldest first).
pub async fn unemitted(
    pool: &PgPool,
    tenant: Uuid,
    limit: i64,
) -> Result<Vec<UserRow>, StoreError> {
    let rows: Vec<UserTuple> = sqlx::query_as(concat!(
        "SELECT ",
        user_columns!(),
        " FROM directory_users WHERE tenant_id = $1 AND version > emitted_version ORDER BY version LIMIT $2"
    ))
    .bind(tenant)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(user_from).collect())
}

/// The tenant's users whose current version has no confirmed command, after `after` in user id
/// order, at most `limit`: the safety rail assesses (and holds) a round's whole plan in pages.
pub async fn unemitted_after(
    executor: impl sqlx::PgExecutor<'_>,
    tenant: Uuid,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<UserRow>, StoreError> {
    let rows: Vec<UserTuple> = sqlx::query_as(concat!(
        "SELECT ",
        user_columns!(),
        " FROM directory_users WHERE tenant_id = $1 AND version > emitted_version
            AND ($2::text IS NULL OR user_id > $2)
          ORDER BY user_id LIMIT $3"
    ))
    .bind(tenant)
    .bind(after)
    .bind(limit)
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(user_from).collect())
}

/// How many of the tenant's users have no confirmed command for their current version.
pub async fn count_unemitted(pool: &PgPool, tenant: Uuid) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM directory_users WHERE tenant_id = $1 AND version > emitted_version",
    )
    .bind(tenant)
    .fetch_one(pool)
    .await?)
}

/// Records that the commands for these `(user, version, action)` were confirmed by the broker.
/// `action` is `None` when no command was needed for that version.
pub async fn mark_emitted(
    executor: impl sqlx::PgExecutor<'_>,
    tenant: Uuid,
    emitted: &[(String, i64, Option<&str>)],
) -> Result<(), StoreError> {
    if emitted.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = emitted.iter().map(|(id, _, _)| id.as_str()).collect();
    let versions: Vec<i64> = emitted.iter().map(|(_, v, _)| *v).collect();
    let actions: Vec<Option<&str>> = emitted.iter().map(|(_, _, a)| *a).collect();
    sqlx::query(
        "UPDATE directory_users d SET emitted_version = u.version,
                emitted_action = COALESCE(u.action, d.emitted_action)
           FROM UNNEST($2::text[], $3::bigint[], $4::text[]) AS u(id, version, action)
          WHERE d.tenant_id = $1 AND d.user_id = u.id AND d.emitted_version < u.version",
    )
    .bind(tenant)
    .bind(&ids)
    .bind(&versions)
    .bind(&actions)
    .execute(executor)
    .await?;
    Ok(())
}

/// Users whose photo was checked longest ago (never first) and not within `recheck_after`, for
/// the budgeted photo check.
pub async fn photo_scan_candidates(
    pool: &PgPool,
    tenant: Uuid,
    limit: i64,
    recheck_after: std::time::Duration,
) -> Result<Vec<UserRow>, StoreError> {
    let rows: Vec<UserTuple> = sqlx::query_as(concat!(
        "SELECT ",
        user_columns!(),
        " FROM directory_users WHERE tenant_id = $1 AND presence = 'present' AND in_scope
            AND (photo_checked_at IS NULL
                 OR photo_checked_at <= now() - make_interval(secs => $3))
          ORDER BY photo_checked_at NULLS FIRST LIMIT $2"
    ))
    .bind(tenant)
    .bind(limit)
    .bind(recheck_after.as_secs_f64())
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(user_from).collect())
}

/// Present users whose admin role differs from the one stored, given the members of the two
/// admin roles just read from Graph (a never-read role counts as `member`), each returned with
/// its new role set. Computed in PostgreSQL so a large tenant is not loaded for a few admins.
pub async fn admin_role_changes(
    pool: &PgPool,
    tenant: Uuid,
    team_admins: &[String],
    subteam_admins: &[String],
) -> Result<Vec<UserRow>, StoreError> {
    let rows: Vec<UserTuple> = sqlx::query_as(concat!(
        "SELECT ",
        user_columns!(),
        " FROM directory_users
          WHERE tenant_id = $1 AND presence = 'present'
            AND (CASE WHEN user_id = ANY($2) THEN 'team_admin'
                      WHEN user_id = ANY($3) THEN 'subteam_admin'
                      ELSE 'member' END) IS DISTINCT FROM COALESCE(admin_role, 'member')"
    ))
    .bind(tenant)
    .bind(team_admins)
    .bind(subteam_admins)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(user_from)
        .map(|mut row| {
            row.admin_role = Some(if team_admins.contains(&row.user_id) {
                AdminRole::TeamAdmin
            } else if subteam_admins.contains(&row.user_id) {
                AdminRole::SubteamAdmin
            } else {
                AdminRole::Member
            });
            row
        })
        .collect())
}

/// Notes that these users' photos were checked now, recording what was found without a new
/// version (used when the finding changes nothing on the card, e.g. "still no photo"); `None`
/// keeps the stored etag.
pub async fn mark_photos_checked(
    pool: &PgPool,
    tenant: Uuid,
    checked: &[(String, Option<String>)],
) -> Result<(), StoreError> {
    let ids: Vec<&str> = checked.iter().map(|(id, _)| id.as_str()).collect();
    let etags: Vec<Option<&str>> = checked.iter().map(|(_, etag)| etag.as_deref()).collect();
    sqlx::query(
        "UPDATE directory_users d SET photo_checked_at = now(), photo_etag = COALESCE(c.etag, d.photo_etag)
           FROM UNNEST($2::text[], $3::text[]) AS c(id, etag)
          WHERE d.tenant_id = $1 AND d.user_id = c.id",
    )
    .bind(tenant)
    .bind(&ids)
    .bind(&etags)
    .execute(pool)
    .await?;
    Ok(())
}

/// The tenant's scope: `None` = every user, `Some(groups)` = nested members of those groups.
pub async fn scope(pool: &PgPool, tenant: Uuid) -> Result<Option<Vec<String>>, StoreError> {
    let groups: Option<Vec<String>> =
        sqlx::query_scalar("SELECT group_ids FROM tenant_scopes WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_optional(pool)
            .await?;
    Ok(groups.filter(|g| !g.is_empty()))
}

/// Sets the tenant's scope (an empty list means every user).
pub async fn set_scope(
    pool: &PgPool,
    tenant: Uuid,
    group_ids: &[String],
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO tenant_scopes (tenant_id, group_ids) VALUES ($1, $2)
         ON CONFLICT (tenant_id) DO UPDATE SET group_ids = EXCLUDED.group_ids",
    )
    .bind(tenant)
    .bind(group_ids)
    .execute(pool)
    .await?;
    Ok(())
}

/// Values of `properties` in the tenant's stored snapshot (present users only): per property,
/// how many users have a value and up to `samples` distinct values, as text (a JSON text for
/// lists). Properties no user has are left out.
pub async fn property_samples(
    pool: &PgPool,
    tenant: Uuid,
    properties: &[String],
    samples: i32,
) -> Result<Vec<(String, i64, Vec<String>)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT e.key, count(*), (array_agg(DISTINCT e.value #>> '{}'))[1:$3]
           FROM directory_users u CROSS JOIN LATERAL jsonb_each(u.data) e
          WHERE u.tenant_id = $1 AND u.presence = 'present' AND e.key = ANY($2)
            AND jsonb_typeof(e.value) <> 'null'
          GROUP BY e.key
          ORDER BY e.key",
    )
    .bind(tenant)
    .bind(properties)
    .bind(samples)
    .fetch_all(pool)
    .await?)
}

/// The tenant's user filter (guests, an attribute condition); `None` admits everyone. The API
/// stores only validated filters; one that no longer parses admits everyone (scoping never fails).
pub async fn user_filter(
    pool: &PgPool,
    tenant: Uuid,
) -> Result<Option<cardsync_rules::UserFilter>, StoreError> {
    let stored: Option<Option<sqlx::types::Json<serde_json::Value>>> =
        sqlx::query_scalar("SELECT user_filter FROM tenant_scopes WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_optional(pool)
            .await?;
    Ok(stored
        .flatten()
        .and_then(|document| serde_json::from_value(document.0).ok())
        .filter(cardsync_rules::UserFilter::is_active))
}

/// Sets the tenant's user filter (`None`: everyone), keeping its groups.
pub async fn set_user_filter(
    pool: &PgPool,
    tenant: Uuid,
    filter: Option<&cardsync_rules::UserFilter>,
) -> Result<(), StoreError> {
    let document = filter
        .filter(|filter| filter.is_active())
        .map(crate::json_text)
        .transpose()?;
    sqlx::query(
        "INSERT INTO tenant_scopes (tenant_id, user_filter) VALUES ($1, $2::json)
         ON CONFLICT (tenant_id) DO UPDATE SET user_filter = EXCLUDED.user_filter",
    )
    .bind(tenant)
    .bind(document)
    .execute(pool)
    .await?;
    Ok(())
}

/// Whether some present user of the tenant's snapshot is out of scope (what a scope or filter
/// that admits everyone again must undo).
pub async fn has_users_out_of_scope(pool: &PgPool, tenant: Uuid) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM directory_users
                         WHERE tenant_id = $1 AND presence = 'present' AND NOT in_scope)",
    )
    .bind(tenant)
    .fetch_one(pool)
    .await?)
}
