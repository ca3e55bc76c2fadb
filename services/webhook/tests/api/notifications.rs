//! Notifications: verification against the registry, publishing, and the answers.

use crate::helpers::{CLIENT_STATE, decode, header, spawn_app, user_change};
use cardsync_proto as proto;
use uuid::Uuid;
use webhook::{LIFECYCLE_PATH, NOTIFICATIONS_PATH};

#[tokio::test]
async fn an_accepted_notification_reaches_the_queue_with_its_fields_and_a_traceparent() {
    let mut app = spawn_app().await;
    let tenant = Uuid::new_v4();
    let subscription = app.register(tenant).await;
    let user = Uuid::new_v4().to_string();

    // An upstream trace (e.g. from an ingress) continues onto the bus.
    let upstream_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = app
        .client
        .post(format!("{}{NOTIFICATIONS_PATH}", app.address))
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{upstream_trace}-00f067aa0ba902b7-01"))
        .json(&serde_json::json!({ "value": [user_change(subscription, tenant, CLIENT_STATE, &user)] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);

    let messages = app.drain("delta-worker.changes").await;
    assert_eq!(messages.len(), 1);
    let delivery = &messages[0];
    assert_eq!(delivery.routing_key.as_str(), format!("change.{tenant}"));
    let change: proto::GraphChange = decode(delivery);
    let envelope = change.envelope.as_ref().unwrap();
    assert_eq!(envelope.tenant_id, tenant.to_string());
    assert_eq!(envelope.cause, proto::Cause::Notification as i32);
    assert!(Uuid::parse_str(&envelope.message_id).is_ok());
    assert!(envelope.created_at.is_some());
    assert_eq!(change.subscription_id, subscription.to_string());
    assert_eq!(change.change_type, proto::ChangeType::Updated as i32);
    assert_eq!(change.resource, format!("Users/{user}"));
    assert_eq!(change.resource_id, user);
    assert_eq!(change.resource_type, "#Microsoft.Graph.User");
    assert!(change.received_at.is_some() && change.subscription_expires_at.is_some());
    let traceparent = header(delivery, "traceparent").expect("traceparent header");
    assert!(
        cardsync_telemetry::propagation::is_valid_traceparent(&traceparent),
        "{traceparent}"
    );
    assert!(
        traceparent.contains(upstream_trace),
        "{traceparent} continues the request's trace"
    );
    assert_eq!(
        header(delivery, "cardsync-tenant-id"),
        Some(tenant.to_string())
    );
    assert_eq!(
        delivery.properties.delivery_mode().unwrap_or(0),
        2,
        "persistent"
    );
    assert_eq!(
        app.metric(&format!(
            "cardsync_webhook_notifications_accepted_total{{kind=\"change\",tenant=\"{tenant}\"}}"
        ))
        .await,
        1.0
    );
    app.teardown().await;
}

#[tokio::test]
async fn a_lifecycle_notification_is_published_as_a_lifecycle_event() {
    let mut app = spawn_app().await;
    let tenant = Uuid::new_v4();
    let subscription = app.register(tenant).await;
    let body = serde_json::json!({ "value": [{
        "subscriptionId": subscription,
        "subscriptionExpirationDateTime": "2026-11-24T18:23:45Z",
        "tenantId": tenant,
        "clientState": CLIENT_STATE,
        "lifecycleEvent": "reauthorizationRequired"
    }]});
    assert_eq!(app.post_json(LIFECYCLE_PATH, &body).await.status(), 202);
    let messages = app
        .drain(cardsync_bus::names::SUBSCRIPTION_MANAGER_LIFECYCLE)
        .await;
    assert_eq!(messages.len(), 1);
    let event: proto::LifecycleEvent = decode(&messages[0]);
    assert_eq!(
        event.kind,
        proto::LifecycleKind::ReauthorizationRequired as i32
    );
    assert_eq!(event.subscription_id, subscription.to_string());
    assert_eq!(
        event.envelope.unwrap().cause,
        proto::Cause::Lifecycle as i32
    );
    assert!(app.drain("delta-worker.changes").await.is_empty());
    app.teardown().await;
}

#[tokio::test]
async fn unknown_subscriptions_wrong_client_states_and_wrong_tenants_are_dropped_and_counted() {
    let mut app = spawn_app().await;
    let tenant = Uuid::new_v4();
    let subscription = app.register(tenant).await;
    let body = serde_json::json!({ "value": [
        user_change(Uuid::new_v4(), tenant, CLIENT_STATE, "u1"),
        user_change(subscription, tenant, "guessed-state", "u2"),
        user_change(subscription, Uuid::new_v4(), CLIENT_STATE, "u3"),
    ]});
    let response = app.post_json(NOTIFICATIONS_PATH, &body).await;
    // 202 all the same: a forger learns nothing from the status.
    assert_eq!(response.status(), 202);
    assert!(app.drain("delta-worker.changes").await.is_empty());
    for reason in [
        "unknown_subscription",
        "client_state_mismatch",
        "tenant_mismatch",
    ] {
        let series =
            format!("cardsync_webhook_notifications_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(app.metric(&series).await, 1.0, "{reason}");
    }
    app.teardown().await;
}

/// Tenant isolation (issue 19 §4): two tenants registered on one webhook, a notification
/// carrying one tenant's subscription and clientState but the other's tenant id publishes
/// nothing for either; the genuine one of each tenant still does.
#[tokio::test]
async fn a_tenants_subscription_with_another_registered_tenants_id_never_publishes() {
    let mut app = spawn_app().await;
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    let first_subscription = app.register(first).await;
    let second_subscription = app.register(second).await;
    let crossed = serde_json::json!({ "value": [
        user_change(first_subscription, second, CLIENT_STATE, "u1"),
        user_change(second_subscription, first, CLIENT_STATE, "u2"),
    ]});
    assert_eq!(
        app.post_json(NOTIFICATIONS_PATH, &crossed).await.status(),
        202
    );
    assert!(app.drain("delta-worker.changes").await.is_empty());
    assert_eq!(
        app.metric("cardsync_webhook_notifications_rejected_total{reason=\"tenant_mismatch\"}")
            .await,
        2.0
    );
    let genuine = serde_json::json!({ "value": [
        user_change(first_subscription, first, CLIENT_STATE, "u1"),
        user_change(second_subscription, second, CLIENT_STATE, "u2"),
    ]});
    assert_eq!(
        app.post_json(NOTIFICATIONS_PATH, &genuine).await.status(),
        202
    );
    let mut tenants: Vec<String> = app
        .drain("delta-worker.changes")
        .await
        .iter()
        .map(|message| {
            let change: proto::GraphChange = decode(message);
            change.envelope.unwrap().tenant_id
        })
        .collect();
    tenants.sort();
    let mut expected = vec![first.to_string(), second.to_string()];
    expected.sort();
    assert_eq!(tenants, expected);
    app.teardown().await;
}

#[tokio::test]
async fn a_notification_without_client_state_is_a_mismatch() {
    let mut app = spawn_app().await;
    let tenant = Uuid::new_v4();
    let subscription = app.register(tenant).await;
    let mut item = user_change(subscription, tenant, CLIENT_STATE, "u1");
    item.as_object_mut().unwrap().remove("clientState");
    assert_eq!(
        app.post_json(NOTIFICATIONS_PATH, &serde_json::json!({ "value": [item] }))
            .await
            .status(),
        202
    );
    assert!(app.drain("delta-worker.changes").await.is_empty());
    assert_eq!(
        app.metric(
            "cardsync_webhook_notifications_rejected_total{reason=\"client_state_mismatch\"}"
        )
        .await,
        1.0
    );
    app.teardown().await;
}

#[tokio::test]
async fn a_mixed_batch_publishes_exactly_the_valid_items() {
    let mut app = spawn_app().await;
    let (tenant_a, tenant_b) = (Uuid::new_v4(), Uuid::new_v4());
    let (sub_a, sub_b) = (app.register(tenant_a).await, app.register(tenant_b).await);
    let body = serde_json::json!({ "value": [
        user_change(sub_a, tenant_a, CLIENT_STATE, "a1"),
        user_change(sub_b, tenant_b, "wrong", "b-bad"),
        42,
        user_change(sub_b, tenant_b, CLIENT_STATE, "b1"),
        {"subscriptionId": sub_a, "tenantId": tenant_a},
        user_change(sub_a, tenant_a, CLIENT_STATE, "a2"),
    ]});
    assert_eq!(app.post_json(NOTIFICATIONS_PATH, &body).await.status(), 202);
    let mut users: Vec<String> = app
        .drain("delta-worker.changes")
        .await
        .iter()
        .map(|d| decode::<proto::GraphChange>(d).resource_id)
        .collect();
    users.sort();
    assert_eq!(users, ["a1", "a2", "b1"]);
    assert_eq!(
        app.metric("cardsync_webhook_notifications_rejected_total{reason=\"malformed\"}")
            .await,
        2.0
    );
    assert_eq!(
        app.metric(
            "cardsync_webhook_notifications_rejected_total{reason=\"client_state_mismatch\"}"
        )
        .await,
        1.0
    );
    app.teardown().await;
}

#[tokio::test]
async fn a_hundred_notifications_in_one_post_become_a_hundred_messages() {
    let mut app = spawn_app().await;
    let tenant = Uuid::new_v4();
    let subscription = app.register(tenant).await;
    let items: Vec<_> = (0..100)
        .map(|i| user_change(subscription, tenant, CLIENT_STATE, &format!("user-{i:03}")))
        .collect();
    assert_eq!(
        app.post_json(NOTIFICATIONS_PATH, &serde_json::json!({ "value": items }))
            .await
            .status(),
        202
    );
    let messages = app.drain("delta-worker.changes").await;
    let mut users: Vec<String> = messages
        .iter()
        .map(|d| decode::<proto::GraphChange>(d).resource_id)
        .collect();
    users.sort();
    let expected: Vec<String> = (0..100).map(|i| format!("user-{i:03}")).collect();
    assert_eq!(users, expected);
    let ids: std::collections::HashSet<String> = messages
        .iter()
        .map(|d| decode::<proto::GraphChange>(d).envelope.unwrap().message_id)
        .collect();
    assert_eq!(ids.len(), 100, "every message has its own id");
    app.teardown().await;
}

#[tokio::test]
async fn bodies_that_are_not_notification_collections_are_400_with_a_json_reason() {
    let mut app = spawn_app().await;
    for (body, code) in [
        (&b"{not json"[..], "malformed_notification"),
        (&b"[1,2,3]"[..], "malformed_notification"),
        (&br#"{"value": "x"}"#[..], "malformed_notification"),
        (&b""[..], "malformed_notification"),
    ] {
        let response = app
            .client
            .post(format!("{}{NOTIFICATIONS_PATH}", app.address))
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{}", String::from_utf8_lossy(body));
        let reason: serde_json::Value = response.json().await.unwrap();
        assert_eq!(reason["error"], code);
        assert!(reason["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert!(app.drain("delta-worker.changes").await.is_empty());
    app.teardown().await;
}

#[tokio::test]
async fn a_wrong_or_missing_content_type_is_415() {
    let app = spawn_app().await;
    for content_type in [Some("text/plain"), Some("application/xml"), None] {
        let mut request = app
            .client
            .post(format!("{}{NOTIFICATIONS_PATH}", app.address))
            .body(r#"{"value":[]}"#);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 415, "{content_type:?}");
        let reason: serde_json::Value = response.json().await.unwrap();
        assert_eq!(reason["error"], "unsupported_media_type");
    }
    app.teardown().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_whether_declared_or_streamed() {
    let app = spawn_app_with_limit(1024).await;
    let big = format!(r#"{{"value":[],"pad":"{}"}}"#, "x".repeat(2048));
    let response = app
        .client
        .post(format!("{}{NOTIFICATIONS_PATH}", app.address))
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let reason: serde_json::Value = response.json().await.unwrap();
    assert_eq!(reason["error"], "payload_too_large");

    // Chunked, so no Content-Length warns the server in advance.
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = big
        .as_bytes()
        .chunks(256)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let response = app
        .client
        .post(format!("{}{NOTIFICATIONS_PATH}", app.address))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    app.teardown().await;
}

async fn spawn_app_with_limit(limit: usize) -> crate::helpers::TestApp {
    crate::helpers::spawn_app_with(&[("CARDSYNC__HTTP__BODY_LIMIT_BYTES", &limit.to_string())])
        .await
}

#[tokio::test]
async fn no_input_causes_a_500() {
    let app = spawn_app().await;
    let tenant = Uuid::new_v4();
    let subscription = app.register(tenant).await;
    let nasty: Vec<Vec<u8>> = vec![
        vec![0xff, 0xfe, 0x00],
        b"null".to_vec(),
        b"{\"value\":null}".to_vec(),
        b"{\"value\":[null,[],{},\"\",1e999]}".to_vec(),
        format!("{{\"value\":[{{\"subscriptionId\":\"{subscription}\",\"tenantId\":\"{tenant}\",\"changeType\":7}}]}}").into_bytes(),
        format!("{{\"value\":[{{\"subscriptionId\":\"{subscription}\",\"tenantId\":\"{tenant}\",\"changeType\":\"updated\",\"resourceData\":[1]}}]}}").into_bytes(),
        "{\"value\":[{\"subscriptionId\":\"\u{0}\"}]}".as_bytes().to_vec(),
        vec![b'['; 10_000],
    ];
    for body in nasty {
        let response = app
            .client
            .post(format!("{}{NOTIFICATIONS_PATH}", app.address))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert!(
            matches!(response.status().as_u16(), 202 | 400),
            "{} for {:?}",
            response.status(),
            String::from_utf8_lossy(&body)
        );
    }
    app.teardown().await;
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let app = spawn_app().await;
    let _ = app
        .post_json(NOTIFICATIONS_PATH, &serde_json::json!({"value": []}))
        .await;
    let _ = app
        .client
        .post(format!("{}{NOTIFICATIONS_PATH}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(
        app.metric(
            "cardsync_webhook_http_requests_total{route=\"/graph/notifications\",status=\"202\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        app.metric(
            "cardsync_webhook_http_requests_total{route=\"/graph/notifications\",status=\"415\"}"
        )
        .await,
        1.0
    );
    assert!(
        app.metric("cardsync_webhook_http_request_duration_seconds_count{route=\"/graph/notifications\",status=\"202\"}").await
            >= 1.0
    );
    app.teardown().await;
}
