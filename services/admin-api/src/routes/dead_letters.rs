//! `/v1/dead-letters`: what each work queue dead-lettered (type, tenant, error, attempts),
//! replaying one to its work queue, or discarding one. A caller limited to its tenants sees
//! and settles only their messages.

use super::{Items, audit};
use crate::error::ApiError;
use crate::openapi::Refusals;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use cardsync_auth::{Principal, TenantAccess};
use cardsync_bus::{BusError, DeadLetter, Settled, WorkQueue};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

pub(super) fn configure(config: &mut web::ServiceConfig) {
    config
        .service(web::resource("/dead-letters").route(web::get().to(list)))
        .service(web::resource("/dead-letters/{queue}/{message}").route(web::delete().to(discard)))
        .service(
            web::resource("/dead-letters/{queue}/{message}/replay").route(web::post().to(replay)),
        );
}

/// A dead-lettered message as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DeadLetterView {
    /// The work queue it came from (short name, e.g. `card-writer.live`).
    queue: String,
    /// How replay and discard name it.
    message_id: String,
    /// The message type.
    message_type: String,
    tenant_id: Option<String>,
    /// The last error.
    error: Option<String>,
    /// Why it was dead-lettered.
    reason: Option<String>,
    /// Deliveries it had.
    attempts: Option<i64>,
    /// Body size.
    bytes: usize,
}

fn view(state: &AppState, letter: DeadLetter) -> DeadLetterView {
    let prefix = state.topology.prefix();
    DeadLetterView {
        queue: letter
            .queue
            .strip_prefix(prefix)
            .unwrap_or(&letter.queue)
            .to_owned(),
        message_id: letter.message_id,
        message_type: letter.message_type,
        tenant_id: letter.tenant,
        error: letter.error,
        reason: letter.reason,
        attempts: letter.attempts,
        bytes: letter.bytes,
    }
}

/// Whether the caller may see a dead letter: every one, or those of its tenants.
fn visible(caller: &Principal) -> impl Fn(&DeadLetter) -> bool + '_ {
    move |letter| match &caller.tenants {
        TenantAccess::All => true,
        TenantAccess::Only(tenants) => letter
            .tenant
            .as_deref()
            .and_then(|tenant| Uuid::parse_str(tenant).ok())
            .is_some_and(|tenant| tenants.contains(&tenant)),
    }
}

fn broker_failed(error: BusError) -> ApiError {
    ApiError::Unavailable {
        what: "the message broker",
        source: error.into(),
    }
}

fn work_queue(state: &AppState, name: &str) -> Result<WorkQueue, ApiError> {
    state
        .dead_letters
        .queue(name)
        .ok_or_else(|| ApiError::not_found("queue", name))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeadLettersQuery {
    /// One work queue (`delta-worker.changes`, `card-writer.live`, …); none: every queue.
    queue: Option<String>,
    /// At most this many per queue (1 to 500, default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u16>,
}

#[utoipa::path(get, operation_id = "dead_letters_list", path = "/v1/dead-letters", tag = "dead letters", params(DeadLettersQuery), responses((status = 200, description = "Dead letters, oldest first per queue", body = Items<DeadLetterView>), Refusals))]
pub(crate) async fn list(
    state: web::Data<AppState>,
    caller: Principal,
    query: web::Query<DeadLettersQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = usize::from(query.limit.unwrap_or(100));
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid-limit",
            "limit must be between 1 and 500",
        ));
    }
    let queues = match &query.queue {
        Some(name) => vec![work_queue(&state, name)?],
        None => state.dead_letters.queues(),
    };
    let mut items = Vec::new();
    for queue in &queues {
        let letters = state
            .dead_letters
            .list(queue, limit, visible(&caller))
            .await
            .map_err(broker_failed)?;
        items.extend(letters.into_iter().map(|letter| view(&state, letter)));
    }
    Ok(HttpResponse::Ok().json(Items { items }))
}

async fn settle(
    state: &AppState,
    caller: &Principal,
    queue: &str,
    message: &str,
    replay: bool,
) -> Result<DeadLetterView, ApiError> {
    let queue = work_queue(state, queue)?;
    if message.is_empty() || message.len() > 256 {
        return Err(ApiError::bad_request(
            "invalid-message-id",
            "a message id is 1 to 256 bytes",
        ));
    }
    let settled = if replay {
        state
            .dead_letters
            .replay(&queue, message, visible(caller))
            .await
    } else {
        state
            .dead_letters
            .discard(&queue, message, visible(caller))
            .await
    }
    .map_err(broker_failed)?;
    let Settled::Done(letter) = settled else {
        return Err(ApiError::not_found("dead letter", message));
    };
    let view = view(state, letter);
    let tenant = view
        .tenant_id
        .as_deref()
        .and_then(|t| Uuid::parse_str(t).ok());
    let action = if replay {
        "dead_letter.replay"
    } else {
        "dead_letter.discard"
    };
    audit(
        &state.pool,
        caller,
        tenant,
        action,
        Some(&view.message_id),
        Some(json!(view)),
        None,
    )
    .await?;
    Ok(view)
}

#[utoipa::path(post, operation_id = "dead_letters_replay", path = "/v1/dead-letters/{queue}/{message}/replay", tag = "dead letters", params(("queue" = String, Path, description = "The work queue"), ("message" = String, Path, description = "The message id")), responses((status = 200, description = "Published to its work queue again and removed from the dead letters", body = DeadLetterView), Refusals))]
pub(crate) async fn replay(
    state: web::Data<AppState>,
    caller: Principal,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (queue, message) = path.into_inner();
    let view = settle(&state, &caller, &queue, &message, true).await?;
    Ok(HttpResponse::Ok().json(view))
}

#[utoipa::path(delete, operation_id = "dead_letters_discard", path = "/v1/dead-letters/{queue}/{message}", tag = "dead letters", params(("queue" = String, Path, description = "The work queue"), ("message" = String, Path, description = "The message id")), responses((status = 204, description = "Removed for good"), Refusals))]
pub(crate) async fn discard(
    state: web::Data<AppState>,
    caller: Principal,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (queue, message) = path.into_inner();
    settle(&state, &caller, &queue, &message, false).await?;
    Ok(HttpResponse::NoContent().finish())
}
