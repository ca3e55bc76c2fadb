//! `/users/delta` and `/groups/delta`: tokens, `Prefer` handling and the page envelope around [`crate::delta`].

use actix_web::http::StatusCode;
use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{Value, json};

use crate::delta::{self, DeltaOptions, DeltaState, Next};
use crate::directory::{Kind, Select};
use crate::state::{Sim, Tenant, lock, read};

use super::{
    Cost, Ctx, GROUP_READ, GraphError, Params, Reply, USER_READ, base_url, context, id_filter,
    param, run,
};

pub(super) async fn users_delta(sim: Data<Sim>, req: HttpRequest, q: Params) -> HttpResponse {
    delta_endpoint(&sim, &req, &q, Kind::User).await
}

pub(super) async fn groups_delta(sim: Data<Sim>, req: HttpRequest, q: Params) -> HttpResponse {
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
        removed_since: (settings.initial_removed_window_secs > 0)
            .then(|| now.saturating_sub(settings.initial_removed_window_secs)),
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
