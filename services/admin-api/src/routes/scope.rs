//! `/v1/tenants/{tenant}/scope` (all users, or the nested members of groups; guests left out,
//! an attribute condition, applied by the rounds to the delta data), the tenant's group
//! search through Graph (`$search` with `ConsistencyLevel: eventual`, member counts with
//! `$count`).

use super::{Items, audit, is_object_id, visible_tenant};
use crate::error::ApiError;
use crate::openapi::Refusals;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use cardsync_auth::Principal;
use cardsync_graph::{GraphError, RequestCost, TokenError};
use cardsync_rules::{Condition, Expression, UserFilter};
use cardsync_store::connections;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

pub(super) fn configure(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/tenants/{tenant}/scope")
                .route(web::get().to(show_scope))
                .route(web::put().to(put_scope)),
        )
        .service(web::resource("/tenants/{tenant}/groups").route(web::get().to(search_groups)));
}

/// The most groups a scope may name.
const MAX_SCOPE_GROUPS: usize = 500;

/// The whole scope (a `PUT` replaces it): groups, and filters applied to the directory data.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Scope {
    /// Group ids whose (nested) members are in scope; empty: every user.
    #[schema(schema_with = super::object_id_list)]
    groups: Vec<String>,
    /// Leave out guests (`userType` `Guest`).
    #[serde(default)]
    exclude_guests: bool,
    /// Only users for whom this holds are in scope.
    #[serde(default)]
    condition: Option<ConditionBody>,
}

/// An attribute condition: `expression` (the rules' expression language, e.g. `department` or
/// `lower(extension_<appid>_costCenter)`) must give one of `in` (case-insensitive).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConditionBody {
    expression: String,
    #[serde(rename = "in")]
    values: Vec<String>,
}

impl Scope {
    /// The groups, checked, sorted and without duplicates, and the user filter, validated.
    pub(crate) fn checked(self) -> Result<(Vec<String>, UserFilter), ApiError> {
        let filter = user_filter(&self)?;
        let mut groups = self.groups;
        if groups.len() > MAX_SCOPE_GROUPS {
            return Err(ApiError::invalid(
                "too-many-groups",
                format!("a scope names at most {MAX_SCOPE_GROUPS} groups"),
            ));
        }
        for group in &groups {
            check_group_id(group)?;
        }
        groups.sort();
        groups.dedup();
        Ok((groups, filter))
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ScopeView {
    /// No group scope and no filter: every user of the directory.
    all_users: bool,
    groups: Vec<String>,
    exclude_guests: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    condition: Option<ConditionBody>,
}

impl ScopeView {
    fn of(groups: Option<Vec<String>>, filter: Option<UserFilter>) -> Self {
        let groups = groups.unwrap_or_default();
        let filter = filter.unwrap_or_default();
        Self {
            all_users: groups.is_empty() && !filter.is_active(),
            groups,
            exclude_guests: filter.exclude_guests,
            condition: filter.condition.map(|condition| ConditionBody {
                expression: condition.expression.source().to_owned(),
                values: condition.values,
            }),
        }
    }
}

/// The filter of a scope body, validated.
fn user_filter(scope: &Scope) -> Result<UserFilter, ApiError> {
    let filter = UserFilter {
        exclude_guests: scope.exclude_guests,
        condition: scope.condition.clone().map(|condition| Condition {
            expression: Expression::parse_lenient(condition.expression),
            values: condition.values,
        }),
    };
    filter.validate().map_err(|problems| ApiError::Invalid {
        code: "invalid-filter",
        detail: format!("the scope's filter has {} problem(s)", problems.len()),
        errors: problems,
    })?;
    Ok(filter)
}

async fn stored_scope(state: &AppState, tenant: Uuid) -> Result<ScopeView, ApiError> {
    let groups = cardsync_store::directory::scope(&state.pool, tenant).await?;
    let filter = cardsync_store::directory::user_filter(&state.pool, tenant).await?;
    Ok(ScopeView::of(groups, filter))
}

#[utoipa::path(get, operation_id = "scope_show_scope", path = "/v1/tenants/{tenant}/scope", tag = "scope", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)")), responses((status = 200, description = "The scope", body = ScopeView), Refusals))]
pub(crate) async fn show_scope(
    state: web::Data<AppState>,
    caller: Principal,
    tenant: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let tenant = visible_tenant(&state, &caller, *tenant).await?.tenant_id;
    Ok(HttpResponse::Ok().json(stored_scope(&state, tenant).await?))
}

fn check_group_id(id: &str) -> Result<(), ApiError> {
    if is_object_id(id) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "invalid-group-id",
            format!("{id:?} is not a Graph object id"),
        ))
    }
}

#[utoipa::path(put, operation_id = "scope_put_scope", path = "/v1/tenants/{tenant}/scope", tag = "scope", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)")), request_body = Scope, responses((status = 200, description = "The scope set", body = ScopeView), Refusals))]
pub(crate) async fn put_scope(
    state: web::Data<AppState>,
    caller: Principal,
    tenant: web::Path<Uuid>,
    body: web::Json<Scope>,
) -> Result<HttpResponse, ApiError> {
    let tenant = visible_tenant(&state, &caller, *tenant).await?.tenant_id;
    let (groups, filter) = body.into_inner().checked()?;
    let before = stored_scope(&state, tenant).await?;
    cardsync_store::directory::set_scope(&state.pool, tenant, &groups).await?;
    cardsync_store::directory::set_user_filter(&state.pool, tenant, Some(&filter)).await?;
    let after = ScopeView::of(Some(groups), Some(filter));
    audit(
        &state.pool,
        &caller,
        Some(tenant),
        "scope.update",
        None,
        Some(json!(before)),
        Some(json!(after)),
    )
    .await?;
    Ok(HttpResponse::Ok().json(after))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct GroupSearch {
    /// Words the group's display name starts with (1 to 256 bytes, no double quotes or control
    /// characters).
    #[param(
        max_length = 256,
        pattern = r#"^[^"\u0000-\u001F\u007F-\u009F]*[^"\s\u0000-\u001F\u007F-\u009F][^"\u0000-\u001F\u007F-\u009F]*$"#
    )]
    search: String,
    /// At most this many groups (1 to 50, default 20).
    #[param(minimum = 1, maximum = 50)]
    limit: Option<u8>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct GroupView {
    id: String,
    display_name: Option<String>,
    description: Option<String>,
    /// Users among its nested members (`$count`), when Graph could count them.
    members: Option<u64>,
}

/// A failed Graph call of a request as the caller sees it; `permission` is what the call needs.
pub(crate) fn graph_failed(error: GraphError, permission: &str) -> ApiError {
    match error {
        GraphError::Forbidden { .. } => ApiError::Conflict {
            code: "graph-permission-missing",
            detail: format!(
                "the tenant's app lacks the Graph permission {permission}; run the connection test"
            ),
        },
        // The stored connection cannot sign in: the configuration, not the service, is wrong.
        GraphError::Unauthorized
        | GraphError::Token(
            TokenError::Refused { .. }
            | TokenError::BadCertificate(_)
            | TokenError::FederatedTokenFile(_),
        ) => ApiError::Conflict {
            code: "graph-sign-in-failed",
            detail: format!(
                "the tenant's Graph connection cannot sign in ({error}); run the connection test"
            ),
        },
        other => ApiError::Graph(other.to_string()),
    }
}

#[utoipa::path(get, operation_id = "scope_search_groups", path = "/v1/tenants/{tenant}/groups", tag = "scope", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)"), GroupSearch), responses((status = 200, description = "Groups whose name has a word starting with the search", body = Items<GroupView>), Refusals))]
pub(crate) async fn search_groups(
    state: web::Data<AppState>,
    caller: Principal,
    tenant: web::Path<Uuid>,
    query: web::Query<GroupSearch>,
) -> Result<HttpResponse, ApiError> {
    let tenant = visible_tenant(&state, &caller, *tenant).await?.tenant_id;
    let term = query.search.trim();
    if term.is_empty() || term.len() > 256 || term.chars().any(|c| c == '"' || c.is_control()) {
        return Err(ApiError::bad_request(
            "invalid-search",
            "search must be 1 to 256 characters without double quotes",
        ));
    }
    let limit = query.limit.unwrap_or(20);
    if !(1..=50).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid-limit",
            "limit must be between 1 and 50",
        ));
    }
    let stored = connections::get(&state.pool, &state.sealing, tenant)
        .await
        .map_err(|error| ApiError::Internal(error.into()))?
        .ok_or_else(|| ApiError::Conflict {
            code: "no-connection",
            detail: format!("tenant {tenant} has no Graph connection; put one first"),
        })?;
    let connection = cardsync_rounds::graph_connection(stored);
    let mut url = url::Url::parse(&state.graph.url("/groups"))
        .map_err(|error| ApiError::Internal(error.into()))?;
    url.query_pairs_mut()
        .append_pair("$search", &format!("\"displayName:{term}\""))
        .append_pair("$select", "id,displayName,description")
        .append_pair("$top", &limit.to_string())
        .append_pair("$count", "true");
    let page = state
        .graph
        .get_json(&connection, url.as_str(), RequestCost::LIGHT)
        .await
        .map_err(|error| graph_failed(error, "Group.Read.All (or GroupMember.Read.All)"))?;
    let mut groups = Vec::new();
    for group in page["value"]
        .as_array()
        .into_iter()
        .flatten()
        .take(usize::from(limit))
    {
        let Some(id) = group["id"].as_str() else {
            continue;
        };
        let count_url = state.graph.url(&format!(
            "/groups/{id}/transitiveMembers/microsoft.graph.user/$count"
        ));
        let members = state
            .graph
            .get_json(&connection, &count_url, RequestCost::LIGHT)
            .await
            .ok()
            .and_then(|count| count.as_u64());
        groups.push(GroupView {
            id: id.to_owned(),
            display_name: group["displayName"].as_str().map(str::to_owned),
            description: group["description"].as_str().map(str::to_owned),
            members,
        });
    }
    Ok(HttpResponse::Ok().json(Items { items: groups }))
}
