//! The Graph-facing HTTP surface: the token endpoint, `/v1.0` directory reads, delta and subscriptions.
//!
//! Every handler goes through [`admit`] (faults, bearer, permission, throttle) and [`finish`] (headers, error
//! envelope, counters), so the handlers themselves only parse the request and call the domain code. The handlers
//! live in submodules by area: directory reads, delta, subscriptions, and the identity platform endpoints.

mod answers;
mod delta_pages;
mod error;
mod extensions_api;
mod identity_api;
mod reads;
mod subscription_api;

pub use answers::{stamp_ids, unknown_route};
pub use error::GraphError;

use delta_pages::{groups_delta, users_delta};
use error::error_response;
use identity_api::{instance_discovery, jwks, openid_configuration, token};
use reads::{
    count_groups, count_transitive_members, count_transitive_users, count_users, get_group,
    get_user, list_groups, list_users, photo_meta, photo_size_value, photo_value, role_members,
    transitive_members, transitive_users,
};
use subscription_api::{
    create_subscription, delete_subscription, get_subscription, list_subscriptions,
    reauthorize_subscription, update_subscription,
};

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::web::{self, Query};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use serde_json::Value;

use crate::clock::graph_time;
use crate::identity::{AppRegistration, BearerError};
use crate::state::{Sim, Tenant, lock, read};
use crate::throttle::{self, Charge, FaultKind, format_retry_after};

const GRAPH_BASE: &str = "https://graph.microsoft.com/v1.0";
const CONTEXT_BASE: &str = "https://graph.microsoft.com/v1.0/$metadata";
const JSON_CT: &str = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";
const USER_READ: &[&str] = &[
    "User.Read.All",
    "User.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
const PHOTO_READ: &[&str] = &[
    "User.Read.All",
    "User.ReadWrite.All",
    "ProfilePhoto.Read.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
const GROUP_READ: &[&str] = &[
    "Group.Read.All",
    "Group.ReadWrite.All",
    "GroupMember.Read.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
const ROLE_READ: &[&str] = &[
    "RoleManagement.Read.Directory",
    "RoleManagement.ReadWrite.Directory",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
const MAX_FILTER_IDS: usize = 50;

/// Registers the Graph and identity routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/{tenant}/oauth2/v2.0/token", web::post().to(token))
        .route("/{tenant}/discovery/v2.0/keys", web::get().to(jwks))
        .route("/{tenant}/discovery/keys", web::get().to(jwks))
        .route(
            "/{tenant}/discovery/instance",
            web::get().to(instance_discovery),
        )
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            web::get().to(openid_configuration),
        )
        .route("/v1.0/users", web::get().to(list_users))
        .route("/v1.0/users/$count", web::get().to(count_users))
        .route("/v1.0/users/delta", web::get().to(users_delta))
        .route("/v1.0/users/delta()", web::get().to(users_delta))
        .route(
            "/v1.0/users/microsoft.graph.delta()",
            web::get().to(users_delta),
        )
        .route(
            "/v1.0/users/microsoft.graph.delta",
            web::get().to(users_delta),
        )
        .route("/v1.0/users/{id}", web::get().to(get_user))
        .route("/v1.0/users/{id}/photo", web::get().to(photo_meta))
        .route("/v1.0/users/{id}/photo/$value", web::get().to(photo_value))
        .route(
            "/v1.0/users/{id}/photos/{size}/$value",
            web::get().to(photo_size_value),
        )
        .route("/v1.0/groups", web::get().to(list_groups))
        .route("/v1.0/groups/$count", web::get().to(count_groups))
        .route("/v1.0/groups/delta", web::get().to(groups_delta))
        .route("/v1.0/groups/delta()", web::get().to(groups_delta))
        .route(
            "/v1.0/groups/microsoft.graph.delta()",
            web::get().to(groups_delta),
        )
        .route(
            "/v1.0/groups/microsoft.graph.delta",
            web::get().to(groups_delta),
        )
        .route("/v1.0/groups/{id}", web::get().to(get_group))
        .route(
            "/v1.0/groups/{id}/transitiveMembers",
            web::get().to(transitive_members),
        )
        .route(
            "/v1.0/groups/{id}/transitiveMembers/$count",
            web::get().to(count_transitive_members),
        )
        // The SDKs cast with the `graph.` alias; Graph accepts it next to `microsoft.graph.`.
        .route(
            "/v1.0/groups/{id}/transitiveMembers/{cast:(microsoft\\.)?graph\\.user}",
            web::get().to(transitive_users),
        )
        .route(
            "/v1.0/groups/{id}/transitiveMembers/{cast:(microsoft\\.)?graph\\.user}/$count",
            web::get().to(count_transitive_users),
        )
        .route(
            "/v1.0/directoryRoles/{key}/members",
            web::get().to(role_members),
        )
        .route(
            "/v1.0/directoryObjects/getAvailableExtensionProperties",
            web::post().to(extensions_api::available_extension_properties),
        )
        .route(
            "/v1.0/directoryObjects/microsoft.graph.getAvailableExtensionProperties",
            web::post().to(extensions_api::available_extension_properties),
        )
        .route("/v1.0/subscriptions", web::post().to(create_subscription))
        .route("/v1.0/subscriptions", web::get().to(list_subscriptions))
        .route("/v1.0/subscriptions/{id}", web::get().to(get_subscription))
        .route(
            "/v1.0/subscriptions/{id}",
            web::patch().to(update_subscription),
        )
        .route(
            "/v1.0/subscriptions/{id}",
            web::delete().to(delete_subscription),
        )
        .route(
            "/v1.0/subscriptions/{id}/reauthorize",
            web::post().to(reauthorize_subscription),
        );
}

/// Everything a handler needs after admission.
#[derive(Debug)]
pub struct Ctx {
    tenant: Arc<Tenant>,
    app: AppRegistration,
    ru: u32,
    used_fraction: f64,
}

/// Resource-unit parameters of a request.
#[derive(Debug, Clone, Copy)]
struct Cost {
    base: u32,
    has_select: bool,
    top: Option<usize>,
}

/// Applies faults, authenticates, checks permissions and charges the throttle bucket.
async fn admit(
    sim: &Sim,
    req: &HttpRequest,
    endpoint: &str,
    perms: &[&str],
    cost: Option<Cost>,
) -> Result<Ctx, GraphError> {
    apply_faults(sim, endpoint).await?;
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(BearerError::Missing)?;
    let claims = sim.keys.verify(bearer, sim.clock.now().unix_timestamp())?;
    let tenant = sim.tenant(&claims.tid).ok_or(BearerError::Invalid)?;
    let app = read(&tenant.apps)
        .get(&claims.appid)
        .cloned()
        .ok_or(BearerError::Invalid)?;
    // Permissions are read from the token, like Graph; a grant change needs a new token.
    if !perms.is_empty() && !claims.roles.iter().any(|r| perms.contains(&r.as_str())) {
        return Err(GraphError::Forbidden);
    }
    let mut ctx = Ctx {
        tenant,
        app,
        ru: 0,
        used_fraction: 0.0,
    };
    if let Some(cost) = cost {
        charge(sim, &mut ctx, cost)?;
    }
    Ok(ctx)
}

async fn apply_faults(sim: &Sim, endpoint: &str) -> Result<(), GraphError> {
    let plan = throttle::plan_faults(&mut lock(&sim.faults), endpoint);
    if !plan.delay.is_zero() {
        tokio::time::sleep(plan.delay).await;
    }
    match plan.outcome {
        None | Some((FaultKind::Slow, _)) => Ok(()),
        Some((FaultKind::Unavailable, ra)) => Err(GraphError::Unavailable(ra)),
        Some((FaultKind::Throttle, ra)) => Err(GraphError::Throttled {
            retry_after: ra,
            scope: "Tenant_Application/ReadWrite".into(),
        }),
        Some((FaultKind::Drop, _)) => Err(GraphError::Dropped),
    }
}

fn charge(sim: &Sim, ctx: &mut Ctx, cost: Cost) -> Result<(), GraphError> {
    let ru = throttle::ru_cost(cost.base, cost.has_select, cost.top);
    let users = read(&ctx.tenant.dir).active_users();
    let profile = lock(&sim.throttle_profile).clone();
    let outcome =
        lock(&sim.throttle).charge(&profile, &ctx.tenant.id, &ctx.app.client_id, users, ru);
    ctx.ru = ru;
    match outcome {
        Charge::Admitted { used_fraction } => {
            ctx.used_fraction = used_fraction;
            Ok(())
        }
        Charge::Throttled { retry_after } => Err(GraphError::Throttled {
            retry_after: format_retry_after(profile.retry_after, retry_after),
            scope: format!(
                "Tenant_Application/ReadWrite/{}/{}",
                ctx.app.client_id, ctx.tenant.id
            ),
        }),
    }
}

/// A successful Graph answer.
#[derive(Debug)]
enum Reply {
    Json(StatusCode, Value, Vec<(&'static str, String)>),
    Bytes(Vec<u8>, String, String),
    /// `text/plain` (`$count`).
    Text(String),
    Empty,
}

/// Renders a handler result with Graph's headers and counts it.
fn finish(
    sim: &Sim,
    req: &HttpRequest,
    endpoint: &str,
    ctx: Option<&Ctx>,
    res: Result<Reply, GraphError>,
) -> HttpResponse {
    let (request_id, client_request_id) = answers::ids(req.headers());
    let mut resp = match res {
        Ok(reply) => ok_response(reply),
        Err(e) => error_response(
            &e,
            &request_id,
            &client_request_id,
            &graph_time(sim.clock.now()),
        ),
    };
    let h = resp.headers_mut();
    insert(h, "request-id", &request_id);
    insert(h, "client-request-id", &client_request_id);
    if let Some(ctx) = ctx.filter(|c| c.ru > 0) {
        insert(h, "x-ms-resource-unit", &ctx.ru.to_string());
        if ctx.used_fraction >= 0.8 {
            insert(
                h,
                "x-ms-throttle-limit-percentage",
                &format!("{:.1}", ctx.used_fraction),
            );
        }
    }
    let tenant = ctx.map_or("unknown", |c| c.tenant.id.as_str());
    sim.count(tenant, endpoint, resp.status().as_u16());
    resp
}

fn insert(h: &mut header::HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(header::HeaderName::from_static(name), v);
    }
}

fn ok_response(reply: Reply) -> HttpResponse {
    match reply {
        Reply::Json(status, body, headers) => {
            let mut b = HttpResponseBuilder::new(status);
            b.insert_header((header::CONTENT_TYPE, JSON_CT))
                .insert_header(("OData-Version", "4.0"));
            for (k, v) in headers {
                b.insert_header((k, v));
            }
            b.body(body.to_string())
        }
        Reply::Bytes(bytes, content_type, etag) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, content_type))
            .insert_header((header::ETAG, etag))
            .body(bytes),
        Reply::Text(text) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, "text/plain;charset=utf-8"))
            .body(text),
        Reply::Empty => HttpResponse::NoContent().finish(),
    }
}

type Params = Query<HashMap<String, String>>;

fn param<'a>(q: &'a Params, name: &str) -> Option<&'a str> {
    q.get(&format!("${name}"))
        .or_else(|| q.get(name))
        .map(String::as_str)
}

fn base_url(req: &HttpRequest) -> String {
    let ci = req.connection_info();
    format!("{}://{}", ci.scheme(), ci.host())
}

fn parse_top(q: &Params) -> Result<Option<usize>, GraphError> {
    match param(q, "top") {
        None => Ok(None),
        Some(t) => match t.parse::<usize>() {
            Ok(n) if (1..=999).contains(&n) => Ok(Some(n)),
            _ => Err(GraphError::BadRequest(
                "Request_UnsupportedQuery",
                format!("Invalid page size specified: '{t}'. Must be between 1 and 999 inclusive."),
            )),
        },
    }
}

/// Parses `prop eq 'value' [or prop eq 'value' ...]`.
fn parse_filter(filter: &str) -> Result<Vec<(String, String)>, GraphError> {
    let bad = || {
        GraphError::BadRequest(
            "Request_UnsupportedQuery",
            format!("Unsupported or invalid query filter clause specified: '{filter}'."),
        )
    };
    let mut out = Vec::new();
    let lower = filter.to_ascii_lowercase();
    let mut rest = filter;
    let mut rest_lower = lower.as_str();
    loop {
        let (clause, next, next_lower) = match rest_lower.find(" or ") {
            Some(i) => (&rest[..i], &rest[i + 4..], &rest_lower[i + 4..]),
            None => (rest, "", ""),
        };
        let clause = clause.trim().trim_start_matches('(').trim_end_matches(')');
        let (prop, value) = clause.split_once(" eq ").ok_or_else(bad)?;
        let value = value
            .trim()
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .ok_or_else(bad)?;
        out.push((prop.trim().to_owned(), value.replace("''", "'")));
        if next.is_empty() {
            return Ok(out);
        }
        rest = next;
        rest_lower = next_lower;
    }
}

fn id_filter(q: &Params) -> Result<Option<Vec<String>>, GraphError> {
    let Some(filter) = param(q, "filter") else {
        return Ok(None);
    };
    let clauses = parse_filter(filter)?;
    if clauses.iter().any(|(p, _)| p != "id") {
        return Err(GraphError::BadRequest(
            "Request_UnsupportedQuery",
            "Delta query only supports filtering by 'id eq'.".into(),
        ));
    }
    if clauses.len() > MAX_FILTER_IDS {
        return Err(GraphError::BadRequest(
            "Request_UnsupportedQuery",
            format!("Too many ids in the filter: at most {MAX_FILTER_IDS} are allowed."),
        ));
    }
    Ok(Some(clauses.into_iter().map(|(_, v)| v).collect()))
}

fn context(set: &str, select: Option<&str>) -> String {
    match select.filter(|s| !s.is_empty()) {
        Some(s) => format!("{CONTEXT_BASE}#{set}({s})"),
        None => format!("{CONTEXT_BASE}#{set}"),
    }
}

fn cost(q: &Params, base: u32) -> Result<Cost, GraphError> {
    Ok(Cost {
        base,
        has_select: param(q, "select").is_some(),
        top: parse_top(q)?,
    })
}

/// Runs admission, then a synchronous body, then [`finish`].
async fn run<F>(
    sim: &Sim,
    req: &HttpRequest,
    ep: &str,
    perms: &[&str],
    cost: Option<Cost>,
    body: F,
) -> HttpResponse
where
    F: FnOnce(&Ctx) -> Result<Reply, GraphError>,
{
    match admit(sim, req, ep, perms, cost).await {
        Ok(ctx) => {
            let res = body(&ctx);
            finish(sim, req, ep, Some(&ctx), res)
        }
        Err(e) => finish(sim, req, ep, None, Err(e)),
    }
}

/// Logs every request on the Graph surface (method, path, query, client library headers, status).
pub async fn log_request(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    // The benchmark runs without a subscriber: skip the copies below unless someone listens.
    if !tracing::enabled!(tracing::Level::INFO) {
        return next.call(req).await;
    }
    let method = req.method().to_string();
    let path = req.path().to_owned();
    let query = req.query_string().to_owned();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let user_agent = header("user-agent");
    let client_sku = header("x-client-sku");
    let client_request_id = header("client-request-id");
    let scheme = req.connection_info().scheme().to_owned();
    let res = next.call(req).await?;
    tracing::info!(
        %method,
        %scheme,
        %path,
        %query,
        status = res.status().as_u16(),
        %user_agent,
        %client_sku,
        %client_request_id,
        "request"
    );
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn or_combined_id_filters_parse_in_order() {
        let f = parse_filter("id eq 'a' or id eq 'b''c'").expect("valid filter");
        assert_eq!(
            f,
            vec![
                ("id".to_owned(), "a".to_owned()),
                ("id".to_owned(), "b'c".to_owned())
            ]
        );
        assert!(parse_filter("startswith(displayName,'a')").is_err());
    }
}
