//! The tenant's directory extension definitions (`extension_<appid>_<name>` properties), as
//! `POST /directoryObjects/getAvailableExtensionProperties` lists them: what an admin maps a card
//! field from without typing the name from memory. Needs `Directory.Read.All`.

use crate::{GraphClient, GraphError, RequestCost, TenantConnection};
use serde_json::{Value, json};

/// One directory extension definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionProperty {
    /// The property's full name, as rules and `$select` name it (`extension_<appid>_<name>`).
    pub name: String,
    /// `String`, `Integer`, `LargeInteger`, `Boolean`, `DateTime` or `Binary`.
    pub data_type: String,
    /// Holds a list of values.
    pub multi_valued: bool,
    /// The app that registered it, when Graph names it.
    pub app_display_name: Option<String>,
    /// The object types that carry it (`User`, `Group`, …).
    pub target_objects: Vec<String>,
    /// Synced from an on-premises directory by Entra Connect.
    pub synced_from_on_premises: bool,
}

impl ExtensionProperty {
    fn parse(value: &Value) -> Option<Self> {
        let text = |key: &str| value[key].as_str().map(str::to_owned);
        Some(Self {
            name: text("name")?,
            data_type: text("dataType").unwrap_or_else(|| "String".into()),
            multi_valued: value["isMultiValued"].as_bool().unwrap_or(false),
            app_display_name: text("appDisplayName").filter(|name| !name.is_empty()),
            target_objects: value["targetObjects"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|target| target.as_str().map(str::to_owned))
                .collect(),
            synced_from_on_premises: value["isSyncedFromOnPremises"].as_bool().unwrap_or(false),
        })
    }
}

impl GraphClient {
    /// Every directory extension registered in the tenant (synced or not), in Graph's order.
    pub async fn extension_properties(
        &self,
        connection: &TenantConnection,
    ) -> Result<Vec<ExtensionProperty>, GraphError> {
        let url = self.url("/directoryObjects/getAvailableExtensionProperties");
        let answer = self
            .post_json(connection, &url, &json!({}), RequestCost::LIGHT)
            .await?;
        let Some(values) = answer["value"].as_array() else {
            return Err(GraphError::BadResponse(
                "extension properties answer has no value array".into(),
            ));
        };
        Ok(values.iter().filter_map(ExtensionProperty::parse).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_definition_parses_from_graphs_representation() {
        let parsed = ExtensionProperty::parse(&json!({
            "@odata.type": "#microsoft.graph.extensionProperty",
            "id": "f1c9d8a4-1b2c-4d5e-8f90-123456789abc",
            "deletedDateTime": null,
            "appDisplayName": "HR Connector",
            "dataType": "String",
            "isMultiValued": false,
            "isSyncedFromOnPremises": true,
            "name": "extension_0a1b2c3d_costCenter",
            "targetObjects": ["User"]
        }))
        .expect("a definition");
        assert_eq!(parsed.name, "extension_0a1b2c3d_costCenter");
        assert_eq!(parsed.app_display_name.as_deref(), Some("HR Connector"));
        assert_eq!(parsed.target_objects, ["User"]);
        assert!(parsed.synced_from_on_premises);
        assert!(ExtensionProperty::parse(&json!({"dataType": "String"})).is_none());
    }
}
