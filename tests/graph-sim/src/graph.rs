//! The Graph-facing HTTP surface: the token endpoint, `/v1.0` directory reads, delta and subscriptions.
//!
//! Every handler goes through [`admit`] (faults, bearer, permission, throttle) and [`finish`] (headers, error
//! envelope, counters), so the handlers themselves only parse the request and call the domain code.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::web::{self, Bytes, Data, Query};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};

use crate::clock::{entra_time, graph_time};
use crate::delta::{self, DeltaOptions, DeltaState, Next};
use crate::directory::{DirObject, DirectoryError, Kind, Select};
use crate::identity::{self, AppRegistration, BearerError, TokenError, TokenRequest};
use crate::state::{Sim, Tenant, lock, read};
use crate::subscriptions::{SubscriptionBody, SubscriptionError};
use crate::throttle::{self, Charge, FaultKind, format_retry_after};

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

/// A Graph failure, rendered in Graph's error envelope (graph-facts §9).
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// 401 `InvalidAuthenticationToken`.
    #[error(transparent)]
    Unauthorized(#[from] BearerError),
    /// 403 `Authorization_RequestDenied`.
    #[error("Insufficient privileges to complete the operation.")]
    Forbidden,
    /// 404 / 400 from the directory.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// 404 `ImageNotFound` for a missing photo.
    #[error(
        "Exception of type 'Microsoft.Fast.Profile.Core.Exception.ImageNotFoundException' was thrown."
    )]
    NoPhoto,
    /// 400 with a code.
    #[error("{1}")]
    BadRequest(&'static str, String),
    /// 429 from the bucket or a fault rule.
    #[error("Please retry again later.")]
    Throttled {
        /// `Retry-After`, if any.
        retry_after: Option<String>,
        /// `x-ms-throttle-scope`.
        scope: String,
    },
    /// 503 `serviceNotAvailable`.
    #[error("The service is temporarily unavailable. Please retry later.")]
    Unavailable(Option<String>),
    /// An injected connection drop.
    #[error("connection dropped by fault injection")]
    Dropped,
    /// 410 `syncStateNotFound`: the delta token is too old.
    #[error(
        "The sync state generation is not found. The delta token is expired and data must be synchronized again."
    )]
    SyncStateNotFound,
    /// 410 Gone + `Location`: full resync.
    #[error("The delta token is no longer valid, and the app must reset the sync state.")]
    ResyncRequired(String),
    /// Subscription failures.
    #[error(transparent)]
    Subscription(#[from] SubscriptionError),
}

impl GraphError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            GraphError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken"),
            GraphError::Forbidden => (StatusCode::FORBIDDEN, "Authorization_RequestDenied"),
            GraphError::Directory(
                DirectoryError::NotFound(_) | DirectoryError::RoleNotFound(_),
            ) => (StatusCode::NOT_FOUND, "Request_ResourceNotFound"),
            GraphError::Directory(_) => (StatusCode::BAD_REQUEST, "Request_BadRequest"),
            GraphError::NoPhoto => (StatusCode::NOT_FOUND, "ImageNotFound"),
            GraphError::BadRequest(code, _) => (StatusCode::BAD_REQUEST, code),
            GraphError::Throttled { .. } => (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests"),
            GraphError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "serviceNotAvailable"),
            GraphError::Dropped => (StatusCode::OK, ""),
            GraphError::SyncStateNotFound => (StatusCode::GONE, "syncStateNotFound"),
            GraphError::ResyncRequired(_) => (StatusCode::GONE, "resyncRequired"),
            GraphError::Subscription(e) => match e {
                SubscriptionError::Duplicate(_) => (StatusCode::CONFLICT, "ExtensionError"),
                SubscriptionError::Quota => (StatusCode::FORBIDDEN, "ExtensionError"),
                SubscriptionError::NotFound => (StatusCode::NOT_FOUND, "ResourceNotFound"),
                _ => (StatusCode::BAD_REQUEST, "InvalidRequest"),
            },
        }
    }
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

fn request_ids(req: &HttpRequest) -> (String, String) {
    let request_id = uuid::Uuid::new_v4().to_string();
    let client = req
        .headers()
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| request_id.clone(), str::to_owned);
    (request_id, client)
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
    let claims =
        identity::verify_access_token(&sim.keys, bearer, sim.clock.now().unix_timestamp())?;
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
    let (request_id, client_request_id) = request_ids(req);
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

fn error_response(
    e: &GraphError,
    request_id: &str,
    client_request_id: &str,
    date: &str,
) -> HttpResponse {
    if matches!(e, GraphError::Dropped) {
        let failing = futures_util::stream::once(async {
            Err::<Bytes, std::io::Error>(std::io::Error::other(
                "connection dropped by graph-sim fault injection",
            ))
        });
        return HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, JSON_CT))
            .streaming(failing);
    }
    let (status, code) = e.status_and_code();
    let mut inner =
        json!({"date": date, "request-id": request_id, "client-request-id": client_request_id});
    if status == StatusCode::TOO_MANY_REQUESTS {
        inner = json!({"code": "429", "date": date, "message": "Please retry after", "request-id": request_id, "status": "429"});
    }
    let body = json!({"error": {"code": code, "message": e.to_string(), "innerError": inner}});
    let mut b = HttpResponseBuilder::new(status);
    b.insert_header((header::CONTENT_TYPE, JSON_CT));
    match e {
        GraphError::Unauthorized(_) => {
            b.insert_header((header::WWW_AUTHENTICATE, format!("Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"{}\"", identity::GRAPH_APP_ID)));
        }
        GraphError::Throttled { retry_after, scope } => {
            if let Some(ra) = retry_after {
                b.insert_header((header::RETRY_AFTER, ra.as_str()));
            }
            b.insert_header(("x-ms-throttle-scope", scope.as_str()))
                .insert_header(("x-ms-throttle-information", "ResourceUnitLimitExceeded"));
        }
        GraphError::Unavailable(Some(ra)) => {
            b.insert_header((header::RETRY_AFTER, ra.as_str()));
        }
        GraphError::ResyncRequired(location) => {
            b.insert_header((header::LOCATION, location.as_str()));
        }
        _ => {}
    }
    b.body(body.to_string())
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

fn skip_after(q: &Params) -> Result<Option<String>, GraphError> {
    let Some(tok) = param(q, "skiptoken") else {
        return Ok(None);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(tok)
        .map_err(|_| GraphError::BadRequest("Request_BadRequest", "Invalid skip token.".into()))?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| GraphError::BadRequest("Request_BadRequest", "Invalid skip token.".into()))
}

/// Builds a paged collection response with a `$skiptoken` nextLink when more remain.
fn collection(
    req: &HttpRequest,
    context: String,
    mut items: Vec<(String, Map<String, Value>)>,
    page: usize,
    total: Option<usize>,
) -> Reply {
    let more = items.len() > page;
    items.truncate(page);
    let mut body = json!({"@odata.context": context});
    if let Some(n) = total {
        body["@odata.count"] = json!(n);
    }
    if more && let Some((last, _)) = items.last() {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in url::form_urlencoded::parse(req.query_string().as_bytes())
            .filter(|(k, _)| k != "$skiptoken")
        {
            query.append_pair(&k, &v);
        }
        query.append_pair("$skiptoken", &URL_SAFE_NO_PAD.encode(last));
        body["@odata.nextLink"] = json!(format!(
            "{}{}?{}",
            base_url(req),
            req.path(),
            query.finish()
        ));
    }
    body["value"] = Value::Array(items.into_iter().map(|(_, m)| Value::Object(m)).collect());
    Reply::Json(StatusCode::OK, body, Vec::new())
}

fn list_objects(req: &HttpRequest, q: &Params, kind: Kind, ctx: &Ctx) -> Result<Reply, GraphError> {
    let select = param(q, "select");
    let sel = Select::parse(kind, select)?;
    let page = parse_top(q)?.unwrap_or(100);
    let after = skip_after(q)?;
    let with_count = count_requested(req, q)?;
    let filter = param(q, "filter").map(parse_filter).transpose()?;
    let dir = read(&ctx.tenant.dir);
    let matches = |o: &DirObject| {
        filter.as_ref().is_none_or(|clauses| {
            clauses.iter().any(|(p, v)| {
                if p == "id" {
                    o.id == *v
                } else {
                    o.get_str(p).is_some_and(|x| x.eq_ignore_ascii_case(v))
                }
            })
        })
    };
    let total = with_count.then(|| {
        dir.objects(kind)
            .values()
            .filter(|o| o.state == crate::directory::LifeState::Active && matches(o))
            .count()
    });
    let lower = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
    let items: Vec<(String, Map<String, Value>)> = dir
        .objects(kind)
        .range::<String, _>((lower, std::ops::Bound::Unbounded))
        .map(|(_, o)| o)
        .filter(|o| o.state == crate::directory::LifeState::Active && matches(o))
        .take(page + 1)
        .map(|o| (o.id.clone(), o.to_graph_json(&sel)))
        .collect();
    Ok(collection(
        req,
        context(kind.set_name(), select),
        items,
        page,
        total,
    ))
}

/// Whether Graph's advanced query headers are present (`ConsistencyLevel: eventual`).
fn eventual(req: &HttpRequest) -> bool {
    req.headers()
        .get("consistencylevel")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("eventual"))
}

fn count_unsupported() -> GraphError {
    // Directory objects only count with the advanced-query header (graph-facts §7).
    GraphError::BadRequest(
        "Request_BadRequest",
        "$count is not currently supported.".into(),
    )
}

/// `$count=true`: `Ok(true)` with `ConsistencyLevel: eventual`, an error without it.
fn count_requested(req: &HttpRequest, q: &Params) -> Result<bool, GraphError> {
    match param(q, "count") {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => {
            if eventual(req) {
                Ok(true)
            } else {
                Err(count_unsupported())
            }
        }
        Some(v) => Err(GraphError::BadRequest(
            "Request_BadRequest",
            format!("Invalid $count value '{v}'."),
        )),
    }
}

/// Counts the active objects of a kind matching `$filter` (`/users/$count`, `/groups/$count`).
fn count_objects(
    req: &HttpRequest,
    q: &Params,
    kind: Kind,
    ctx: &Ctx,
) -> Result<Reply, GraphError> {
    if !eventual(req) {
        return Err(count_unsupported());
    }
    let filter = param(q, "filter").map(parse_filter).transpose()?;
    let dir = read(&ctx.tenant.dir);
    let n = dir
        .objects(kind)
        .values()
        .filter(|o| o.state == crate::directory::LifeState::Active)
        .filter(|o| {
            filter.as_ref().is_none_or(|clauses| {
                clauses.iter().any(|(p, v)| {
                    if p == "id" {
                        o.id == *v
                    } else {
                        o.get_str(p).is_some_and(|x| x.eq_ignore_ascii_case(v))
                    }
                })
            })
        })
        .count();
    Ok(Reply::Text(n.to_string()))
}

async fn count_users(sim: Data<Sim>, req: HttpRequest, q: Params) -> HttpResponse {
    let c = Cost {
        base: 1,
        has_select: false,
        top: None,
    };
    run(&sim, &req, "users.count", USER_READ, Some(c), |ctx| {
        count_objects(&req, &q, Kind::User, ctx)
    })
    .await
}

async fn count_groups(sim: Data<Sim>, req: HttpRequest, q: Params) -> HttpResponse {
    let c = Cost {
        base: 1,
        has_select: false,
        top: None,
    };
    run(&sim, &req, "groups.count", GROUP_READ, Some(c), |ctx| {
        count_objects(&req, &q, Kind::Group, ctx)
    })
    .await
}

async fn count_transitive(
    sim: &Sim,
    req: &HttpRequest,
    id: &str,
    ep: &str,
    users_only: bool,
) -> HttpResponse {
    let c = Cost {
        base: 5,
        has_select: false,
        top: None,
    };
    run(sim, req, ep, GROUP_READ, Some(c), |ctx| {
        if !eventual(req) {
            return Err(count_unsupported());
        }
        let dir = read(&ctx.tenant.dir);
        let n = dir
            .transitive_members(id)?
            .into_iter()
            .filter(|o| !users_only || o.kind == Kind::User)
            .count();
        Ok(Reply::Text(n.to_string()))
    })
    .await
}

async fn count_transitive_members(
    sim: Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    count_transitive(&sim, &req, &id, "groups.transitiveMembers.count", false).await
}

async fn count_transitive_users(
    sim: Data<Sim>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (id, _cast) = path.into_inner();
    count_transitive(&sim, &req, &id, "groups.transitiveMembers.user.count", true).await
}

fn cost(q: &Params, base: u32) -> Result<Cost, GraphError> {
    Ok(Cost {
        base,
        has_select: param(q, "select").is_some(),
        top: parse_top(q)?,
    })
}

async fn list_users(sim: Data<Sim>, req: HttpRequest, q: Params) -> HttpResponse {
    let ep = "users.list";
    let admitted = match cost(&q, 2) {
        Ok(c) => admit(&sim, &req, ep, USER_READ, Some(c)).await,
        Err(e) => Err(e),
    };
    match admitted {
        Ok(ctx) => {
            let res = list_objects(&req, &q, Kind::User, &ctx);
            finish(&sim, &req, ep, Some(&ctx), res)
        }
        Err(e) => finish(&sim, &req, ep, None, Err(e)),
    }
}

async fn list_groups(sim: Data<Sim>, req: HttpRequest, q: Params) -> HttpResponse {
    let ep = "groups.list";
    let admitted = match cost(&q, 1) {
        Ok(c) => admit(&sim, &req, ep, GROUP_READ, Some(c)).await,
        Err(e) => Err(e),
    };
    match admitted {
        Ok(ctx) => {
            let res = list_objects(&req, &q, Kind::Group, &ctx);
            finish(&sim, &req, ep, Some(&ctx), res)
        }
        Err(e) => finish(&sim, &req, ep, None, Err(e)),
    }
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

fn entity(kind: Kind, select: Option<&str>, obj: &DirObject) -> Result<Reply, GraphError> {
    let sel = Select::parse(kind, select)?;
    let mut m = obj.to_graph_json(&sel);
    let set = kind.set_name();
    let ctx = match select {
        Some(s) => format!("{CONTEXT_BASE}#{set}({s})/$entity"),
        None => format!("{CONTEXT_BASE}#{set}/$entity"),
    };
    m.insert("@odata.context".into(), json!(ctx));
    Ok(Reply::Json(StatusCode::OK, Value::Object(m), Vec::new()))
}

async fn get_user(
    sim: Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
    q: Params,
) -> HttpResponse {
    let c = Cost {
        base: 1,
        has_select: param(&q, "select").is_some(),
        top: None,
    };
    run(&sim, &req, "users.get", USER_READ, Some(c), |ctx| {
        let dir = read(&ctx.tenant.dir);
        let obj = dir
            .get_active(Kind::User, &id)
            .ok_or_else(|| DirectoryError::NotFound(id.to_string()))?;
        entity(Kind::User, param(&q, "select"), obj)
    })
    .await
}

async fn get_group(
    sim: Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
    q: Params,
) -> HttpResponse {
    let c = Cost {
        base: 1,
        has_select: param(&q, "select").is_some(),
        top: None,
    };
    run(&sim, &req, "groups.get", GROUP_READ, Some(c), |ctx| {
        let dir = read(&ctx.tenant.dir);
        let obj = dir
            .get_active(Kind::Group, &id)
            .ok_or_else(|| DirectoryError::NotFound(id.to_string()))?;
        entity(Kind::Group, param(&q, "select"), obj)
    })
    .await
}

async fn photo_meta(sim: Data<Sim>, req: HttpRequest, id: web::Path<String>) -> HttpResponse {
    let c = Cost {
        base: 1,
        has_select: false,
        top: None,
    };
    run(&sim, &req, "users.photo", PHOTO_READ, Some(c), |ctx| {
        let dir = read(&ctx.tenant.dir);
        let user = dir
            .get_active(Kind::User, &id)
            .ok_or_else(|| DirectoryError::NotFound(id.to_string()))?;
        let photo = user.photo.as_ref().ok_or(GraphError::NoPhoto)?;
        let body = json!({
            "@odata.context": format!("{CONTEXT_BASE}#users('{}')/photo/$entity", user.id),
            "@odata.mediaContentType": photo.content_type,
            "@odata.mediaEtag": photo.etag,
            "id": format!("{}x{}", photo.width, photo.height),
            "height": photo.height,
            "width": photo.width,
        });
        Ok(Reply::Json(StatusCode::OK, body, Vec::new()))
    })
    .await
}

async fn photo_value(sim: Data<Sim>, req: HttpRequest, id: web::Path<String>) -> HttpResponse {
    let c = Cost {
        base: 1,
        has_select: false,
        top: None,
    };
    run(
        &sim,
        &req,
        "users.photo.value",
        PHOTO_READ,
        Some(c),
        |ctx| {
            let dir = read(&ctx.tenant.dir);
            let user = dir
                .get_active(Kind::User, &id)
                .ok_or_else(|| DirectoryError::NotFound(id.to_string()))?;
            let photo = user.photo.as_ref().ok_or(GraphError::NoPhoto)?;
            Ok(Reply::Bytes(
                photo.bytes.clone(),
                photo.content_type.clone(),
                photo.etag.clone(),
            ))
        },
    )
    .await
}

fn members_page(
    req: &HttpRequest,
    q: &Params,
    members: Vec<&DirObject>,
    users_only: bool,
) -> Result<Reply, GraphError> {
    let select = param(q, "select");
    let user_sel = if users_only {
        Select::parse(Kind::User, select)?
    } else {
        lenient_select(Kind::User, select)
    };
    let group_sel = lenient_select(Kind::Group, select);
    let page = parse_top(q)?.unwrap_or(100);
    let after = skip_after(q)?;
    let total = count_requested(req, q)?.then(|| {
        members
            .iter()
            .filter(|o| !users_only || o.kind == Kind::User)
            .count()
    });
    let items: Vec<(String, Map<String, Value>)> = members
        .into_iter()
        .filter(|o| !users_only || o.kind == Kind::User)
        .filter(|o| after.as_ref().is_none_or(|a| o.id > *a))
        .take(page + 1)
        .map(|o| {
            let mut m = o.to_graph_json(if o.kind == Kind::User {
                &user_sel
            } else {
                &group_sel
            });
            m.insert("@odata.type".into(), json!(o.kind.odata_type()));
            (o.id.clone(), m)
        })
        .collect();
    let set = if users_only {
        "users"
    } else {
        "directoryObjects"
    };
    Ok(collection(req, context(set, select), items, page, total))
}

/// `$select` for mixed collections: each kind keeps the names it knows.
fn lenient_select(kind: Kind, select: Option<&str>) -> Select {
    let Some(s) = select else {
        return Select::default_for(kind);
    };
    let known: Vec<&str> = s
        .split(',')
        .map(str::trim)
        .filter(|n| Select::parse(kind, Some(n)).is_ok())
        .collect();
    Select::parse(kind, Some(&known.join(","))).unwrap_or_default()
}

async fn transitive_members(
    sim: Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
    q: Params,
) -> HttpResponse {
    let c = match cost(&q, 5) {
        Ok(c) => c,
        Err(e) => return finish(&sim, &req, "groups.transitiveMembers", None, Err(e)),
    };
    run(
        &sim,
        &req,
        "groups.transitiveMembers",
        GROUP_READ,
        Some(c),
        |ctx| {
            let dir = read(&ctx.tenant.dir);
            let members = dir.transitive_members(&id)?;
            members_page(&req, &q, members, false)
        },
    )
    .await
}

async fn transitive_users(
    sim: Data<Sim>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    q: Params,
) -> HttpResponse {
    let (id, _cast) = path.into_inner();
    let c = match cost(&q, 5) {
        Ok(c) => c,
        Err(e) => return finish(&sim, &req, "groups.transitiveMembers.user", None, Err(e)),
    };
    run(
        &sim,
        &req,
        "groups.transitiveMembers.user",
        GROUP_READ,
        Some(c),
        |ctx| {
            let dir = read(&ctx.tenant.dir);
            let members = dir.transitive_members(&id)?;
            members_page(&req, &q, members, true)
        },
    )
    .await
}

async fn role_members(
    sim: Data<Sim>,
    req: HttpRequest,
    key: web::Path<String>,
    q: Params,
) -> HttpResponse {
    let c = Cost {
        base: 1,
        has_select: param(&q, "select").is_some(),
        top: None,
    };
    run(
        &sim,
        &req,
        "directoryRoles.members",
        ROLE_READ,
        Some(c),
        |ctx| {
            let dir = read(&ctx.tenant.dir);
            let key = key.strip_prefix("roleTemplateId=").unwrap_or(&key);
            let role = dir.role(key)?;
            let members: Vec<&DirObject> = role
                .members
                .iter()
                .filter_map(|id| dir.get_active(Kind::User, id))
                .collect();
            members_page(&req, &q, members, false)
        },
    )
    .await
}

async fn users_delta(sim: Data<Sim>, req: HttpRequest, q: Params) -> HttpResponse {
    delta_endpoint(&sim, &req, &q, Kind::User).await
}

async fn groups_delta(sim: Data<Sim>, req: HttpRequest, q: Params) -> HttpResponse {
    delta_endpoint(&sim, &req, &q, Kind::Group).await
}

/// Parsed `Prefer` header values.
#[derive(Debug, Default)]
struct Prefer {
    minimal: bool,
    max_page_size: Option<usize>,
}

fn prefer(req: &HttpRequest) -> Prefer {
    let mut p = Prefer::default();
    for v in req
        .headers()
        .get_all("prefer")
        .filter_map(|v| v.to_str().ok())
    {
        for part in v.split(',').map(str::trim) {
            if part.eq_ignore_ascii_case("return=minimal") {
                p.minimal = true;
            } else if let Some(n) = part.strip_prefix("odata.maxpagesize=") {
                p.max_page_size = n.trim().parse().ok();
            }
        }
    }
    p
}

async fn delta_endpoint(sim: &Sim, req: &HttpRequest, q: &Params, kind: Kind) -> HttpResponse {
    let ep = if kind == Kind::User {
        "users.delta"
    } else {
        "groups.delta"
    };
    let perms = if kind == Kind::User {
        USER_READ
    } else {
        GROUP_READ
    };
    let c = Cost {
        base: 1,
        has_select: param(q, "select").is_some(),
        top: None,
    };
    run(sim, req, ep, perms, Some(c), |ctx| {
        delta_round(sim, req, q, kind, ctx)
    })
    .await
}

fn delta_round(
    sim: &Sim,
    req: &HttpRequest,
    q: &Params,
    kind: Kind,
    ctx: &Ctx,
) -> Result<Reply, GraphError> {
    let settings = lock(&ctx.tenant.delta).clone();
    let now = sim.clock.now().unix_timestamp();
    let tenant = ctx.tenant.id.as_str();
    // Links keep the form the client called (`/delta`, `/delta()`, `/microsoft.graph.delta()`), on our own host.
    let path = format!("{}{}", base_url(req), req.path());
    let select = param(q, "select").map(str::to_owned);
    let malformed = |_| GraphError::BadRequest("Request_BadRequest", "Badly formed token.".into());
    let state = if let Some(tok) = param(q, "skiptoken") {
        if select.is_some() {
            return Err(GraphError::BadRequest(
                "Request_UnsupportedQuery",
                "$select and $skiptoken together aren't supported.".into(),
            ));
        }
        DeltaState::decode(tok, tenant, kind).map_err(malformed)?
    } else if let Some(tok) = param(q, "deltatoken") {
        let dir = read(&ctx.tenant.dir);
        match tok {
            "latest" => {
                let st = delta::latest(&dir, tenant, kind, select.clone(), id_filter(q)?, now);
                return Ok(delta_reply(
                    &path,
                    kind,
                    &select,
                    Vec::new(),
                    &Next::Done(st),
                    &Prefer::default(),
                ));
            }
            "" => delta::begin_round(&dir, tenant, kind, select.clone(), id_filter(q)?, None, now),
            tok => {
                let old = DeltaState::decode(tok, tenant, kind).map_err(malformed)?;
                if take_resync(&ctx.tenant) {
                    let mut loc = format!("{path}?$deltatoken=");
                    if let Some(s) = old.select.as_deref() {
                        loc.push_str(&format!("&$select={s}"));
                    }
                    return Err(GraphError::ResyncRequired(loc));
                }
                if now - old.issued > settings.token_max_age_secs {
                    return Err(GraphError::SyncStateNotFound);
                }
                let sel = select.clone().or(old.select);
                delta::begin_round(&dir, tenant, kind, sel, old.filter, old.base, now)
            }
        }
    } else {
        let dir = read(&ctx.tenant.dir);
        delta::begin_round(&dir, tenant, kind, select.clone(), id_filter(q)?, None, now)
    };
    if state.base.is_some() && now - state.issued > settings.token_max_age_secs {
        return Err(GraphError::SyncStateNotFound);
    }
    let sel = Select::parse(kind, state.select.as_deref())?;
    let prefs = prefer(req);
    let opts = DeltaOptions {
        page_size: prefs
            .max_page_size
            .unwrap_or(settings.default_page_size)
            .clamp(1, 999),
        minimal: prefs.minimal,
        member_slice: settings.member_slice,
        replay_every: settings.replay_every,
        empty_first_page: settings.empty_first_page,
    };
    let page = {
        let dir = read(&ctx.tenant.dir);
        delta::page(&dir, &state, &sel, &opts)
    };
    let page_select = state.select.clone();
    Ok(delta_reply(
        &path,
        kind,
        &page_select,
        page.items,
        &page.next,
        &prefs,
    ))
}

fn take_resync(tenant: &Tenant) -> bool {
    let mut s = lock(&tenant.delta);
    if s.resync_next > 0 {
        s.resync_next -= 1;
        true
    } else {
        false
    }
}

fn delta_reply(
    path: &str,
    kind: Kind,
    select: &Option<String>,
    items: Vec<Value>,
    next: &Next,
    prefs: &Prefer,
) -> Reply {
    let mut body = json!({"@odata.context": context(kind.set_name(), select.as_deref())});
    match next {
        Next::More(st) => {
            body["@odata.nextLink"] = json!(format!("{path}?$skiptoken={}", st.encode()))
        }
        Next::Done(st) => {
            body["@odata.deltaLink"] = json!(format!("{path}?$deltatoken={}", st.encode()))
        }
    }
    body["value"] = Value::Array(items);
    let mut applied = Vec::new();
    if prefs.minimal {
        applied.push("return=minimal".to_owned());
    }
    if let Some(n) = prefs.max_page_size {
        applied.push(format!("odata.maxpagesize={}", n.clamp(1, 999)));
    }
    let headers = if applied.is_empty() {
        Vec::new()
    } else {
        vec![("Preference-Applied", applied.join(","))]
    };
    Reply::Json(StatusCode::OK, body, headers)
}

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

async fn create_subscription(sim: Data<Sim>, req: HttpRequest, body: Bytes) -> HttpResponse {
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

async fn list_subscriptions(sim: Data<Sim>, req: HttpRequest) -> HttpResponse {
    run(&sim, &req, "subscriptions.list", &[], None, |ctx| {
        let subs: Vec<Value> = sim
            .subscriptions_of(&ctx.tenant, &ctx.app.client_id)
            .iter()
            .map(|s| s.to_json())
            .collect();
        Ok(Reply::Json(
            StatusCode::OK,
            json!({"@odata.context": format!("{CONTEXT_BASE}#subscriptions"), "value": subs}),
            Vec::new(),
        ))
    })
    .await
}

async fn get_subscription(sim: Data<Sim>, req: HttpRequest, id: web::Path<String>) -> HttpResponse {
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

async fn update_subscription(
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

async fn delete_subscription(
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

async fn reauthorize_subscription(
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

fn parse_token_request(req: &HttpRequest, body: &[u8]) -> TokenRequest {
    let form = url::form_urlencoded::parse(body).into_owned().collect();
    let basic = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            let (id, secret) = s.split_once(':')?;
            let decode = |x: &str| {
                url::form_urlencoded::parse(format!("v={x}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
            };
            Some((decode(id)?, decode(secret)?))
        });
    TokenRequest { form, basic }
}

async fn token(
    sim: Data<Sim>,
    req: HttpRequest,
    tenant_key: web::Path<String>,
    body: Bytes,
) -> HttpResponse {
    let ep = "token";
    if let Err(e) = apply_faults(&sim, ep).await {
        return finish(&sim, &req, ep, None, Err(e));
    }
    let (status, body, tenant_id) = match issue_token(&sim, &req, &tenant_key, &body) {
        Ok((v, tid)) => (StatusCode::OK, v, tid),
        Err(e) => (
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
            token_error_body(&sim, &e),
            "unknown".to_owned(),
        ),
    };
    sim.count(&tenant_id, ep, status.as_u16());
    let mut b = HttpResponseBuilder::new(status);
    b.insert_header((header::CONTENT_TYPE, "application/json; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store, no-cache"))
        .insert_header(("x-ms-request-id", trace_id(&body)));
    // Entra echoes the correlation id when asked to (MSAL sends `return-client-request-id: true`).
    if let Some(cid) = req
        .headers()
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
    {
        b.insert_header(("client-request-id", cid.to_owned()));
    }
    b.body(body.to_string())
}

fn trace_id(body: &Value) -> String {
    body.get("trace_id")
        .and_then(Value::as_str)
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

fn issue_token(
    sim: &Sim,
    req: &HttpRequest,
    tenant_key: &str,
    body: &[u8],
) -> Result<(Value, String), TokenError> {
    let tr = parse_token_request(req, body);
    // Field names only (never values): what Microsoft's libraries send (`client_info`, `claims`, …).
    let mut fields: Vec<&str> = tr.form.keys().map(String::as_str).collect();
    fields.sort_unstable();
    let assertion_alg = tr
        .form
        .get("client_assertion")
        .and_then(|a| jsonwebtoken::decode_header(a).ok())
        .map(|h| format!("{:?}", h.alg));
    tracing::info!(
        fields = %fields.join(","),
        basic = tr.basic.is_some(),
        assertion_alg = assertion_alg.as_deref().unwrap_or(""),
        claims = tr.form.get("claims").map_or("", String::as_str),
        "token request"
    );
    let tenant = sim
        .tenant(tenant_key)
        .ok_or_else(|| TokenError::tenant_not_found(tenant_key))?;
    identity::check_request_shape(&tr)?;
    let client_id = tr.client_id().unwrap_or_default().to_owned();
    let app = read(&tenant.apps)
        .get(&client_id)
        .cloned()
        .ok_or_else(|| identity::app_not_found(&client_id, &tenant.id))?;
    let audiences = vec![
        format!(
            "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
            tenant.id
        ),
        format!(
            "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
            tenant.domain
        ),
        format!("{}/{}/oauth2/v2.0/token", base_url(req), tenant.id),
        format!("{}/{}/oauth2/v2.0/token", base_url(req), tenant.domain),
        format!("{}{}", base_url(req), req.path()),
    ];
    let now = sim.clock.now().unix_timestamp();
    let auth = identity::authenticate(&app, &tr, &audiences, now, &sim.jtis)?;
    let lifetime = sim.settings.token_lifetime_secs;
    let token = identity::mint_access_token(&sim.keys, &tenant.id, &app, auth, now, lifetime);
    Ok((
        json!({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}),
        tenant.id.clone(),
    ))
}

fn token_error_body(sim: &Sim, e: &TokenError) -> Value {
    let trace = uuid::Uuid::new_v4().to_string();
    let correlation = uuid::Uuid::new_v4().to_string();
    let ts = entra_time(sim.clock.now());
    json!({
        "error": e.error,
        "error_description": format!("AADSTS{}: {}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {ts}", e.code, e.description),
        "error_codes": [e.code],
        "timestamp": ts,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": format!("https://login.microsoftonline.com/error?code={}", e.code),
    })
}

async fn jwks(sim: Data<Sim>) -> HttpResponse {
    HttpResponse::Ok().json(sim.keys.jwks())
}

/// Tenant keys that name no tenant but are valid authorities (multi-tenant endpoints).
const MULTI_TENANT: &[&str] = &["common", "organizations", "consumers"];

/// OpenID Connect discovery for a tenant (or `common`): MSAL reads `token_endpoint` and `authorization_endpoint`.
async fn openid_configuration(
    sim: Data<Sim>,
    req: HttpRequest,
    tenant_key: web::Path<String>,
) -> HttpResponse {
    let base = base_url(&req);
    let (segment, tid) = if MULTI_TENANT.contains(&tenant_key.to_ascii_lowercase().as_str()) {
        (tenant_key.to_ascii_lowercase(), "{tenantid}".to_owned())
    } else {
        match sim.tenant(&tenant_key) {
            Some(t) => (t.id.clone(), t.id.clone()),
            None => {
                return HttpResponse::BadRequest().json(token_error_body(
                    &sim,
                    &TokenError::tenant_not_found(&tenant_key),
                ));
            }
        }
    };
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "max-age=86400, private"))
        .json(openid_document(&base, &segment, &tid))
}

/// The discovery document; the issuer lives on the simulator's own host so OIDC-authority clients can match it.
fn openid_document(base: &str, segment: &str, tid: &str) -> Value {
    json!({
        "token_endpoint": format!("{base}/{segment}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/{segment}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{base}/{tid}/v2.0"),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": format!("{base}/oidc/userinfo"),
        "authorization_endpoint": format!("{base}/{segment}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/{segment}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/{segment}/oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
        "kerberos_endpoint": format!("{base}/{segment}/kerberos"),
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    })
}

/// Query of Entra's instance discovery (`/common/discovery/instance`).
#[derive(Debug, serde::Deserialize)]
struct InstanceQuery {
    authorization_endpoint: Option<String>,
    #[serde(rename = "api-version")]
    api_version: Option<String>,
}

/// Instance discovery as MSAL calls it: the simulator vouches for its own host only.
async fn instance_discovery(req: HttpRequest, q: Query<InstanceQuery>) -> HttpResponse {
    let base = base_url(&req);
    let own_host = req.connection_info().host().to_ascii_lowercase();
    // MSAL Python builds the endpoint from the authority's host name without its port, so the port is not compared.
    let own_name = own_host
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(own_host.as_str(), |(name, _)| name)
        .to_owned();
    let api_version = q.api_version.clone().unwrap_or_else(|| "1.1".to_owned());
    let endpoint = q
        .authorization_endpoint
        .as_deref()
        .and_then(|e| url::Url::parse(e).ok());
    let tenant = endpoint.as_ref().and_then(|u| {
        let host = u.host_str()?.to_ascii_lowercase();
        (host == own_name || host.trim_matches(['[', ']']) == own_name.trim_matches(['[', ']']))
            .then(|| u.path_segments()?.next().map(str::to_owned))
            .flatten()
    });
    let Some(tenant) = tenant.filter(|t| !t.is_empty()) else {
        let trace = uuid::Uuid::new_v4().to_string();
        return HttpResponse::BadRequest().json(json!({
            "error": "invalid_instance",
            "error_description": format!("AADSTS50049: Unknown or invalid instance.\r\nTrace ID: {trace}"),
            "error_codes": [50049],
            "trace_id": trace,
        }));
    };
    HttpResponse::Ok().json(json!({
        "tenant_discovery_endpoint": format!("{base}/{tenant}/v2.0/.well-known/openid-configuration"),
        "api-version": api_version,
        "metadata": [{
            "preferred_network": own_host,
            "preferred_cache": own_host,
            "aliases": [own_host],
        }],
    }))
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
