//! Change-notification subscriptions for users and groups (graph-facts §1, §4, §5).
//!
//! Request validation, limits and the validation handshake live here; the HTTP layer only maps results.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::clock::{graph_time, parse_time};
use crate::directory::{ChangeType, DirEvent, Kind};

/// Floor of `expirationDateTime` (a smaller value is raised to it).
pub const MIN_EXPIRY_MINUTES: i64 = 45;
/// Ceiling for users and groups.
pub const MAX_EXPIRY_MINUTES: i64 = 41_760;
/// Subscriptions per app and tenant.
pub const MAX_PER_APP_TENANT: usize = 100;
/// Longest accepted `clientState`.
pub const MAX_CLIENT_STATE: usize = 128;

/// What a subscription watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `/users`.
    Users,
    /// `/users/{id}`.
    User(String),
    /// `/groups`.
    Groups,
    /// `/groups/{id}`.
    Group(String),
    /// `/groups/{id}/members`.
    GroupMembers(String),
}

impl Target {
    /// Parses a `resource` string (with or without the leading slash).
    pub fn parse(resource: &str) -> Option<Self> {
        let parts: Vec<&str> = resource.trim_matches('/').split('/').collect();
        match parts.as_slice() {
            ["users"] => Some(Target::Users),
            ["users", id] => Some(Target::User((*id).to_owned())),
            ["groups"] => Some(Target::Groups),
            ["groups", id] => Some(Target::Group((*id).to_owned())),
            ["groups", id, "members"] => Some(Target::GroupMembers((*id).to_owned())),
            _ => None,
        }
    }

    /// The object kind the subscription is about.
    pub fn kind(&self) -> Kind {
        match self {
            Target::Users | Target::User(_) => Kind::User,
            _ => Kind::Group,
        }
    }

    /// Whether a directory change concerns this subscription.
    pub fn matches(&self, ev: &DirEvent) -> bool {
        match self {
            Target::Users => ev.kind == Kind::User,
            Target::User(id) => ev.kind == Kind::User && *id == ev.id,
            Target::Groups => ev.kind == Kind::Group,
            Target::Group(id) => ev.kind == Kind::Group && *id == ev.id,
            Target::GroupMembers(id) => {
                ev.kind == Kind::Group && *id == ev.id && !ev.members.is_empty()
            }
        }
    }
}

/// A stored subscription.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// Subscription id.
    pub id: String,
    /// `resource` as the client sent it.
    pub resource: String,
    /// Parsed target.
    pub target: Target,
    /// `changeType` as sent (comma-separated).
    pub change_type: String,
    /// Webhook URL.
    pub notification_url: String,
    /// Lifecycle webhook URL.
    pub lifecycle_url: Option<String>,
    /// Secret echoed in notifications.
    pub client_state: Option<String>,
    /// Expiry.
    pub expiration: OffsetDateTime,
    /// The creating app's client id.
    pub application_id: String,
    /// The creating app's service principal id.
    pub creator_id: String,
    /// `latestSupportedTlsVersion`.
    pub tls_version: String,
    /// A `reauthorizationRequired` was sent since the last renewal or reauthorization.
    pub reauthorization_sent: bool,
    /// From this instant on, change notifications are not sent until the subscription is reauthorized or
    /// renewed (graph-facts §5: the flow "pauses until you act"; what changes meanwhile is never notified).
    pub paused_from: Option<OffsetDateTime>,
}

impl Subscription {
    /// Whether delivery is paused at `now` by an unanswered `reauthorizationRequired`.
    pub fn is_paused(&self, now: OffsetDateTime) -> bool {
        self.paused_from.is_some_and(|from| from <= now)
    }

    /// Records a `reauthorizationRequired` sent at `now`: delivery pauses `grace` later.
    pub fn challenge(&mut self, now: OffsetDateTime, grace: time::Duration) {
        self.reauthorization_sent = true;
        if self.paused_from.is_none() {
            self.paused_from = Some(now + grace);
        }
    }

    /// A renewal or reauthorization answers the challenge: delivery resumes.
    pub fn answer_challenge(&mut self) {
        self.reauthorization_sent = false;
        self.paused_from = None;
    }

    /// Whether notifications of this change type are wanted.
    pub fn wants(&self, change: ChangeType) -> bool {
        self.change_type
            .split(',')
            .any(|c| c.trim() == change.as_str())
    }

    /// The representation in a list: Graph leaves the `clientState` out of lists "for security purposes"
    /// (subscription-list.md), though create, get and update return it.
    pub fn to_listed_json(&self) -> Value {
        let mut v = self.to_json();
        v["clientState"] = Value::Null;
        v
    }

    /// The Graph representation (subscription resource).
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.application_id,
            "changeType": self.change_type,
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "notificationQueryOptions": null,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": graph_time(self.expiration),
            "creatorId": self.creator_id,
            "includeResourceData": false,
            "latestSupportedTlsVersion": self.tls_version,
            "encryptionCertificate": null,
            "encryptionCertificateId": null,
            "notificationUrlAppId": null,
            "notificationContentType": null,
        })
    }
}

/// How the simulator treats plain-HTTP notification URLs (Graph requires HTTPS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum UrlPolicy {
    /// HTTPS only, like Graph.
    HttpsOnly,
    /// HTTPS, or HTTP to a loopback host.
    #[default]
    HttpLoopback,
    /// HTTPS or HTTP anywhere (in-cluster demos).
    HttpAny,
}

/// Subscription switches.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubscriptionPolicy {
    /// Which notification URLs are accepted.
    pub url_policy: UrlPolicy,
    /// Refuse an `expirationDateTime` past the ceiling (otherwise clamp it).
    pub reject_over_max: bool,
    /// Accept `created` in `changeType` for users and groups (Graph's behaviour is undocumented).
    pub allow_created: bool,
    /// Validation handshake timeout.
    pub validation_timeout_ms: u64,
    /// Send `reauthorizationRequired` this many simulated minutes before expiry.
    pub reauthorize_before_minutes: i64,
    /// After a `reauthorizationRequired`, change notifications keep flowing this many simulated minutes, then
    /// pause until the subscription is reauthorized or renewed (Graph: "for a while"; 0 = pause at once).
    pub pause_after_minutes: i64,
    /// Subscriptions per page of `GET /subscriptions` (Graph pages the list with `@odata.nextLink`; the size is
    /// not documented).
    pub list_page_size: usize,
}

impl Default for SubscriptionPolicy {
    fn default() -> Self {
        Self {
            url_policy: UrlPolicy::HttpLoopback,
            reject_over_max: true,
            allow_created: false,
            validation_timeout_ms: 10_000,
            reauthorize_before_minutes: 15,
            pause_after_minutes: 0,
            list_page_size: 100,
        }
    }
}

/// A `POST /subscriptions` or `PATCH` body.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionBody {
    /// Comma-separated change types.
    pub change_type: Option<String>,
    /// Webhook URL.
    pub notification_url: Option<String>,
    /// Lifecycle webhook URL.
    pub lifecycle_notification_url: Option<String>,
    /// Watched resource.
    pub resource: Option<String>,
    /// Expiry (ISO 8601).
    pub expiration_date_time: Option<String>,
    /// Secret echoed back.
    pub client_state: Option<String>,
    /// Rich notifications (not supported for users and groups).
    #[serde(default)]
    pub include_resource_data: bool,
    /// TLS version hint.
    pub latest_supported_tls_version: Option<String>,
}

/// Why a subscription request was refused; each maps to one Graph status and message.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SubscriptionError {
    /// 400: a required property is missing.
    #[error("The property '{0}' is required.")]
    Missing(&'static str),
    /// 400: malformed value.
    #[error("{0}")]
    Invalid(String),
    /// 400: the handshake failed.
    #[error(
        "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request."
    )]
    ValidationFailed,
    /// 400: the handshake timed out.
    #[error("Subscription validation request timed out.")]
    ValidationTimedOut,
    /// 409: same changeType and resource already subscribed.
    #[error(
        "Operation: Create; Exception: [Status Code: Conflict; Reason: Subscription Id {0} already exists for the requested combination]"
    )]
    Duplicate(String),
    /// 403: over 100 per app and tenant.
    #[error(
        "Operation: Create; Exception: [Status Code: Forbidden; Reason: The maximum number of subscriptions ({MAX_PER_APP_TENANT}) for this application in this tenant has been reached.]"
    )]
    Quota,
    /// 404: unknown or expired subscription.
    #[error("The object was not found.")]
    NotFound,
}

/// Checks a create body; returns the parsed target and the effective expiry.
pub fn check_create(
    body: &SubscriptionBody,
    policy: &SubscriptionPolicy,
    now: OffsetDateTime,
) -> Result<(Target, OffsetDateTime), SubscriptionError> {
    let change_type = body
        .change_type
        .as_deref()
        .ok_or(SubscriptionError::Missing("changeType"))?;
    let url = body
        .notification_url
        .as_deref()
        .ok_or(SubscriptionError::Missing("notificationUrl"))?;
    let resource = body
        .resource
        .as_deref()
        .ok_or(SubscriptionError::Missing("resource"))?;
    let expiry = body
        .expiration_date_time
        .as_deref()
        .ok_or(SubscriptionError::Missing("expirationDateTime"))?;
    let target = Target::parse(resource).ok_or_else(|| {
        SubscriptionError::Invalid(format!("Resource '{resource}' is not supported."))
    })?;
    check_change_type(change_type, policy)?;
    check_url(url, policy)?;
    if let Some(lc) = body.lifecycle_notification_url.as_deref() {
        check_url(lc, policy)?;
    }
    if body
        .client_state
        .as_ref()
        .is_some_and(|c| c.chars().count() > MAX_CLIENT_STATE)
    {
        return Err(SubscriptionError::Invalid(format!(
            "The clientState property value exceeds the maximum length of {MAX_CLIENT_STATE} characters."
        )));
    }
    if body.include_resource_data {
        return Err(SubscriptionError::Invalid(format!(
            "Rich notifications (includeResourceData) are not supported for resource '{resource}'."
        )));
    }
    Ok((target, effective_expiry(expiry, policy, now)?))
}

fn check_change_type(
    change_type: &str,
    policy: &SubscriptionPolicy,
) -> Result<(), SubscriptionError> {
    for c in change_type.split(',').map(str::trim) {
        let ok = matches!(c, "updated" | "deleted") || (c == "created" && policy.allow_created);
        if !ok {
            return Err(SubscriptionError::Invalid(format!(
                "ChangeType '{c}' is not supported for this resource. Supported change types are 'updated' and 'deleted'."
            )));
        }
    }
    Ok(())
}

/// Checks a notification URL against the URL policy.
pub fn check_url(url: &str, policy: &SubscriptionPolicy) -> Result<(), SubscriptionError> {
    let parsed = url::Url::parse(url).map_err(|_| {
        SubscriptionError::Invalid(format!("The Url '{url}' is not a valid absolute URL."))
    })?;
    let loopback = matches!(
        parsed.host_str(),
        Some("localhost" | "127.0.0.1" | "[::1]" | "::1")
    );
    let ok = match (parsed.scheme(), policy.url_policy) {
        ("https", _) => true,
        ("http", UrlPolicy::HttpAny) => true,
        ("http", UrlPolicy::HttpLoopback) => loopback,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(SubscriptionError::Invalid(format!(
            "The Url '{url}' is not valid. It must use the https scheme."
        )))
    }
}

/// Applies the 45-minute floor and the 41,760-minute ceiling.
pub fn effective_expiry(
    raw: &str,
    policy: &SubscriptionPolicy,
    now: OffsetDateTime,
) -> Result<OffsetDateTime, SubscriptionError> {
    let t = parse_time(raw).ok_or_else(|| {
        SubscriptionError::Invalid(format!(
            "The expirationDateTime '{raw}' is not a valid date-time."
        ))
    })?;
    let floor = now + time::Duration::minutes(MIN_EXPIRY_MINUTES);
    let ceiling = now + time::Duration::minutes(MAX_EXPIRY_MINUTES);
    if t > ceiling {
        if policy.reject_over_max {
            return Err(SubscriptionError::Invalid(format!(
                "Subscription expiration can only be {MAX_EXPIRY_MINUTES} minutes in the future."
            )));
        }
        return Ok(ceiling);
    }
    Ok(t.max(floor))
}

/// The token Graph sends in the validation request (opaque; contains characters that need URL-encoding).
pub fn validation_token() -> String {
    format!(
        "Validation: Testing client application reachability for subscription Request-Id: {}",
        uuid::Uuid::new_v4()
    )
}

/// Runs the validation handshake against one URL (graph-facts §1).
pub async fn validate_endpoint(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<(), SubscriptionError> {
    let token = validation_token();
    let mut target = url::Url::parse(url).map_err(|_| SubscriptionError::ValidationFailed)?;
    target
        .query_pairs_mut()
        .append_pair("validationToken", &token);
    let sent = client
        .post(target)
        .header("Content-Type", "text/plain; charset=utf-8")
        .timeout(timeout)
        .body(Vec::new())
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return Err(SubscriptionError::ValidationTimedOut),
        Err(_) => return Err(SubscriptionError::ValidationFailed),
    };
    let plain = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("text/plain"));
    if resp.status().as_u16() != 200 || !plain {
        return Err(SubscriptionError::ValidationFailed);
    }
    match resp.text().await {
        Ok(body) if body == token => Ok(()),
        Ok(_) => Err(SubscriptionError::ValidationFailed),
        Err(e) if e.is_timeout() => Err(SubscriptionError::ValidationTimedOut),
        Err(_) => Err(SubscriptionError::ValidationFailed),
    }
}

/// The `value[]` item of a change notification for a directory event (graph-facts §2.1).
pub fn change_notification(
    sub: &Subscription,
    tenant: &str,
    ev: &DirEvent,
    event_time: OffsetDateTime,
) -> Value {
    let (type_name, set) = match ev.kind {
        Kind::User => ("#Microsoft.Graph.User", "Users"),
        Kind::Group => ("#Microsoft.Graph.Group", "Groups"),
    };
    let resource = format!("{set}/{}", ev.id);
    let mut data = json!({
        "@odata.type": type_name,
        "@odata.id": resource,
        "id": ev.id,
        "organizationId": tenant,
        "eventTime": graph_time(event_time),
        "sequenceNumber": ev.seq,
    });
    if !ev.members.is_empty() {
        let members: Vec<Value> = ev
            .members
            .iter()
            .map(|m| {
                let mut v = json!({"@odata.type": m.kind.odata_type(), "id": m.id});
                if !m.added {
                    v["@removed"] = json!({"reason": "deleted"});
                }
                v
            })
            .collect();
        data["members@delta"] = Value::Array(members);
    }
    let mut n = json!({
        "subscriptionId": sub.id,
        "subscriptionExpirationDateTime": graph_time(sub.expiration),
        "changeType": ev.change.as_str(),
        "resource": resource,
        "resourceData": data,
        "tenantId": tenant,
    });
    if let Some(cs) = &sub.client_state {
        n["clientState"] = json!(cs);
    }
    n
}

/// The `value[]` item of a lifecycle notification (graph-facts §5).
pub fn lifecycle_notification(sub: &Subscription, tenant: &str, event: &str) -> Value {
    let mut n = json!({
        "subscriptionId": sub.id,
        "subscriptionExpirationDateTime": graph_time(sub.expiration),
        "tenantId": tenant,
        "lifecycleEvent": event,
    });
    if let Some(cs) = &sub.client_state {
        n["clientState"] = json!(cs);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("valid")
    }

    fn body(expiry: OffsetDateTime) -> SubscriptionBody {
        SubscriptionBody {
            change_type: Some("updated,deleted".into()),
            notification_url: Some("https://example.com/hook".into()),
            resource: Some("/users".into()),
            expiration_date_time: Some(graph_time(expiry)),
            ..SubscriptionBody::default()
        }
    }

    #[test]
    fn expiry_under_45_minutes_is_raised_to_the_floor() {
        let (_, exp) = check_create(
            &body(now() + time::Duration::minutes(5)),
            &SubscriptionPolicy::default(),
            now(),
        )
        .expect("valid");
        assert_eq!(exp, now() + time::Duration::minutes(45));
    }

    #[test]
    fn expiry_past_the_ceiling_is_refused_or_clamped_per_policy() {
        let far = body(now() + time::Duration::minutes(MAX_EXPIRY_MINUTES + 1));
        assert!(check_create(&far, &SubscriptionPolicy::default(), now()).is_err());
        let clamp = SubscriptionPolicy {
            reject_over_max: false,
            ..SubscriptionPolicy::default()
        };
        let (_, exp) = check_create(&far, &clamp, now()).expect("clamped");
        assert_eq!(exp, now() + time::Duration::minutes(MAX_EXPIRY_MINUTES));
    }

    #[test]
    fn created_change_type_and_long_client_state_are_refused() {
        let mut b = body(now() + time::Duration::hours(1));
        b.change_type = Some("created,updated".into());
        assert!(check_create(&b, &SubscriptionPolicy::default(), now()).is_err());
        let mut b = body(now() + time::Duration::hours(1));
        b.client_state = Some("x".repeat(129));
        assert!(check_create(&b, &SubscriptionPolicy::default(), now()).is_err());
    }

    #[test]
    fn plain_http_is_only_accepted_for_loopback_by_default() {
        let p = SubscriptionPolicy::default();
        assert!(check_url("http://127.0.0.1:8080/hook", &p).is_ok());
        assert!(check_url("http://webhook.svc/hook", &p).is_err());
        let strict = SubscriptionPolicy {
            url_policy: UrlPolicy::HttpsOnly,
            ..p
        };
        assert!(check_url("http://127.0.0.1:8080/hook", &strict).is_err());
    }

    #[test]
    fn resources_parse_with_or_without_a_leading_slash() {
        assert_eq!(Target::parse("users"), Some(Target::Users));
        assert_eq!(
            Target::parse("/groups/g1/members"),
            Some(Target::GroupMembers("g1".into()))
        );
        assert_eq!(Target::parse("/me/messages"), None);
    }
}
