//! Cards: one per person, with per-field state (`cardsync_rules::FieldStates`), status, role,
//! team memberships and the directory version last applied.
//!
//! The card-writer reads and writes cards inside one transaction per command; every `lock_*`
//! query takes the row lock (`FOR UPDATE`), so the version check and the write are atomic.

use crate::photos::PhotoImage;
use crate::{StoreError, json_text};
use cardsync_rules::FieldStates;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{FromRow, PgConnection, PgExecutor, Row as _};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use time::OffsetDateTime;
use uuid::Uuid;

mod bulk;
pub use bulk::{insert_all, update_all};

/// A card's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardStatus {
    /// Visible and in use.
    Active,
    /// The person left the scope or the account is disabled; can be reactivated.
    Deactivated,
    /// Permanently deleted: a tombstone without personal data that only remembers the version.
    Deleted,
}

impl CardStatus {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            CardStatus::Active => "active",
            CardStatus::Deactivated => "deactivated",
            CardStatus::Deleted => "deleted",
        }
    }

    /// Parses the stored form.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(CardStatus::Active),
            "deactivated" => Some(CardStatus::Deactivated),
            "deleted" => Some(CardStatus::Deleted),
            _ => None,
        }
    }
}

impl fmt::Display for CardStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A card holder's role in the tenant's team.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum CardRole {
    /// An ordinary member.
    #[default]
    Member,
    /// A full team admin (Entra Global Administrators, when the tenant turns admin roles on).
    TeamAdmin,
    /// A subteam admin (Entra Groups Administrators, when the tenant turns admin roles on).
    SubteamAdmin,
}

impl CardRole {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            CardRole::Member => "member",
            CardRole::TeamAdmin => "team_admin",
            CardRole::SubteamAdmin => "subteam_admin",
        }
    }

    /// Parses the stored form.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "member" => Some(CardRole::Member),
            "team_admin" => Some(CardRole::TeamAdmin),
            "subteam_admin" => Some(CardRole::SubteamAdmin),
            _ => None,
        }
    }
}

impl fmt::Display for CardRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One card row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    /// The tenant.
    pub tenant_id: Uuid,
    /// The card's own id (stable across links and updates).
    pub card_id: Uuid,
    /// The directory user (Entra object id); `None` for a card no command has linked yet.
    pub user_id: Option<String>,
    /// The tenant's UID of the person.
    pub uid: Option<String>,
    /// The card's email (matched case-insensitively for linking).
    pub email: Option<String>,
    /// Lifecycle state.
    pub status: CardStatus,
    /// Per-field value, source and last directory value.
    pub fields: FieldStates,
    /// The directory photo's etag as last reported.
    pub photo_etag: Option<String>,
    /// The stored image the card shows, when its photo came from the directory.
    pub photo: Option<PhotoImage>,
    /// The directory version of `user_id` last applied (0: none).
    pub applied_version: i64,
    /// Role in the team.
    pub role: CardRole,
    /// When the row was created.
    pub created_at: OffsetDateTime,
    /// When it last changed.
    pub updated_at: OffsetDateTime,
}

impl Card {
    /// A new, active card with no fields, not yet stored.
    pub fn new(tenant_id: Uuid) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            tenant_id,
            card_id: Uuid::now_v7(),
            user_id: None,
            uid: None,
            email: None,
            status: CardStatus::Active,
            fields: FieldStates::new(),
            photo_etag: None,
            photo: None,
            applied_version: 0,
            role: CardRole::Member,
            created_at: now,
            updated_at: now,
        }
    }

    /// A copy of the card with other field states: the next state of a card whose fields were
    /// just merged, without copying the old fields first.
    pub fn with_fields(&self, fields: FieldStates) -> Self {
        Self {
            tenant_id: self.tenant_id,
            card_id: self.card_id,
            user_id: self.user_id.clone(),
            uid: self.uid.clone(),
            email: self.email.clone(),
            status: self.status,
            fields,
            photo_etag: self.photo_etag.clone(),
            photo: self.photo.clone(),
            applied_version: self.applied_version,
            role: self.role,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

fn decode_error(column: &str, value: &str) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: format!("unexpected value {value:?}").into(),
    }
}

impl<'r> FromRow<'r, PgRow> for Card {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        let status: String = row.try_get("status")?;
        let role: String = row.try_get("role")?;
        let Json(fields): Json<FieldStates> = row.try_get("fields")?;
        Ok(Self {
            tenant_id: row.try_get("tenant_id")?,
            card_id: row.try_get("card_id")?,
            user_id: row.try_get("user_id")?,
            uid: row.try_get("uid")?,
            email: row.try_get("email")?,
            status: CardStatus::parse(&status).ok_or_else(|| decode_error("status", &status))?,
            fields,
            photo_etag: row.try_get("photo_etag")?,
            photo: PhotoImage::from_columns(
                row.try_get("photo_sha256")?,
                row.try_get("photo_content_type")?,
            ),
            applied_version: row.try_get("applied_version")?,
            role: CardRole::parse(&role).ok_or_else(|| decode_error("role", &role))?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// Serialises every write for one directory user until the transaction ends (a transaction
/// advisory lock), so two commands for the same user, even one with no card yet, never race.
pub async fn lock_user(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    user_id: &str,
) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("card:{tenant_id}:{user_id}"))
        .execute(conn)
        .await?;
    Ok(())
}

/// [`lock_user`] for several users at once, in one round trip. The keys are taken in sorted
/// order, so two transactions locking overlapping sets of users never deadlock on each other.
/// Locks are re-entrant within a transaction, so a user listed twice is harmless.
pub async fn lock_users(conn: &mut PgConnection, users: &[(Uuid, &str)]) -> Result<(), StoreError> {
    let mut keys: Vec<String> = users
        .iter()
        .map(|(tenant_id, user_id)| format!("card:{tenant_id}:{user_id}"))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    // A function scan yields rows in array order, and each row's lock is taken as it is read.
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest($1::text[]) AS t(k)",
    )
    .bind(&keys)
    .execute(conn)
    .await?;
    Ok(())
}

// The batch look-ups below name the tenant as `(SELECT $1::uuid)`, not `$1`. PostgreSQL plans a
// bound `$1` with its statistics for that very value, and for a tenant newer than them (every
// initial sync) it expects no card at all: then any index that starts with tenant_id, the
// primary key included, looks as cheap as the key's own, and a tie went either way from one
// database to the next; the wrong one reads every card of the tenant per command. A sub-select
// is a value the planner does not know, so it expects an average tenant, and only the index on
// the tenant and the key is cheap. See `lookup_indexes`.

/// [`lock_by_users`]: one probe of `cards_by_user` per user.
const BY_USERS: &str = "SELECT c.* FROM unnest($2::text[]) AS u(user_id)
   CROSS JOIN LATERAL (
       SELECT * FROM cards
        WHERE tenant_id = (SELECT $1::uuid) AND user_id = u.user_id
        LIMIT 1 FOR UPDATE
   ) AS c";

/// [`lock_by_uids`]: one probe of `cards_by_uid` per UID.
const BY_UIDS: &str = "SELECT c.* FROM unnest($2::text[]) AS w(uid)
   CROSS JOIN LATERAL (
       SELECT * FROM cards
        WHERE tenant_id = (SELECT $1::uuid) AND uid = w.uid AND status <> 'deleted'
        LIMIT 1 FOR UPDATE
   ) AS c";

/// [`lock_by_emails`]: one probe of `cards_by_email` per email.
const BY_EMAILS: &str = "SELECT e.wanted AS matched_email, c.*
   FROM unnest($2::text[]) AS e(wanted)
  CROSS JOIN LATERAL (
       SELECT * FROM cards
        WHERE tenant_id = (SELECT $1::uuid) AND email IS NOT NULL AND lower(email) = lower(e.wanted)
          AND status <> 'deleted'
        LIMIT 1 FOR UPDATE
   ) AS c";

/// The index PostgreSQL plans to probe for each batch look-up of `tenant_id` right now:
/// [`lock_by_users`], [`lock_by_uids`] and [`lock_by_emails`], in that order (`"seq scan"` for
/// none). Each should be its key's own index (`cards_by_user`, `cards_by_uid`,
/// `cards_by_email`); any other reads every card of the tenant once per command. A diagnostic
/// for operators, and what the tests hold the look-ups to.
pub async fn lookup_indexes(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<Vec<String>, StoreError> {
    let mut indexes = Vec::with_capacity(3);
    for statement in [BY_USERS, BY_UIDS, BY_EMAILS] {
        let explain = format!("EXPLAIN (FORMAT JSON) {statement}");
        let (plan,): (serde_json::Value,) = sqlx::query_as(sqlx::AssertSqlSafe(explain))
            .bind(tenant_id)
            .bind(["someone"].as_slice())
            .fetch_one(&mut *conn)
            .await?;
        indexes.push(probed_index(&plan[0]["Plan"]).unwrap_or_else(|| "seq scan".to_owned()));
    }
    Ok(indexes)
}

/// The first index a plan scans, depth first.
fn probed_index(plan: &serde_json::Value) -> Option<String> {
    if let Some(name) = plan.get("Index Name").and_then(serde_json::Value::as_str) {
        return Some(name.to_owned());
    }
    plan.get("Plans")?.as_array()?.iter().find_map(probed_index)
}

/// The cards of several users of one tenant, tombstones included, locked for update (one round
/// trip for a batch of commands; callers hold the users' [`lock_users`] locks first).
pub async fn lock_by_users(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    user_ids: &[&str],
) -> Result<Vec<Card>, StoreError> {
    // One index probe per user, whatever the planner believes: with `= ANY($2)` or a plain
    // join it may scan the tenant's cards whenever its statistics predate the tenant's growth
    // (a new tenant's initial sync), or settle on a bitmap plan that steps over every dead index
    // entry of updated rows on every call. The `LIMIT` keeps the sub-select from being
    // flattened into such a join.
    Ok(sqlx::query_as::<_, Card>(BY_USERS)
        .bind(tenant_id)
        .bind(user_ids)
        .fetch_all(conn)
        .await?)
}

/// The live (not deleted) cards with any of these UIDs, locked for update (one round trip for
/// the link look-ups of a batch; one index probe per UID, as in [`lock_by_users`]).
pub async fn lock_by_uids(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    uids: &[&str],
) -> Result<Vec<Card>, StoreError> {
    let mut uids = uids.to_vec();
    // One lock order for every writer.
    uids.sort_unstable();
    uids.dedup();
    Ok(sqlx::query_as::<_, Card>(BY_UIDS)
        .bind(tenant_id)
        .bind(&uids)
        .fetch_all(conn)
        .await?)
}

/// The live cards whose email matches one of `emails` case-insensitively, each paired with the
/// email it matched as given (PostgreSQL's `lower` decides, as the unique index does), locked
/// for update; one index probe per email (`email IS NOT NULL` lets the planner use the partial
/// index on `lower(email)`).
pub async fn lock_by_emails(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    emails: &[&str],
) -> Result<Vec<(String, Card)>, StoreError> {
    let mut emails = emails.to_vec();
    emails.sort_unstable();
    emails.dedup();
    let rows = sqlx::query(BY_EMAILS)
        .bind(tenant_id)
        .bind(&emails)
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("matched_email")?, Card::from_row(row)?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// The live card with this UID, locked for update.
pub async fn lock_by_uid(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    uid: &str,
) -> Result<Option<Card>, StoreError> {
    Ok(sqlx::query_as::<_, Card>(
        "SELECT * FROM cards WHERE tenant_id = $1 AND uid = $2 AND status <> 'deleted' FOR UPDATE",
    )
    .bind(tenant_id)
    .bind(uid)
    .fetch_optional(conn)
    .await?)
}

/// The live card with this email, compared case-insensitively, locked for update.
pub async fn lock_by_email(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    email: &str,
) -> Result<Option<Card>, StoreError> {
    Ok(sqlx::query_as::<_, Card>(
        "SELECT * FROM cards
         WHERE tenant_id = $1 AND email IS NOT NULL AND lower(email) = lower($2)
           AND status <> 'deleted'
         FOR UPDATE",
    )
    .bind(tenant_id)
    .bind(email)
    .fetch_optional(conn)
    .await?)
}

/// One card by id, locked for update.
pub async fn lock(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    card_id: Uuid,
) -> Result<Option<Card>, StoreError> {
    Ok(sqlx::query_as::<_, Card>(
        "SELECT * FROM cards WHERE tenant_id = $1 AND card_id = $2 FOR UPDATE",
    )
    .bind(tenant_id)
    .bind(card_id)
    .fetch_optional(conn)
    .await?)
}

/// One card by id.
pub async fn get(
    executor: impl PgExecutor<'_>,
    tenant_id: Uuid,
    card_id: Uuid,
) -> Result<Option<Card>, StoreError> {
    Ok(
        sqlx::query_as::<_, Card>("SELECT * FROM cards WHERE tenant_id = $1 AND card_id = $2")
            .bind(tenant_id)
            .bind(card_id)
            .fetch_optional(executor)
            .await?,
    )
}

/// Every card of a tenant, tombstones included, oldest first.
pub async fn list(executor: impl PgExecutor<'_>, tenant_id: Uuid) -> Result<Vec<Card>, StoreError> {
    Ok(
        sqlx::query_as::<_, Card>("SELECT * FROM cards WHERE tenant_id = $1 ORDER BY card_id")
            .bind(tenant_id)
            .fetch_all(executor)
            .await?,
    )
}

/// The cards of these directory users (tombstones included), without locking: what the
/// reconcile compares with the snapshot.
pub async fn of_users(
    executor: impl PgExecutor<'_>,
    tenant_id: Uuid,
    user_ids: &[String],
) -> Result<Vec<Card>, StoreError> {
    Ok(
        sqlx::query_as::<_, Card>("SELECT * FROM cards WHERE tenant_id = $1 AND user_id = ANY($2)")
            .bind(tenant_id)
            .bind(user_ids)
            .fetch_all(executor)
            .await?,
    )
}

/// Stores a new card.
pub async fn insert(conn: &mut PgConnection, card: &Card) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO cards (tenant_id, card_id, user_id, uid, email, status, fields, photo_etag,
                            applied_version, role, photo_sha256, photo_content_type,
                            created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7::json, $8, $9, $10, $11, $12, now(), now())",
    )
    .bind(card.tenant_id)
    .bind(card.card_id)
    .bind(&card.user_id)
    .bind(&card.uid)
    .bind(&card.email)
    .bind(card.status.as_str())
    .bind(json_text(&card.fields)?)
    .bind(&card.photo_etag)
    .bind(card.applied_version)
    .bind(card.role.as_str())
    .bind(card.photo.as_ref().map(|p| &p.sha256))
    .bind(card.photo.as_ref().map(|p| &p.content_type))
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes every mutable column of an existing card.
pub async fn update(conn: &mut PgConnection, card: &Card) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE cards
            SET user_id = $3, uid = $4, email = $5, status = $6, fields = $7::json, photo_etag = $8,
                applied_version = $9, role = $10, photo_sha256 = $11, photo_content_type = $12,
                updated_at = now()
          WHERE tenant_id = $1 AND card_id = $2",
    )
    .bind(card.tenant_id)
    .bind(card.card_id)
    .bind(&card.user_id)
    .bind(&card.uid)
    .bind(&card.email)
    .bind(card.status.as_str())
    .bind(json_text(&card.fields)?)
    .bind(&card.photo_etag)
    .bind(card.applied_version)
    .bind(card.role.as_str())
    .bind(card.photo.as_ref().map(|p| &p.sha256))
    .bind(card.photo.as_ref().map(|p| &p.content_type))
    .execute(conn)
    .await?;
    Ok(())
}

/// Removes rows for good (tombstones replaced by new cards for the same users), given as
/// `(tenant_id, card_id)`.
pub async fn remove_all(conn: &mut PgConnection, cards: &[(Uuid, Uuid)]) -> Result<(), StoreError> {
    if cards.is_empty() {
        return Ok(());
    }
    let (tenant_ids, card_ids): (Vec<Uuid>, Vec<Uuid>) = cards.iter().copied().unzip();
    sqlx::query(
        "DELETE FROM cards USING unnest($1::uuid[], $2::uuid[]) AS d(t, c)
          WHERE cards.tenant_id = d.t AND cards.card_id = d.c",
    )
    .bind(&tenant_ids)
    .bind(&card_ids)
    .execute(conn)
    .await?;
    Ok(())
}

/// The team (group) ids of a card, sorted.
pub async fn teams_of(
    executor: impl PgExecutor<'_>,
    tenant_id: Uuid,
    card_id: Uuid,
) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar::<_, String>(
        "SELECT group_id FROM card_teams WHERE tenant_id = $1 AND card_id = $2 ORDER BY group_id",
    )
    .bind(tenant_id)
    .bind(card_id)
    .fetch_all(executor)
    .await?)
}

/// The memberships of several cards at once (cards without any are absent).
pub async fn teams_of_cards(
    executor: impl PgExecutor<'_>,
    tenant_id: Uuid,
    card_ids: &[Uuid],
) -> Result<HashMap<Uuid, BTreeSet<String>>, StoreError> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        // One index probe per card, as in `lock_by_users` (`OFFSET 0` keeps it one).
        "SELECT k.card_id, t.group_id FROM unnest($2::uuid[]) AS k(card_id)
           CROSS JOIN LATERAL (
               SELECT group_id FROM card_teams
                WHERE tenant_id = $1 AND card_id = k.card_id
               OFFSET 0
           ) AS t",
    )
    .bind(tenant_id)
    .bind(card_ids)
    .fetch_all(executor)
    .await?;
    let mut teams: HashMap<Uuid, BTreeSet<String>> = HashMap::new();
    for (card_id, group_id) in rows {
        teams.entry(card_id).or_default().insert(group_id);
    }
    Ok(teams)
}

/// One card's wanted memberships, for [`set_teams_all`].
#[derive(Debug, Clone, Copy)]
pub struct Memberships<'a> {
    /// The tenant.
    pub tenant_id: Uuid,
    /// The card.
    pub card_id: Uuid,
    /// Its teams (group ids), each of which must exist.
    pub group_ids: &'a BTreeSet<String>,
}

/// Makes each card's memberships exactly its `group_ids`, in one statement: the delete and the
/// insert touch disjoint rows, so they can share a snapshot. Memberships that stay keep their
/// rows.
pub async fn set_teams_all(
    conn: &mut PgConnection,
    cards: &[Memberships<'_>],
) -> Result<(), StoreError> {
    if cards.is_empty() {
        return Ok(());
    }
    let (card_tenants, card_ids): (Vec<Uuid>, Vec<Uuid>) = cards
        .iter()
        .map(|card| (card.tenant_id, card.card_id))
        .unzip();
    let mut tenants = Vec::new();
    let mut cards_of = Vec::new();
    let mut groups = Vec::new();
    for card in cards {
        for group_id in card.group_ids {
            tenants.push(card.tenant_id);
            cards_of.push(card.card_id);
            groups.push(group_id.as_str());
        }
    }
    sqlx::query(
        "WITH wanted AS (
             SELECT * FROM unnest($3::uuid[], $4::uuid[], $5::text[]) AS w(t, c, g)
         ), removed AS (
             DELETE FROM card_teams ct USING unnest($1::uuid[], $2::uuid[]) AS d(t, c)
              WHERE ct.tenant_id = d.t AND ct.card_id = d.c
                AND NOT EXISTS (SELECT 1 FROM wanted w
                                 WHERE w.t = ct.tenant_id AND w.c = ct.card_id
                                   AND w.g = ct.group_id)
         )
         INSERT INTO card_teams (tenant_id, card_id, group_id)
         SELECT t, c, g FROM wanted
         ON CONFLICT DO NOTHING",
    )
    .bind(&card_tenants)
    .bind(&card_ids)
    .bind(&tenants)
    .bind(&cards_of)
    .bind(&groups)
    .execute(conn)
    .await?;
    Ok(())
}
