//! Set-based writes of several cards: one array per column, one statement for all.

use super::Card;
use crate::{StoreError, json_text};
use sqlx::PgConnection;
use uuid::Uuid;

/// The columns of several cards, one array per column, for set-based statements.
struct Columns {
    tenant_ids: Vec<Uuid>,
    card_ids: Vec<Uuid>,
    user_ids: Vec<Option<String>>,
    uids: Vec<Option<String>>,
    emails: Vec<Option<String>>,
    statuses: Vec<&'static str>,
    fields: Vec<String>,
    photo_etags: Vec<Option<String>>,
    versions: Vec<i64>,
    roles: Vec<&'static str>,
    photo_hashes: Vec<Option<String>>,
    photo_types: Vec<Option<String>>,
}

impl Columns {
    fn of(cards: &[&Card]) -> Result<Self, StoreError> {
        let mut columns = Self {
            tenant_ids: Vec::with_capacity(cards.len()),
            card_ids: Vec::with_capacity(cards.len()),
            user_ids: Vec::with_capacity(cards.len()),
            uids: Vec::with_capacity(cards.len()),
            emails: Vec::with_capacity(cards.len()),
            statuses: Vec::with_capacity(cards.len()),
            fields: Vec::with_capacity(cards.len()),
            photo_etags: Vec::with_capacity(cards.len()),
            versions: Vec::with_capacity(cards.len()),
            roles: Vec::with_capacity(cards.len()),
            photo_hashes: Vec::with_capacity(cards.len()),
            photo_types: Vec::with_capacity(cards.len()),
        };
        for card in cards {
            columns.tenant_ids.push(card.tenant_id);
            columns.card_ids.push(card.card_id);
            columns.user_ids.push(card.user_id.clone());
            columns.uids.push(card.uid.clone());
            columns.emails.push(card.email.clone());
            columns.statuses.push(card.status.as_str());
            columns.fields.push(json_text(&card.fields)?);
            columns.photo_etags.push(card.photo_etag.clone());
            columns.versions.push(card.applied_version);
            columns.roles.push(card.role.as_str());
            let photo = card.photo.as_ref();
            columns.photo_hashes.push(photo.map(|p| p.sha256.clone()));
            columns
                .photo_types
                .push(photo.map(|p| p.content_type.clone()));
        }
        Ok(columns)
    }
}

/// Stores several new cards in one statement.
pub async fn insert_all(conn: &mut PgConnection, cards: &[&Card]) -> Result<(), StoreError> {
    execute_with_columns(
        conn,
        "INSERT INTO cards (tenant_id, card_id, user_id, uid, email, status, fields, photo_etag,
                            applied_version, role, photo_sha256, photo_content_type,
                            created_at, updated_at)
         SELECT t, c, u, uid, e, s, f::json, p, v, r, ph, pt, now(), now()
           FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
                       $7::text[], $8::text[], $9::int8[], $10::text[], $11::text[], $12::text[])
                AS n(t, c, u, uid, e, s, f, p, v, r, ph, pt)",
        cards,
    )
    .await
}

/// Writes every mutable column of several existing cards in one statement (each card at most
/// once).
pub async fn update_all(conn: &mut PgConnection, cards: &[&Card]) -> Result<(), StoreError> {
    execute_with_columns(
        conn,
        "UPDATE cards
            SET user_id = n.u, uid = n.uid, email = n.e, status = n.s, fields = n.f::json,
                photo_etag = n.p, applied_version = n.v, role = n.r, photo_sha256 = n.ph,
                photo_content_type = n.pt, updated_at = now()
           FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
                       $7::text[], $8::text[], $9::int8[], $10::text[], $11::text[], $12::text[])
                AS n(t, c, u, uid, e, s, f, p, v, r, ph, pt)
          WHERE cards.tenant_id = n.t AND cards.card_id = n.c",
        cards,
    )
    .await
}

/// Runs `statement` with the columns of `cards` as `$1`…`$12`, in [`Columns`] order; nothing
/// for no cards.
async fn execute_with_columns(
    conn: &mut PgConnection,
    statement: &'static str,
    cards: &[&Card],
) -> Result<(), StoreError> {
    if cards.is_empty() {
        return Ok(());
    }
    let c = Columns::of(cards)?;
    sqlx::query(statement)
        .bind(&c.tenant_ids)
        .bind(&c.card_ids)
        .bind(&c.user_ids)
        .bind(&c.uids)
        .bind(&c.emails)
        .bind(&c.statuses)
        .bind(&c.fields)
        .bind(&c.photo_etags)
        .bind(&c.versions)
        .bind(&c.roles)
        .bind(&c.photo_hashes)
        .bind(&c.photo_types)
        .execute(conn)
        .await?;
    Ok(())
}
