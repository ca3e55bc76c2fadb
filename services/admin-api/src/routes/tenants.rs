//! `/v1/tenants`: create, list, show, patch (a merge), disconnect, reconnect, and the tenant's
//! admin audit log.

use super::{Page, PageQuery, audit, check_access, rfc3339, uuid_cursor, visible_tenant};
use crate::error::ApiError;
use crate::openapi::Refusals;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use cardsync_auth::{Principal, TenantAccess};
use cardsync_rules::FieldRules;
use cardsync_store::admin::{self, TenantChanges, TenantSummary};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub(super) fn configure(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/tenants")
                .route(web::get().to(list))
                .route(web::post().to(create)),
        )
        .service(
            web::resource("/tenants/{tenant}")
                .route(web::get().to(show))
                .route(web::patch().to(patch)),
        )
        .service(web::resource("/tenants/{tenant}/disconnect").route(web::post().to(disconnect)))
        .service(web::resource("/tenants/{tenant}/reconnect").route(web::post().to(reconnect)))
        .service(web::resource("/tenants/{tenant}/audit").route(web::get().to(changes)));
}

/// A tenant as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TenantView {
    id: Uuid,
    name: String,
    invites_enabled: bool,
    admin_roles_enabled: bool,
    rules_version: i64,
    has_connection: bool,
    /// Connected and synced: a connection is stored and the tenant is not disconnected.
    syncing: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    disconnected_at: Option<String>,
    created_at: String,
    updated_at: String,
}

impl From<TenantSummary> for TenantView {
    fn from(tenant: TenantSummary) -> Self {
        Self {
            id: tenant.tenant_id,
            name: tenant.name,
            invites_enabled: tenant.invites_enabled,
            admin_roles_enabled: tenant.admin_roles_enabled,
            rules_version: tenant.rules_version,
            has_connection: tenant.has_connection,
            syncing: tenant.has_connection && tenant.disconnected_at.is_none(),
            disconnected_at: tenant.disconnected_at.map(rfc3339),
            created_at: rfc3339(tenant.created_at),
            updated_at: rfc3339(tenant.updated_at),
        }
    }
}

fn view_json(tenant: &TenantSummary) -> serde_json::Value {
    serde_json::to_value(TenantView::from(tenant.clone())).unwrap_or_default()
}

/// A display name: 1 to 256 characters, no control characters.
fn check_name(name: &str) -> Result<(), ApiError> {
    let length = name.chars().count();
    if !(1..=256).contains(&length) || name.trim().is_empty() {
        return Err(ApiError::invalid(
            "invalid-name",
            "name must be 1 to 256 characters, not only spaces",
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "invalid-name",
            "name must not contain control characters",
        ));
    }
    Ok(())
}

/// Rules validated, every problem listed with where it is.
pub(crate) fn check_rules(rules: &FieldRules) -> Result<(), ApiError> {
    rules.validate().map_err(|problems| ApiError::Invalid {
        code: "invalid-rules",
        detail: format!("the rules have {} problem(s)", problems.len()),
        errors: problems.iter().map(ToString::to_string).collect(),
    })
}

#[utoipa::path(get, operation_id = "tenants_list", path = "/v1/tenants", tag = "tenants", params(PageQuery), responses((status = 200, description = "Tenants the caller may see, by id", body = Page<TenantView>), Refusals))]
pub(crate) async fn list(
    state: web::Data<AppState>,
    caller: Principal,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit(&state)?;
    let after = uuid_cursor(query.cursor.as_deref())?;
    let only: Option<Vec<Uuid>> = match &caller.tenants {
        TenantAccess::All => None,
        TenantAccess::Only(tenants) => Some(tenants.iter().copied().collect()),
    };
    let tenants = admin::tenants(&state.pool, only.as_deref(), after, limit).await?;
    let page = Page::of(
        tenants.into_iter().map(TenantView::from).collect(),
        limit,
        |tenant: &TenantView| tenant.id.to_string(),
    );
    Ok(HttpResponse::Ok().json(page))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewTenant {
    id: Uuid,
    /// 1 to 256 characters, not only spaces, no control characters.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    name: String,
    #[serde(default)]
    invites_enabled: bool,
    #[serde(default)]
    admin_roles_enabled: bool,
    /// Field rules (crates/rules/README.md); the defaults when absent.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    rules: Option<FieldRules>,
}

impl NewTenant {
    /// The name and the rules (the defaults when absent), checked.
    pub(crate) fn check(&self) -> Result<(), ApiError> {
        check_name(&self.name)?;
        match &self.rules {
            Some(rules) => check_rules(rules),
            None => check_rules(&FieldRules::default()),
        }
    }
}

#[utoipa::path(post, operation_id = "tenants_create", path = "/v1/tenants", tag = "tenants", request_body = NewTenant, responses((status = 201, description = "Created", body = TenantView), Refusals))]
pub(crate) async fn create(
    state: web::Data<AppState>,
    caller: Principal,
    body: web::Json<NewTenant>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    check_access(&caller, body.id)?;
    body.check()?;
    let rules = body.rules.unwrap_or_default();
    let mut tx = state.pool.begin().await?;
    let created = admin::create_tenant(
        &mut tx,
        body.id,
        &body.name,
        &rules,
        body.invites_enabled,
        body.admin_roles_enabled,
        &caller.subject,
    )
    .await?;
    if !created {
        return Err(ApiError::Conflict {
            code: "tenant-exists",
            detail: format!("tenant {} exists already; PATCH it instead", body.id),
        });
    }
    let tenant = admin::tenant(&mut *tx, body.id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant", body.id))?;
    audit(
        &mut *tx,
        &caller,
        Some(body.id),
        "tenant.create",
        None,
        None,
        Some(view_json(&tenant)),
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/v1/tenants/{}", body.id)))
        .json(TenantView::from(tenant)))
}

#[utoipa::path(get, operation_id = "tenants_show", path = "/v1/tenants/{tenant}", tag = "tenants", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)")), responses((status = 200, description = "The tenant", body = TenantView), Refusals))]
pub(crate) async fn show(
    state: web::Data<AppState>,
    caller: Principal,
    tenant: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let tenant = visible_tenant(&state, &caller, *tenant).await?;
    Ok(HttpResponse::Ok().json(TenantView::from(tenant)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantPatch {
    /// 1 to 256 characters, not only spaces, no control characters.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    name: Option<String>,
    invites_enabled: Option<bool>,
    admin_roles_enabled: Option<bool>,
}

impl TenantPatch {
    /// The new name, when given, checked.
    pub(crate) fn check(&self) -> Result<(), ApiError> {
        self.name.as_deref().map_or(Ok(()), check_name)
    }
}

#[utoipa::path(patch, operation_id = "tenants_patch", path = "/v1/tenants/{tenant}", tag = "tenants", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)")), request_body = TenantPatch, responses((status = 200, description = "The tenant after the merge", body = TenantView), Refusals))]
pub(crate) async fn patch(
    state: web::Data<AppState>,
    caller: Principal,
    tenant: web::Path<Uuid>,
    body: web::Json<TenantPatch>,
) -> Result<HttpResponse, ApiError> {
    let tenant = *tenant;
    check_access(&caller, tenant)?;
    let body = body.into_inner();
    body.check()?;
    let changes = TenantChanges {
        name: body.name,
        invites_enabled: body.invites_enabled,
        admin_roles_enabled: body.admin_roles_enabled,
    };
    let mut tx = state.pool.begin().await?;
    let before = admin::tenant(&mut *tx, tenant)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant", tenant))?;
    admin::update_tenant(&mut tx, tenant, &changes).await?;
    let after = admin::tenant(&mut *tx, tenant)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant", tenant))?;
    audit(
        &mut *tx,
        &caller,
        Some(tenant),
        "tenant.update",
        None,
        Some(view_json(&before)),
        Some(view_json(&after)),
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(TenantView::from(after)))
}

async fn set_disconnected(
    state: &AppState,
    caller: &Principal,
    tenant: Uuid,
    disconnected: bool,
) -> Result<HttpResponse, ApiError> {
    check_access(caller, tenant)?;
    let mut tx = state.pool.begin().await?;
    let before = admin::tenant(&mut *tx, tenant)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant", tenant))?;
    admin::set_disconnected(&mut tx, tenant, disconnected).await?;
    let after = admin::tenant(&mut *tx, tenant)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant", tenant))?;
    let action = if disconnected {
        "tenant.disconnect"
    } else {
        "tenant.reconnect"
    };
    audit(
        &mut *tx,
        caller,
        Some(tenant),
        action,
        None,
        Some(view_json(&before)),
        Some(view_json(&after)),
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(TenantView::from(after)))
}

#[utoipa::path(post, operation_id = "tenants_disconnect", path = "/v1/tenants/{tenant}/disconnect", tag = "tenants", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)")), responses((status = 200, description = "Disconnected: not synced, cards kept, locked fields editable", body = TenantView), Refusals))]
pub(crate) async fn disconnect(
    state: web::Data<AppState>,
    caller: Principal,
    tenant: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    set_disconnected(&state, &caller, *tenant, true).await
}

#[utoipa::path(post, operation_id = "tenants_reconnect", path = "/v1/tenants/{tenant}/reconnect", tag = "tenants", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)")), responses((status = 200, description = "Synced again", body = TenantView), Refusals))]
pub(crate) async fn reconnect(
    state: web::Data<AppState>,
    caller: Principal,
    tenant: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    set_disconnected(&state, &caller, *tenant, false).await
}

/// One admin change as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ChangeView {
    id: i64,
    actor: String,
    action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[schema(value_type = Option<Object>)]
    before: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    after: Option<serde_json::Value>,
    at: String,
}

#[utoipa::path(get, operation_id = "tenants_changes", path = "/v1/tenants/{tenant}/audit", tag = "tenants", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)"), PageQuery), responses((status = 200, description = "Admin changes, newest first", body = Page<ChangeView>), Refusals))]
pub(crate) async fn changes(
    state: web::Data<AppState>,
    caller: Principal,
    tenant: web::Path<Uuid>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let tenant = visible_tenant(&state, &caller, *tenant).await?;
    let limit = query.limit(&state)?;
    let before = query
        .cursor
        .as_deref()
        .map(|cursor| {
            cursor.parse::<i64>().map_err(|_| {
                ApiError::bad_request("invalid-cursor", "cursor is not one this API gave")
            })
        })
        .transpose()?;
    let records = admin::changes(&state.pool, tenant.tenant_id, before, limit).await?;
    let items: Vec<ChangeView> = records
        .into_iter()
        .map(|record| ChangeView {
            id: record.id,
            actor: record.actor,
            action: record.action,
            target: record.target,
            before: record.before.map(|json| json.0),
            after: record.after.map(|json| json.0),
            at: rfc3339(record.at),
        })
        .collect();
    Ok(
        HttpResponse::Ok().json(Page::of(items, limit, |change: &ChangeView| {
            change.id.to_string()
        })),
    )
}
