//! The transactional outbox: messages written in the same transaction as the change they
//! announce, and published later by a relay that deletes them once the broker confirmed them.
//!
//! Delivery is at least once: a relay that dies between the broker's confirm and its commit
//! publishes the same row again, with the same message id, so consumers can deduplicate.

use crate::{StoreError, json_text};
use sqlx::{FromRow, PgConnection, PgExecutor};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use uuid::Uuid;

/// A message to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The tenant.
    pub tenant_id: Uuid,
    /// The message id it will be published with (fixed now, so a republish is the same message).
    pub message_id: Uuid,
    /// Full exchange name (topology prefix included): a relay publishes only its own rows.
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// AMQP `type`.
    pub message_type: String,
    /// Encoded body.
    pub payload: Vec<u8>,
    /// String headers (tenant, trace context).
    pub headers: BTreeMap<String, String>,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Message {
    /// Position in the outbox.
    pub id: i64,
    /// The tenant.
    pub tenant_id: Uuid,
    /// The message id.
    pub message_id: Uuid,
    /// Full exchange name.
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// AMQP `type`.
    pub message_type: String,
    /// Encoded body.
    pub payload: Vec<u8>,
    /// String headers.
    #[sqlx(json)]
    pub headers: BTreeMap<String, String>,
    /// When it was enqueued.
    pub created_at: OffsetDateTime,
}

/// How far behind the relay is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Unpublished messages.
    pub pending: i64,
    /// Enqueue time of the oldest unpublished message.
    pub oldest: Option<OffsetDateTime>,
}

/// Enqueues a message (inside the transaction of the change).
pub async fn enqueue(conn: &mut PgConnection, message: &NewMessage) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO outbox (tenant_id, message_id, exchange, routing_key, message_type, payload, headers)
         VALUES ($1, $2, $3, $4, $5, $6, $7::json)",
    )
    .bind(message.tenant_id)
    .bind(message.message_id)
    .bind(&message.exchange)
    .bind(&message.routing_key)
    .bind(&message.message_type)
    .bind(&message.payload)
    .bind(json_text(&message.headers)?)
    .execute(conn)
    .await?;
    Ok(())
}

/// Enqueues several messages with one statement (inside the transaction of the changes), in
/// slice order, so a batch of card commands costs one round trip for all of its events.
pub async fn enqueue_all(
    conn: &mut PgConnection,
    messages: &[NewMessage],
) -> Result<(), StoreError> {
    if messages.is_empty() {
        return Ok(());
    }
    let tenants: Vec<Uuid> = messages.iter().map(|m| m.tenant_id).collect();
    let ids: Vec<Uuid> = messages.iter().map(|m| m.message_id).collect();
    let exchanges: Vec<&str> = messages.iter().map(|m| m.exchange.as_str()).collect();
    let keys: Vec<&str> = messages.iter().map(|m| m.routing_key.as_str()).collect();
    let types: Vec<&str> = messages.iter().map(|m| m.message_type.as_str()).collect();
    let payloads: Vec<&[u8]> = messages.iter().map(|m| m.payload.as_slice()).collect();
    let headers: Vec<String> = messages
        .iter()
        .map(|m| json_text(&m.headers))
        .collect::<Result<_, _>>()?;
    // WITH ORDINALITY + ORDER BY keeps the ids (the relay's publishing order) in slice order.
    sqlx::query(
        "INSERT INTO outbox (tenant_id, message_id, exchange, routing_key, message_type, payload, headers)
         SELECT t, m, x, k, ty, p, h::json
           FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::bytea[],
                       $7::text[])
                WITH ORDINALITY AS r(t, m, x, k, ty, p, h, n)
          ORDER BY n",
    )
    .bind(&tenants)
    .bind(&ids)
    .bind(&exchanges)
    .bind(&keys)
    .bind(&types)
    .bind(&payloads)
    .bind(&headers)
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes up to `limit` messages for `exchanges` with an id above `after`, oldest first:
/// deletes them in the caller's transaction and returns them. The caller publishes them and
/// commits only after the broker confirmed every one; a rollback (or a crash) puts them back.
/// Rows another relay's transaction holds are skipped, so relays work in parallel without
/// doubling.
///
/// Deleting is what publishing costs PostgreSQL: one dead tuple per message, where marking it
/// wrote a new row version and an entry in each index.
///
/// `after` lets a relay start its index scan near the rows it has not seen yet: every taken row
/// leaves a dead index entry until a vacuum, and a scan from the start walks all of them
/// (millions on a busy outbox without autovacuum).
pub async fn take(
    conn: &mut PgConnection,
    exchanges: &[String],
    after: i64,
    limit: i64,
) -> Result<Vec<Message>, StoreError> {
    let mut messages = sqlx::query_as::<_, Message>(
        "DELETE FROM outbox
          WHERE id IN (SELECT id FROM outbox
                        WHERE exchange = ANY($1) AND id > $2
                        ORDER BY id LIMIT $3
                          FOR UPDATE SKIP LOCKED)
         RETURNING id, tenant_id, message_id, exchange, routing_key, message_type, payload,
                   headers, created_at",
    )
    .bind(exchanges)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    // RETURNING follows the plan, not the sub-select's order.
    messages.sort_unstable_by_key(|message| message.id);
    Ok(messages)
}

/// The backlog of the rows for `exchanges`.
pub async fn backlog(
    executor: impl PgExecutor<'_>,
    exchanges: &[String],
) -> Result<Backlog, StoreError> {
    let (pending, oldest): (i64, Option<OffsetDateTime>) =
        sqlx::query_as("SELECT count(*), min(created_at) FROM outbox WHERE exchange = ANY($1)")
            .bind(exchanges)
            .fetch_one(executor)
            .await?;
    Ok(Backlog { pending, oldest })
}

/// Every message of a tenant still waiting for the relay, oldest first (for tests and tools).
pub async fn for_tenant(
    executor: impl PgExecutor<'_>,
    tenant_id: Uuid,
) -> Result<Vec<Message>, StoreError> {
    Ok(sqlx::query_as::<_, Message>(
        "SELECT id, tenant_id, message_id, exchange, routing_key, message_type, payload, headers, created_at
           FROM outbox WHERE tenant_id = $1 ORDER BY id",
    )
    .bind(tenant_id)
    .fetch_all(executor)
    .await?)
}
