//! Change-notification subscriptions (graph-facts §4): create, renew, delete and list.
//!
//! Renewal is a PATCH of `expirationDateTime`, which also reauthorizes; cardsync never calls
//! `/reauthorize`, so it never sends the reauthorize-and-PATCH pair within 10 minutes that Graph
//! warns against.

use crate::client::{GraphClient, RequestCost};
use crate::credential::TenantConnection;
use crate::error::GraphError;
use reqwest::Method;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// What to subscribe to, and where Graph should deliver.
#[derive(Debug)]
pub struct NewSubscription<'a> {
    /// `/users` or `/groups`.
    pub resource: &'a str,
    /// Comma-separated change types (`updated,deleted` for users and groups).
    pub change_type: &'a str,
    /// The webhook's notification URL.
    pub notification_url: &'a str,
    /// The webhook's lifecycle URL.
    pub lifecycle_notification_url: &'a str,
    /// The fresh secret Graph echoes in every notification.
    pub client_state: &'a SecretString,
    /// Requested expiry (Graph raises it to 45 minutes at least).
    pub expires_at: OffsetDateTime,
}

/// A subscription as Graph describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphSubscription {
    /// Graph's id.
    pub id: String,
    /// The watched resource, as Graph spells it.
    pub resource: String,
    /// Where notifications go.
    pub notification_url: String,
    /// When it stops unless renewed.
    pub expires_at: OffsetDateTime,
}

impl GraphSubscription {
    fn parse(value: &Value) -> Result<Self, GraphError> {
        let text = |key: &str| {
            value
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| GraphError::BadResponse(format!("subscription without {key}")))
        };
        let expiry = text("expirationDateTime")?;
        let expires_at = OffsetDateTime::parse(&expiry, &Rfc3339).map_err(|_| {
            GraphError::BadResponse(format!("subscription expiry {expiry:?} is not RFC 3339"))
        })?;
        Ok(Self {
            id: text("id")?,
            resource: text("resource")?,
            notification_url: text("notificationUrl").unwrap_or_default(),
            expires_at,
        })
    }
}

fn graph_time(at: OffsetDateTime) -> Result<String, GraphError> {
    at.format(&Rfc3339)
        .map_err(|e| GraphError::BadResponse(format!("expiry not formattable: {e}")))
}

impl GraphClient {
    /// `POST /subscriptions`. Graph validates the notification and lifecycle URLs before it
    /// answers `201`; a duplicate is [`GraphError::Conflict`], the quota
    /// [`GraphError::SubscriptionQuota`].
    pub async fn create_subscription(
        &self,
        connection: &TenantConnection,
        request: &NewSubscription<'_>,
    ) -> Result<GraphSubscription, GraphError> {
        let body = json!({
            "changeType": request.change_type,
            "notificationUrl": request.notification_url,
            "lifecycleNotificationUrl": request.lifecycle_notification_url,
            "resource": request.resource,
            "expirationDateTime": graph_time(request.expires_at)?,
            "clientState": request.client_state.expose_secret(),
        });
        let url = self.url("/subscriptions");
        self.subscription_call(connection, Method::POST, &url, Some(&body))
            .await
    }

    /// `PATCH /subscriptions/{id}` with a new expiry: renews and reauthorizes. A
    /// [`GraphError::NotFound`] means the subscription is gone and must be created anew.
    pub async fn renew_subscription(
        &self,
        connection: &TenantConnection,
        id: &str,
        expires_at: OffsetDateTime,
    ) -> Result<GraphSubscription, GraphError> {
        let body = json!({ "expirationDateTime": graph_time(expires_at)? });
        let url = self.url(&format!("/subscriptions/{id}"));
        self.subscription_call(connection, Method::PATCH, &url, Some(&body))
            .await
    }

    /// `DELETE /subscriptions/{id}`; one that is already gone counts as deleted.
    pub async fn delete_subscription(
        &self,
        connection: &TenantConnection,
        id: &str,
    ) -> Result<(), GraphError> {
        let url = self.url(&format!("/subscriptions/{id}"));
        match self
            .call(
                connection,
                Method::DELETE,
                &url,
                None,
                RequestCost::LIGHT,
                None,
            )
            .await
        {
            Ok(_) | Err(GraphError::NotFound) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// `GET /subscriptions`, every page: the app's subscriptions in the connection's tenant.
    pub async fn list_subscriptions(
        &self,
        connection: &TenantConnection,
    ) -> Result<Vec<GraphSubscription>, GraphError> {
        let url = self.url("/subscriptions");
        self.get_all(connection, &url, RequestCost::LIGHT)
            .await?
            .iter()
            .map(GraphSubscription::parse)
            .collect()
    }

    async fn subscription_call(
        &self,
        connection: &TenantConnection,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<GraphSubscription, GraphError> {
        let response = self
            .call(connection, method, url, body, RequestCost::LIGHT, None)
            .await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| GraphError::BadResponse(format!("body: {e}")))?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| GraphError::BadResponse(format!("not JSON: {e}")))?;
        GraphSubscription::parse(&value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_parses_from_graphs_representation() {
        let parsed = GraphSubscription::parse(&json!({
            "id": "7f105c7d-2dc5-4530-97cd-4e7ae6534c07",
            "resource": "/users",
            "notificationUrl": "https://hooks.example.com/graph/notifications",
            "expirationDateTime": "2026-12-24T18:23:45.9356913Z",
            "clientState": null
        }))
        .expect("parses");
        assert_eq!(parsed.id, "7f105c7d-2dc5-4530-97cd-4e7ae6534c07");
        assert_eq!(parsed.expires_at.unix_timestamp(), 1_798_136_625);
        assert!(GraphSubscription::parse(&json!({"id": "x", "resource": "/users"})).is_err());
    }
}
