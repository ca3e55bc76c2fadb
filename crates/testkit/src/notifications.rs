//! Microsoft Graph change notifications as Graph posts them to the webhook (graph-facts §5), for
//! the webhook's tests and the ingest benchmark's load.

use serde_json::{Value, json};
use uuid::Uuid;

/// One `value[]` item: a Graph-shaped change notification that user `user` of `tenant` was
/// updated, under `subscription` with its `client_state`.
pub fn user_change(subscription: Uuid, tenant: Uuid, client_state: &str, user: &str) -> Value {
    json!({
        "subscriptionId": subscription,
        "subscriptionExpirationDateTime": "2026-11-24T18:23:45.9356913Z",
        "changeType": "updated",
        "resource": format!("Users/{user}"),
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.User",
            "@odata.id": format!("Users/{user}"),
            "id": user,
            "organizationId": tenant,
            "sequenceNumber": 1
        },
        "clientState": client_state,
        "tenantId": tenant
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_change_names_its_subscription_tenant_user_and_client_state() {
        let (subscription, tenant) = (Uuid::new_v4(), Uuid::new_v4());
        let change = user_change(subscription, tenant, "secret", "u1");
        assert_eq!(change["subscriptionId"], subscription.to_string());
        assert_eq!(change["tenantId"], tenant.to_string());
        assert_eq!(change["resourceData"]["organizationId"], tenant.to_string());
        assert_eq!(change["resource"], "Users/u1");
        assert_eq!(change["resourceData"]["id"], "u1");
        assert_eq!(change["clientState"], "secret");
    }
}
