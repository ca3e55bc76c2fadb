//! `/v1/tenants/{tenant}/mapping/extension-attributes`: mapping help. The tenant's directory
//! extensions as Graph lists them (`getAvailableExtensionProperties`), each with sample values
//! from the stored directory snapshot, so a rule names `extension_<appid>_<name>` by picking it.

use super::scope::graph_failed;
use super::{Items, visible_tenant};
use crate::error::ApiError;
use crate::openapi::Refusals;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use cardsync_auth::Principal;
use cardsync_store::{connections, directory};
use serde::Serialize;
use uuid::Uuid;

pub(super) fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::resource("/tenants/{tenant}/mapping/extension-attributes")
            .route(web::get().to(extension_attributes)),
    );
}

/// Sample values shown per attribute.
const SAMPLES: i32 = 3;

/// One directory extension of the tenant.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ExtensionAttributeView {
    /// What a rule names (`extension_<appid>_<name>`).
    name: String,
    /// The part after the app id, as the app registered it.
    short_name: String,
    data_type: String,
    multi_valued: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    app_display_name: Option<String>,
    /// Object types that carry it (`User`, `Group`, …); a card maps `User` ones.
    target_objects: Vec<String>,
    synced_from_on_premises: bool,
    /// The stored delta tracks it (the rules read it), so the snapshot holds its values.
    in_snapshot: bool,
    /// Users of the snapshot with a value (0 when not in the snapshot).
    users_with_value: i64,
    /// Up to three distinct values from the snapshot.
    samples: Vec<String>,
}

/// `extension_<appid>_<name>` without its prefix and app id.
fn short_name(name: &str) -> String {
    name.strip_prefix("extension_")
        .and_then(|rest| rest.split_once('_'))
        .map_or_else(|| name.to_owned(), |(_, short)| short.to_owned())
}

#[utoipa::path(get, operation_id = "mapping_extension_attributes", path = "/v1/tenants/{tenant}/mapping/extension-attributes", tag = "mapping", params(("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)")), responses((status = 200, description = "The tenant's directory extensions as Graph lists them, with sample values from the snapshot", body = Items<ExtensionAttributeView>), Refusals))]
pub(crate) async fn extension_attributes(
    state: web::Data<AppState>,
    caller: Principal,
    tenant: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let tenant = visible_tenant(&state, &caller, *tenant).await?.tenant_id;
    let stored = connections::get(&state.pool, &state.sealing, tenant)
        .await
        .map_err(|error| ApiError::Internal(error.into()))?
        .ok_or_else(|| ApiError::Conflict {
            code: "no-connection",
            detail: format!("tenant {tenant} has no Graph connection; put one first"),
        })?;
    let connection = cardsync_rounds::graph_connection(stored);
    let defined = state
        .graph
        .extension_properties(&connection)
        .await
        .map_err(|error| graph_failed(error, "Directory.Read.All"))?;
    let selected = directory::users_select(&state.pool, tenant)
        .await?
        .unwrap_or_default();
    let names: Vec<String> = defined.iter().map(|p| p.name.clone()).collect();
    let mut found = directory::property_samples(&state.pool, tenant, &names, SAMPLES).await?;
    let items: Vec<ExtensionAttributeView> = defined
        .into_iter()
        .map(|property| {
            let (users_with_value, samples) = found
                .iter_mut()
                .find(|(name, _, _)| *name == property.name)
                .map(|(_, count, samples)| (*count, std::mem::take(samples)))
                .unwrap_or_default();
            ExtensionAttributeView {
                short_name: short_name(&property.name),
                in_snapshot: selected.contains(&property.name),
                name: property.name,
                data_type: property.data_type,
                multi_valued: property.multi_valued,
                app_display_name: property.app_display_name,
                target_objects: property.target_objects,
                synced_from_on_premises: property.synced_from_on_premises,
                users_with_value,
                samples,
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(Items { items }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_short_name_drops_the_prefix_and_the_app_id() {
        assert_eq!(short_name("extension_0a1b2c_costCenter"), "costCenter");
        assert_eq!(short_name("extension_0a1b2c_cost_center"), "cost_center");
        assert_eq!(short_name("department"), "department");
    }
}
