//! `/subscriptions`: create, list, get, renew, delete and reauthorize, over [`crate::subscriptions`].

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes, Data};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{Map, Value, json};

use crate::state::{Sim, lock};
use crate::subscriptions::SubscriptionBody;

use super::reads::{collection, skip_after};
use super::{CONTEXT_BASE, GROUP_READ, GraphError, Params, Reply, USER_READ, admit, finish, run};

fn subscription_perms(body: &SubscriptionBody) -> &'static [&'static str] {
    match body.resource.as_deref().map(|r| r.trim_start_matches('/')) {
        Some(r) if r.starts_with("groups") => GROUP_READ,
        _ => USER_READ,
    }
}

fn with_context(mut v: Value) -> Value {
    v["@odata.context"] = json!(format!("{CONTEXT_BASE}#subscriptions/$entity"));
    v
}

pub(super) async fn create_subscription(
    sim: Data<Sim>,
    req: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    let ep = "subscriptions.create";
    let parsed: Result<SubscriptionBody, _> = serde_json::from_slice(&body);
    let perms = parsed.as_ref().map_or(USER_READ, subscription_perms);
    let ctx = match admit(&sim, &req, ep, perms, None).await {
        Ok(ctx) => ctx,
        Err(e) => return finish(&sim, &req, ep, None, Err(e)),
    };
    let res = match parsed {
        Ok(b) => sim
            .create_subscription(&ctx.tenant, &ctx.app, b)
            .await
            .map(|s| Reply::Json(StatusCode::CREATED, with_context(s.to_json()), Vec::new()))
            .map_err(GraphError::from),
        Err(e) => Err(GraphError::BadRequest(
            "InvalidRequest",
            format!("The request body is not valid JSON: {e}"),
        )),
    };
    finish(&sim, &req, ep, Some(&ctx), res)
}

/// `GET /subscriptions`: this app's subscriptions in the token's tenant, ordered by id, paged with a
/// `$skiptoken` nextLink (the page size is a policy switch), without their `clientState`.
pub(super) async fn list_subscriptions(
    sim: Data<Sim>,
    req: HttpRequest,
    q: Params,
) -> HttpResponse {
    run(&sim, &req, "subscriptions.list", &[], None, |ctx| {
        let after = skip_after(&q)?;
        let page = lock(&sim.sub_policy).list_page_size.max(1);
        let items: Vec<(String, Map<String, Value>)> = sim
            .subscriptions_of(&ctx.tenant, &ctx.app.client_id)
            .iter()
            .filter(|s| after.as_ref().is_none_or(|a| s.id > *a))
            .take(page + 1)
            .filter_map(|s| match s.to_listed_json() {
                Value::Object(m) => Some((s.id.clone(), m)),
                _ => None,
            })
            .collect();
        Ok(collection(
            &req,
            format!("{CONTEXT_BASE}#subscriptions"),
            items,
            page,
            None,
        ))
    })
    .await
}

pub(super) async fn get_subscription(
    sim: Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    run(&sim, &req, "subscriptions.get", &[], None, |ctx| {
        let s = sim.subscription(&ctx.tenant, &ctx.app.client_id, &id)?;
        Ok(Reply::Json(
            StatusCode::OK,
            with_context(s.to_json()),
            Vec::new(),
        ))
    })
    .await
}

pub(super) async fn update_subscription(
    sim: Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
    body: Bytes,
) -> HttpResponse {
    let ep = "subscriptions.update";
    let ctx = match admit(&sim, &req, ep, &[], None).await {
        Ok(ctx) => ctx,
        Err(e) => return finish(&sim, &req, ep, None, Err(e)),
    };
    let res = match serde_json::from_slice::<SubscriptionBody>(&body) {
        Ok(b) => sim
            .update_subscription(&ctx.tenant, &ctx.app.client_id, &id, b)
            .await
            .map(|s| Reply::Json(StatusCode::OK, with_context(s.to_json()), Vec::new()))
            .map_err(GraphError::from),
        Err(e) => Err(GraphError::BadRequest(
            "InvalidRequest",
            format!("The request body is not valid JSON: {e}"),
        )),
    };
    finish(&sim, &req, ep, Some(&ctx), res)
}

pub(super) async fn delete_subscription(
    sim: Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    run(&sim, &req, "subscriptions.delete", &[], None, |ctx| {
        sim.delete_subscription(&ctx.tenant, &ctx.app.client_id, &id)?;
        Ok(Reply::Empty)
    })
    .await
}

pub(super) async fn reauthorize_subscription(
    sim: Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    run(&sim, &req, "subscriptions.reauthorize", &[], None, |ctx| {
        sim.reauthorize_subscription(&ctx.tenant, &ctx.app.client_id, &id)?;
        Ok(Reply::Empty)
    })
    .await
}
