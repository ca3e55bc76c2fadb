//! `POST /directoryObjects/getAvailableExtensionProperties`: the directory extension definitions
//! of the tenant, as Graph lists them (`extensionProperty` resources). The simulator keeps no
//! separate definitions: every `extension_<appid>_<name>` some user or group of the tenant
//! carries is defined, with its data type from its values and the owning app's display name
//! when that app is registered in the tenant. None is synced from on-premises, so
//! `isSyncedFromOnPremises: true` lists none.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::web::{Bytes, Data};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{Value, json};

use crate::directory::{Kind, LifeState};
use crate::state::{Sim, read};

use super::{CONTEXT_BASE, Cost, Ctx, GraphError, Reply, run};

/// Graph's least privileged permission for the listing, and the one above it.
const DIRECTORY_READ: &[&str] = &["Directory.Read.All", "Directory.ReadWrite.All"];

/// What Graph knows of one definition while it is collected.
#[derive(Default)]
struct Definition {
    data_type: &'static str,
    multi_valued: bool,
    targets: Vec<&'static str>,
}

/// Graph's `dataType` of a value (`String` unless it is plainly something else).
fn data_type(value: &Value) -> &'static str {
    match value {
        Value::Bool(_) => "Boolean",
        Value::Number(n) if n.is_i64() && n.as_i64().is_some_and(|n| i32::try_from(n).is_ok()) => {
            "Integer"
        }
        Value::Number(_) => "LargeInteger",
        Value::Array(items) => items.first().map_or("String", data_type),
        _ => "String",
    }
}

/// The `<appid>` of `extension_<appid>_<name>` (the app's client id without dashes).
fn owner_app(name: &str) -> Option<&str> {
    name.strip_prefix("extension_")?
        .split_once('_')
        .map(|(app, _)| app)
}

/// A stable object id for a definition (derived from its name, as the simulator stores none).
fn definition_id(name: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(name.as_bytes());
    let mut bytes = [0_u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

fn definitions(ctx: &Ctx) -> Vec<Value> {
    let dir = read(&ctx.tenant.dir);
    let mut found: BTreeMap<String, Definition> = BTreeMap::new();
    for (kind, target) in [(Kind::User, "User"), (Kind::Group, "Group")] {
        for object in dir.objects(kind).values() {
            if object.state == LifeState::Purged {
                continue;
            }
            for (name, value) in object.extensions() {
                let definition = found.entry(name.clone()).or_default();
                if definition.data_type.is_empty() {
                    definition.data_type = data_type(value);
                    definition.multi_valued = value.is_array();
                }
                if !definition.targets.contains(&target) {
                    definition.targets.push(target);
                }
            }
        }
    }
    drop(dir);
    let apps = read(&ctx.tenant.apps);
    found
        .into_iter()
        .map(|(name, definition)| {
            let app_name = owner_app(&name).and_then(|owner| {
                apps.values()
                    .find(|app| app.client_id.replace('-', "").eq_ignore_ascii_case(owner))
                    .map(|app| app.display_name.clone())
            });
            json!({
                "@odata.type": "#microsoft.graph.extensionProperty",
                "id": definition_id(&name),
                "deletedDateTime": null,
                "appDisplayName": app_name.unwrap_or_default(),
                "dataType": definition.data_type,
                "isMultiValued": definition.multi_valued,
                "isSyncedFromOnPremises": false,
                "name": name,
                "targetObjects": definition.targets,
            })
        })
        .collect()
}

/// The optional body: `{}` or `{"isSyncedFromOnPremises": bool}`; an empty body counts as `{}`.
fn synced_filter(body: &[u8]) -> Result<Option<bool>, GraphError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let invalid = |detail: String| GraphError::BadRequest("Request_BadRequest", detail);
    let parsed: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("The request body is not valid JSON: {e}")))?;
    let Value::Object(fields) = parsed else {
        return Err(invalid("The request body must be a JSON object.".into()));
    };
    let mut synced = None;
    for (key, value) in fields {
        match (key.as_str(), value) {
            ("isSyncedFromOnPremises", Value::Bool(b)) => synced = Some(b),
            ("isSyncedFromOnPremises", Value::Null) => {}
            (key, _) => {
                return Err(invalid(format!(
                    "Invalid parameter '{key}' for getAvailableExtensionProperties."
                )));
            }
        }
    }
    Ok(synced)
}

pub(super) async fn available_extension_properties(
    sim: Data<Sim>,
    req: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    let cost = Cost {
        base: 1,
        has_select: false,
        top: None,
    };
    let ep = "directoryObjects.getAvailableExtensionProperties";
    run(&sim, &req, ep, DIRECTORY_READ, Some(cost), |ctx| {
        let synced = synced_filter(&body)?;
        let value = if synced == Some(true) {
            Vec::new()
        } else {
            definitions(ctx)
        };
        Ok(Reply::Json(
            StatusCode::OK,
            json!({
                "@odata.context": format!("{CONTEXT_BASE}#Collection(microsoft.graph.extensionProperty)"),
                "value": value,
            }),
            Vec::new(),
        ))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_types_follow_the_values_and_the_owner_is_read_from_the_name() {
        assert_eq!(data_type(&json!("CC-1")), "String");
        assert_eq!(data_type(&json!(7)), "Integer");
        assert_eq!(data_type(&json!(7_000_000_000_i64)), "LargeInteger");
        assert_eq!(data_type(&json!(true)), "Boolean");
        assert_eq!(data_type(&json!(["a"])), "String");
        assert_eq!(owner_app("extension_0a1b_costCenter"), Some("0a1b"));
        assert_eq!(owner_app("costCenter"), None);
    }

    #[test]
    fn the_body_may_be_empty_or_name_the_synced_filter_and_nothing_else() {
        assert_eq!(synced_filter(b"").unwrap(), None);
        assert_eq!(synced_filter(b"{}").unwrap(), None);
        assert_eq!(
            synced_filter(br#"{"isSyncedFromOnPremises": true}"#).unwrap(),
            Some(true)
        );
        assert!(synced_filter(br#"{"other": 1}"#).is_err());
        assert!(synced_filter(b"[1]").is_err());
    }
}
