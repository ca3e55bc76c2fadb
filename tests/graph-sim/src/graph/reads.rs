//! Directory reads: users, groups, `$count`, photos, transitive members and directory-role members.

use actix_web::http::StatusCode;
use actix_web::web::{self, Data};
use actix_web::{HttpRequest, HttpResponse};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use crate::directory::{
    DirObject, DirectoryError, Kind, LifeState, RENDITION_CONTENT_TYPE, Select, parse_size, render,
};
use crate::state::{MissingPhoto, Sim, lock, read};

use super::{
    CONTEXT_BASE, Cost, Ctx, GRAPH_BASE, GROUP_READ, GraphError, PHOTO_READ, Params, ROLE_READ,
    Reply, USER_READ, admit, base_url, context, cost, finish, param, parse_filter, parse_top, run,
};

pub(super) fn skip_after(q: &Params) -> Result<Option<String>, GraphError> {
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
pub(super) fn collection(
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
    let search = param(q, "search")
        .map(|text| parse_search(req, text))
        .transpose()?;
    let dir = read(&ctx.tenant.dir);
    let matches = |o: &DirObject| {
        search.as_ref().is_none_or(|clauses| {
            clauses
                .iter()
                .any(|(p, term)| o.get_str(p).is_some_and(|value| tokens_match(value, term)))
        }) && filter.as_ref().is_none_or(|clauses| {
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
            .filter(|o| o.state == LifeState::Active && matches(o))
            .count()
    });
    let lower = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
    let items: Vec<(String, Map<String, Value>)> = dir
        .objects(kind)
        .range::<String, _>((lower, std::ops::Bound::Unbounded))
        .map(|(_, o)| o)
        .filter(|o| o.state == LifeState::Active && matches(o))
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

/// `$search="prop:term"` clauses joined by `OR`, as Graph takes them on directory objects: only
/// as an advanced query (`ConsistencyLevel: eventual`), each clause quoted and naming a property.
fn parse_search(req: &HttpRequest, text: &str) -> Result<Vec<(String, String)>, GraphError> {
    if !eventual(req) {
        return Err(GraphError::BadRequest(
            "Request_UnsupportedQuery",
            "Request with $search query parameter only works through MSGraph with a special request header: 'ConsistencyLevel: eventual'".into(),
        ));
    }
    let invalid = || {
        GraphError::BadRequest(
            "Request_UnsupportedQuery",
            format!("Syntax error: invalid $search value '{text}'. Use \"property:term\"."),
        )
    };
    text.split(" OR ")
        .map(|clause| {
            let inner = clause
                .trim()
                .strip_prefix('"')
                .and_then(|c| c.strip_suffix('"'))
                .ok_or_else(invalid)?;
            let (property, term) = inner.split_once(':').ok_or_else(invalid)?;
            if property.trim().is_empty() || term.trim().is_empty() {
                return Err(invalid());
            }
            Ok((property.trim().to_owned(), term.trim().to_lowercase()))
        })
        .collect()
}

/// Graph's tokenized search: the value is split into words (at spaces, punctuation and
/// lowercase-to-uppercase changes) and matches when a word starts with the term; a term of
/// several words matches a value containing it from a word's start.
fn tokens_match(value: &str, term: &str) -> bool {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut previous_lower = false;
    for c in value.chars() {
        if !c.is_alphanumeric() {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            previous_lower = false;
            continue;
        }
        if c.is_uppercase() && previous_lower && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        previous_lower = c.is_lowercase();
        word.extend(c.to_lowercase());
    }
    if !word.is_empty() {
        words.push(word);
    }
    let lower = value.to_lowercase();
    words.iter().any(|w| w.starts_with(term)) || (term.contains(' ') && lower.contains(term))
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
        .filter(|o| o.state == LifeState::Active)
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

pub(super) async fn count_users(sim: Data<Sim>, req: HttpRequest, q: Params) -> HttpResponse {
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

pub(super) async fn count_groups(sim: Data<Sim>, req: HttpRequest, q: Params) -> HttpResponse {
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

pub(super) async fn count_transitive_members(
    sim: Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    count_transitive(&sim, &req, &id, "groups.transitiveMembers.count", false).await
}

pub(super) async fn count_transitive_users(
    sim: Data<Sim>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (id, _cast) = path.into_inner();
    count_transitive(&sim, &req, &id, "groups.transitiveMembers.user.count", true).await
}

pub(super) async fn list_users(sim: Data<Sim>, req: HttpRequest, q: Params) -> HttpResponse {
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

pub(super) async fn list_groups(sim: Data<Sim>, req: HttpRequest, q: Params) -> HttpResponse {
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

pub(super) async fn get_user(
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

pub(super) async fn get_group(
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

pub(super) async fn photo_meta(
    sim: Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
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
        let context = format!("{CONTEXT_BASE}#users('{}')/photo/$entity", user.id);
        let odata_id = photo_odata_id(&user.id, &ctx.tenant.id);
        let Some(photo) = user.photo.as_ref() else {
            return match lock(&ctx.tenant.photos).missing {
                MissingPhoto::NotFound => Err(GraphError::NoPhoto),
                MissingPhoto::Placeholder => Ok(Reply::Json(
                    StatusCode::OK,
                    json!({
                        "@odata.context": context,
                        "@odata.id": odata_id,
                        "@odata.mediaContentType": "image/gif",
                        "@odata.mediaEtag": "",
                        "id": "1x1",
                        "width": 1,
                        "height": 1,
                    }),
                    Vec::new(),
                )),
            };
        };
        let body = json!({
            "@odata.context": context,
            "@odata.id": odata_id,
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

/// The photo's `@odata.id` as the profilePhoto example shows it: the user keyed by `{user id}@{tenant id}`.
fn photo_odata_id(user: &str, tenant: &str) -> String {
    format!("{GRAPH_BASE}/users('{user}@{tenant}')/photo")
}

pub(super) async fn photo_value(
    sim: Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    serve_photo(&sim, &req, "users.photo.value", &id, None).await
}

/// `/users/{id}/photos/{size}/$value`: a supported HD size no larger than the upload, else 404
/// `ImageNotFound` (see [`crate::directory::render`]).
pub(super) async fn photo_size_value(
    sim: Data<Sim>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (id, size) = path.into_inner();
    serve_photo(&sim, &req, "users.photos.value", &id, Some(&size)).await
}

/// The photo's bytes (`size` = `None`: the upload as stored) or its sized rendition.
async fn serve_photo(
    sim: &Sim,
    req: &HttpRequest,
    endpoint: &str,
    id: &str,
    size: Option<&str>,
) -> HttpResponse {
    let c = Cost {
        base: 1,
        has_select: false,
        top: None,
    };
    run(sim, req, endpoint, PHOTO_READ, Some(c), |ctx| {
        let dir = read(&ctx.tenant.dir);
        let user = dir
            .get_active(Kind::User, id)
            .ok_or_else(|| DirectoryError::NotFound(id.to_string()))?;
        let photo = user.photo.as_ref().ok_or(GraphError::NoPhoto)?;
        let Some(size) = size else {
            return Ok(Reply::Bytes(
                photo.bytes.clone(),
                photo.content_type.clone(),
                photo.etag.clone(),
            ));
        };
        let bytes = parse_size(size)
            .and_then(|size| render(photo, size))
            .ok_or(GraphError::NoPhoto)?;
        Ok(Reply::Bytes(
            bytes,
            RENDITION_CONTENT_TYPE.to_owned(),
            photo.etag.clone(),
        ))
    })
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

pub(super) async fn transitive_members(
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

pub(super) async fn transitive_users(
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

pub(super) async fn role_members(
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

#[cfg(test)]
mod search_tests {
    use super::tokens_match;

    #[test]
    fn a_term_matches_the_start_of_any_word_whatever_the_case() {
        assert!(tokens_match("Sales Team Europe", "team"));
        assert!(tokens_match("Sales Team Europe", "eur"));
        assert!(tokens_match("salesTeam", "team"));
        assert!(tokens_match("R&D-Berlin", "berlin"));
        assert!(!tokens_match("Sales Team Europe", "ales"));
        assert!(tokens_match("Sales Team Europe", "team eu"));
    }
}
