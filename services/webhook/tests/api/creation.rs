//! The creation window: Graph may deliver a new subscription's first notifications before its
//! 201 reached the subscription manager, so before the registry row exists. The manager's pending
//! registration (written before it asks Graph) lets the webhook verify them.

use crate::helpers::{CLIENT_STATE, decode, spawn_app, user_change};
use cardsync_proto as proto;
use cardsync_store::subscription_slots;
use cardsync_store::subscriptions::{ClientStateHash, Subscription};
use time::OffsetDateTime;
use uuid::Uuid;
use webhook::{LIFECYCLE_PATH, NOTIFICATIONS_PATH};

#[tokio::test]
async fn notifications_delivered_before_and_after_the_registry_row_are_accepted_though_the_id_was_negatively_cached()
 {
    let mut app = spawn_app().await;
    let tenant = Uuid::new_v4();
    // The id Graph is going to give the subscription.
    let subscription = Uuid::new_v4();
    let post = |client_state: &'static str, tenant: Uuid, user: &'static str| serde_json::json!({ "value": [user_change(subscription, tenant, client_state, user)] });

    // The id is already in the webhook's negative cache: a notification quoting it was checked
    // before any registration vouched for it (a forger's, or one with a stale clientState).
    let seeded = app
        .post_json(NOTIFICATIONS_PATH, &post("stale-state", tenant, "seed"))
        .await;
    assert_eq!(seeded.status(), 202);
    let unknown = "cardsync_webhook_registry_lookups_total{result=\"unknown\"}";
    assert_eq!(app.metric(unknown).await, 1.0);
    let again = app
        .post_json(NOTIFICATIONS_PATH, &post("stale-state", tenant, "seed"))
        .await;
    assert_eq!(again.status(), 202);
    assert_eq!(
        app.metric(unknown).await,
        2.0,
        "answered from the negative cache"
    );
    assert_eq!(
        app.metric("cardsync_webhook_registry_lookups_total{result=\"unverifiable\"}")
            .await,
        0.0
    );

    // The manager writes its pending registration, then asks Graph to create the subscription.
    let now = OffsetDateTime::now_utc();
    subscription_slots::begin_create(
        &app.pool,
        tenant,
        "/users",
        &ClientStateHash::of(CLIENT_STATE),
        now + time::Duration::minutes(15),
        now,
    )
    .await
    .expect("pending registration");

    // Graph delivers before its 201 returns: accepted through the pending registration.
    let before = app
        .post_json(NOTIFICATIONS_PATH, &post(CLIENT_STATE, tenant, "before"))
        .await;
    assert_eq!(before.status(), 202);
    // The registration vouches for its tenant and clientState only.
    for (client_state, other_tenant, user) in [
        ("forged", tenant, "forged"),
        (CLIENT_STATE, Uuid::new_v4(), "other-tenant"),
    ] {
        let response = app
            .post_json(NOTIFICATIONS_PATH, &post(client_state, other_tenant, user))
            .await;
        assert_eq!(response.status(), 202);
    }
    // A lifecycle notification in the window is verified the same way.
    let lifecycle = serde_json::json!({ "value": [{
        "subscriptionId": subscription,
        "subscriptionExpirationDateTime": "2026-12-24T18:23:45Z",
        "tenantId": tenant,
        "clientState": CLIENT_STATE,
        "lifecycleEvent": "reauthorizationRequired"
    }]});
    assert_eq!(
        app.post_json(LIFECYCLE_PATH, &lifecycle).await.status(),
        202
    );

    // The 201 arrives: the manager writes the registry row and ends the pending registration.
    let row = Subscription {
        id: subscription,
        tenant_id: tenant,
        resource: "/users".into(),
        client_state: ClientStateHash::of(CLIENT_STATE),
        expires_at: now + time::Duration::days(2),
    };
    subscription_slots::activate(&app.pool, &row, now + time::Duration::days(1), now)
        .await
        .expect("activated");
    let after = app
        .post_json(NOTIFICATIONS_PATH, &post(CLIENT_STATE, tenant, "after"))
        .await;
    assert_eq!(after.status(), 202);

    let users: Vec<String> = app
        .drain("delta-worker.changes")
        .await
        .iter()
        .map(|d| decode::<proto::GraphChange>(d).resource_id)
        .collect();
    assert_eq!(users, ["before", "after"]);
    let lifecycles = app
        .drain(cardsync_bus::names::SUBSCRIPTION_MANAGER_LIFECYCLE)
        .await;
    assert_eq!(lifecycles.len(), 1, "the lifecycle event was published");
    assert!(
        app.metric("cardsync_webhook_registry_lookups_total{result=\"pending\"}")
            .await
            >= 2.0
    );
    for (reason, count) in [
        ("client_state_mismatch", 0.0),
        ("unknown_subscription", 4.0),
    ] {
        let series =
            format!("cardsync_webhook_notifications_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(app.metric(&series).await, count, "{reason}");
    }
    app.teardown().await;
}

#[tokio::test]
async fn an_expired_pending_registration_vouches_for_nothing() {
    let mut app = spawn_app().await;
    let tenant = Uuid::new_v4();
    let now = OffsetDateTime::now_utc();
    subscription_slots::begin_create(
        &app.pool,
        tenant,
        "/users",
        &ClientStateHash::of(CLIENT_STATE),
        now - time::Duration::seconds(1),
        now - time::Duration::minutes(16),
    )
    .await
    .expect("pending registration");
    let body =
        serde_json::json!({ "value": [user_change(Uuid::new_v4(), tenant, CLIENT_STATE, "late")] });
    assert_eq!(app.post_json(NOTIFICATIONS_PATH, &body).await.status(), 202);
    assert!(app.drain("delta-worker.changes").await.is_empty());
    assert_eq!(
        app.metric(
            "cardsync_webhook_notifications_rejected_total{reason=\"unknown_subscription\"}"
        )
        .await,
        1.0
    );
    app.teardown().await;
}
