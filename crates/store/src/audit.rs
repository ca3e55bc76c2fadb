//! The audit log: one row per change to a card, with its cause, the message that caused it,
//! the status before and after, and the state of every field that changed, before and after.
//! A new card's row holds all its fields; any later row only the fields it changed, so a row
//! costs what the change is, not two copies of the card, and replaying a card's rows in order
//! gives its fields at every point.

use crate::{StoreError, json_text};
use cardsync_rules::FieldStates;
use sqlx::types::Json;
use sqlx::{FromRow, PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

/// One change to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// The tenant.
    pub tenant_id: Uuid,
    /// The card.
    pub card_id: Uuid,
    /// What happened (`created`, `updated`, `linked`, `deactivated`, `reactivated`, `deleted`,
    /// `local_edit`, …).
    pub action: String,
    /// Why (the message's cause, or `local_edit`).
    pub cause: String,
    /// The bus message behind the change, if any.
    pub message_id: Option<String>,
    /// The directory version applied, if any.
    pub version: Option<i64>,
    /// Status before (`None` for a new card).
    pub status_before: Option<String>,
    /// Status after.
    pub status_after: Option<String>,
    /// The changed fields' states before (`None` for a new card).
    pub fields_before: Option<FieldStates>,
    /// The changed fields' states after (every field for a new card).
    pub fields_after: Option<FieldStates>,
}

/// One stored audit row.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct AuditRecord {
    /// Insertion order.
    pub id: i64,
    /// The tenant.
    pub tenant_id: Uuid,
    /// The card.
    pub card_id: Uuid,
    /// What happened.
    pub action: String,
    /// Why.
    pub cause: String,
    /// The bus message behind the change.
    pub message_id: Option<String>,
    /// The directory version applied.
    pub version: Option<i64>,
    /// Status before.
    pub status_before: Option<String>,
    /// Status after.
    pub status_after: Option<String>,
    /// The changed fields' states before.
    pub fields_before: Option<Json<FieldStates>>,
    /// The changed fields' states after.
    pub fields_after: Option<Json<FieldStates>>,
    /// When.
    pub at: OffsetDateTime,
}

/// Appends an entry (inside the transaction of the change it describes).
pub async fn record(conn: &mut PgConnection, entry: &AuditEntry) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_log (tenant_id, card_id, action, cause, message_id, version,
                                status_before, status_after, fields_before, fields_after)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::json, $10::json)",
    )
    .bind(entry.tenant_id)
    .bind(entry.card_id)
    .bind(&entry.action)
    .bind(&entry.cause)
    .bind(&entry.message_id)
    .bind(entry.version)
    .bind(&entry.status_before)
    .bind(&entry.status_after)
    .bind(entry.fields_before.as_ref().map(json_text).transpose()?)
    .bind(entry.fields_after.as_ref().map(json_text).transpose()?)
    .execute(conn)
    .await?;
    Ok(())
}

/// Appends several entries with one statement (inside the transaction of the changes they
/// describe), in slice order: the card-writer commits a batch of commands at once, and one
/// round trip per batch instead of one per command is most of what batching saves.
pub async fn record_all(conn: &mut PgConnection, entries: &[AuditEntry]) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let tenants: Vec<Uuid> = entries.iter().map(|e| e.tenant_id).collect();
    let cards: Vec<Uuid> = entries.iter().map(|e| e.card_id).collect();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    let causes: Vec<&str> = entries.iter().map(|e| e.cause.as_str()).collect();
    let message_ids: Vec<Option<&str>> = entries.iter().map(|e| e.message_id.as_deref()).collect();
    let versions: Vec<Option<i64>> = entries.iter().map(|e| e.version).collect();
    let before: Vec<Option<&str>> = entries.iter().map(|e| e.status_before.as_deref()).collect();
    let after: Vec<Option<&str>> = entries.iter().map(|e| e.status_after.as_deref()).collect();
    let fields_before = json_texts(entries.iter().map(|e| e.fields_before.as_ref()))?;
    let fields_after = json_texts(entries.iter().map(|e| e.fields_after.as_ref()))?;
    // WITH ORDINALITY + ORDER BY keeps the identity ids in slice order (the history's order).
    sqlx::query(
        "INSERT INTO audit_log (tenant_id, card_id, action, cause, message_id, version,
                                status_before, status_after, fields_before, fields_after)
         SELECT t, c, a, ca, m, v, sb, sa, fb::json, fa::json
           FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::bigint[],
                       $7::text[], $8::text[], $9::text[], $10::text[])
                WITH ORDINALITY AS r(t, c, a, ca, m, v, sb, sa, fb, fa, n)
          ORDER BY n",
    )
    .bind(&tenants)
    .bind(&cards)
    .bind(&actions)
    .bind(&causes)
    .bind(&message_ids)
    .bind(&versions)
    .bind(&before)
    .bind(&after)
    .bind(&fields_before)
    .bind(&fields_after)
    .execute(conn)
    .await?;
    Ok(())
}

/// The history of one card, oldest first.
pub async fn for_card(
    executor: impl PgExecutor<'_>,
    tenant_id: Uuid,
    card_id: Uuid,
) -> Result<Vec<AuditRecord>, StoreError> {
    Ok(sqlx::query_as::<_, AuditRecord>(
        "SELECT id, tenant_id, card_id, action, cause, message_id, version, status_before,
                status_after, fields_before, fields_after, at
           FROM audit_log WHERE tenant_id = $1 AND card_id = $2 ORDER BY id",
    )
    .bind(tenant_id)
    .bind(card_id)
    .fetch_all(executor)
    .await?)
}

/// The JSON texts of optional field states, for a `text[]` cast to `json`.
fn json_texts<'a>(
    states: impl Iterator<Item = Option<&'a FieldStates>>,
) -> Result<Vec<Option<String>>, StoreError> {
    states
        .map(|state| state.map(json_text).transpose())
        .collect()
}
