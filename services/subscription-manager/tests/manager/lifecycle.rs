//! Lifecycle notifications, from graph-sim through the real webhook and the lifecycle queue to
//! the manager's handler.

use crate::support::{Env, env};
use cardsync_bus::Processed;
use cardsync_proto as proto;
use std::time::Duration;
use subscription_manager::lifecycle::Handled;

/// Lets the manager's consumer take the next lifecycle event the webhook published, and
/// requires that it was handled and acknowledged.
async fn handle_next(env: &Env) {
    let handler = env.app.lifecycle_handler();
    let processed = env
        .app
        .lifecycle_consumer()
        .process_next(&handler, Duration::from_secs(30))
        .await
        .expect("consumer");
    assert_eq!(processed, Processed::Acked);
}

async fn subscribed(env: &Env) -> String {
    env.pass().await;
    env.graph_subscriptions().await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn reauthorization_required_renews_at_once_resumes_delivery_and_catches_up() {
    let env = env().await;
    let id = subscribed(&env).await;
    let before = env.graph_subscriptions().await[0]["expirationDateTime"].clone();
    env.lifecycle(&id, "reauthorizationRequired").await;
    // Graph pauses delivery until the subscription is renewed: this change is never notified.
    let paused = env.create_user("Paused").await;
    handle_next(&env).await;
    let now = env.graph_subscriptions().await;
    assert_eq!(now[0]["id"], id.as_str(), "renewed, not recreated");
    assert_ne!(
        now[0]["expirationDateTime"], before,
        "the PATCH moved the expiry"
    );
    assert_eq!(
        env.graph_requests("subscriptions.reauthorize").await,
        0,
        "a PATCH alone renews and reauthorizes"
    );
    let requests: Vec<proto::SyncRequest> = env.drain("delta-worker.requests").await;
    assert_eq!(requests.len(), 1, "a catch-up round for what the pause hid");
    assert_eq!(requests[0].depth(), proto::sync_request::Depth::Info);
    let resumed = env.create_user("Resumed").await;
    let seen = env.wait_change_of(&resumed).await;
    assert!(seen.iter().all(|c| c.resource_id != paused));
    let slot = env.slots().await.remove(0);
    assert!(slot.reauthorized_at.is_some());
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn subscription_removed_recreates_and_missed_asks_for_a_full_round() {
    let env = env().await;
    let id = subscribed(&env).await;
    env.lifecycle(&id, "subscriptionRemoved").await;
    handle_next(&env).await;
    let now = env.graph_subscriptions().await;
    assert_eq!(now.len(), 1);
    let new_id = now[0]["id"].as_str().expect("id").to_owned();
    assert_ne!(new_id, id);
    let requests: Vec<proto::SyncRequest> = env.drain("delta-worker.requests").await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].depth(), proto::sync_request::Depth::Info);

    env.lifecycle(&new_id, "missed").await;
    handle_next(&env).await;
    let requests: Vec<proto::SyncRequest> = env.drain("delta-worker.requests").await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].depth(), proto::sync_request::Depth::Full);

    // An event about a subscription that is no longer ours changes nothing.
    let handled = env
        .app
        .lifecycle_handler()
        .act(
            env.tenant,
            uuid::Uuid::parse_str(&id).expect("guid"),
            proto::LifecycleKind::SubscriptionRemoved,
        )
        .await
        .expect("handled");
    assert_eq!(handled, Handled::Stale);
    assert_eq!(env.graph_subscriptions().await[0]["id"], new_id.as_str());
    let counted = |event: &str| {
        env.app
            .manager()
            .metrics()
            .lifecycle
            .with_label_values(&[event, &env.tenant_text()])
            .get()
    };
    assert_eq!(counted("subscriptionRemoved"), 2);
    assert_eq!(counted("missed"), 1);
    assert_eq!(counted("reauthorizationRequired"), 0);
    env.teardown().await;
}
