//! Change and lifecycle notifications and their delivery (graph-facts §2, §5).

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{ALL_READ, Behaviour, Env, Receiver, env, env_with, eventually, in_minutes};

async fn subscribed(env: &Env, rx: &Receiver, resource: &str) -> String {
    let token = env.token().await;
    let body = json!({"changeType": "updated,deleted", "notificationUrl": rx.url, "lifecycleNotificationUrl": rx.url, "resource": resource, "expirationDateTime": in_minutes(600), "clientState": "cs-1"});
    let (status, sub) = env.subscribe(&token, body).await;
    assert!(status.is_success(), "{sub}");
    sub["id"].as_str().expect("id").to_owned()
}

async fn fast_delivery(env: &Env, extra: Value) {
    let mut profile = json!({"batchWindowMs": 5, "retryBaseMs": 50, "firstTimeoutMs": 1000, "retryTimeoutMs": 1000});
    if let (Some(p), Some(e)) = (profile.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    env.put_ok(env.control_url("/delivery"), profile).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn user_changes_send_updated_and_permanent_deletion_sends_deleted_in_the_documented_shape() {
    let env = env(ALL_READ).await;
    fast_delivery(&env, json!({})).await;
    let rx = Receiver::start(Behaviour::default()).await;
    let sub = subscribed(&env, &rx, "/users").await;
    let id = env.create_user("Nora").await;
    env.patch_user(&id, json!({"jobTitle": "CTO"})).await;
    env.control(
        Method::DELETE,
        env.tenant_url(&format!("/users/{id}")),
        None,
    )
    .await;
    env.post_ok(env.tenant_url(&format!("/users/{id}/restore")), json!({}))
        .await;
    env.control(
        Method::DELETE,
        env.tenant_url(&format!("/users/{id}?permanent=true")),
        None,
    )
    .await;
    let items = rx.wait_items(5).await;
    let types: Vec<&str> = items
        .iter()
        .map(|n| n["changeType"].as_str().expect("changeType"))
        .collect();
    let updated = types.iter().filter(|t| **t == "updated").count();
    assert_eq!((updated, types.len()), (4, 5), "{types:?}");
    let n = items
        .iter()
        .find(|n| n["changeType"] == "deleted")
        .expect("deleted");
    assert_eq!(n["subscriptionId"], sub);
    assert_eq!(n["clientState"], "cs-1");
    assert_eq!(n["tenantId"], env.tenant);
    assert_eq!(n["resource"], format!("Users/{id}"));
    assert!(n["subscriptionExpirationDateTime"].is_string());
    assert_eq!(n["resourceData"]["@odata.type"], "#Microsoft.Graph.User");
    assert_eq!(n["resourceData"]["@odata.id"], format!("Users/{id}"));
    assert_eq!(n["resourceData"]["id"], id);
    assert_eq!(n["resourceData"]["organizationId"], env.tenant);
    assert!(n["resourceData"]["sequenceNumber"].is_u64());
    assert!(n.get("validationTokens").is_none() && n.get("encryptedContent").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn membership_changes_notify_group_subscribers_with_members_delta() {
    let env = env(ALL_READ).await;
    fast_delivery(&env, json!({})).await;
    let rx = Receiver::start(Behaviour::default()).await;
    let g = env.create_group("Team").await;
    subscribed(&env, &rx, &format!("/groups/{g}/members")).await;
    let u = env.create_user("Member").await;
    env.add_member(&g, &u).await;
    let items = rx.wait_items(1).await;
    assert_eq!(items.len(), 1, "user creation is not a membership change");
    assert_eq!(items[0]["changeType"], "updated");
    assert_eq!(items[0]["resource"], format!("Groups/{g}"));
    assert_eq!(
        items[0]["resourceData"]["members@delta"],
        json!([{"@odata.type": "#microsoft.graph.user", "id": u}])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn notifications_are_batched_into_one_post() {
    let env = env(ALL_READ).await;
    fast_delivery(&env, json!({"batchWindowMs": 300})).await;
    let rx = Receiver::start(Behaviour::default()).await;
    subscribed(&env, &rx, "/users").await;
    env.post_ok(
        env.tenant_url("/seed"),
        json!({"users": 5, "groups": false}),
    )
    .await;
    rx.wait_items(5).await;
    assert_eq!(rx.posts(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_deliveries_are_retried_with_backoff_and_logged_with_every_attempt() {
    let env = env(ALL_READ).await;
    fast_delivery(&env, json!({})).await;
    let rx = Receiver::start(Behaviour::default()).await;
    subscribed(&env, &rx, "/users").await;
    rx.behaviour.lock().expect("lock").fail_next = 2;
    env.create_user("Retry").await;
    rx.wait_items(1).await;
    let record = eventually(10, "delivered record", || async {
        env.deliveries()
            .await
            .into_iter()
            .find(|r| r["outcome"] == "delivered")
    })
    .await;
    let statuses: Vec<Value> = record["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["status"].clone())
        .collect();
    assert_eq!(statuses, vec![json!(500), json!(500), json!(202)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_stop_after_the_four_hour_horizon_compressed_by_the_time_scale() {
    let config = graph_sim::SimConfig {
        workers: 1,
        time_scale: 3600.0,
        ..graph_sim::SimConfig::default()
    };
    let env = env_with(config, ALL_READ).await;
    env.put_ok(
        env.control_url("/delivery"),
        json!({"batchWindowMs": 5, "firstTimeoutMs": 500, "retryTimeoutMs": 500}),
    )
    .await;
    let rx = Receiver::start(Behaviour::default()).await;
    subscribed(&env, &rx, "/users").await;
    rx.behaviour.lock().expect("lock").fail_next = 1_000;
    env.create_user("Never").await;
    let record = eventually(20, "gave up", || async {
        env.deliveries()
            .await
            .into_iter()
            .find(|r| r["outcome"] == "gaveUp")
    })
    .await;
    let attempts = record["attempts"].as_array().expect("attempts").len();
    assert_eq!(
        attempts, 8,
        "1-minute back-off doubling: attempts at 0,1,3,7,15,31,63,127 min; the next would pass 4 h"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_notification_is_never_resent_while_later_ones_arrive() {
    let env = env(ALL_READ).await;
    fast_delivery(&env, json!({"loseNext": 1})).await;
    let rx = Receiver::start(Behaviour::default()).await;
    subscribed(&env, &rx, "/users").await;
    let lost = env.create_user("Lost").await;
    let kept = env.create_user("Kept").await;
    let items = rx.wait_items(1).await;
    assert_eq!(items[0]["resourceData"]["id"], kept);
    let log = env.deliveries().await;
    let record = log
        .iter()
        .find(|r| r["notification"]["resourceData"]["id"] == lost)
        .expect("logged");
    assert_eq!(record["outcome"], "lost");
    assert_eq!(record["attempts"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicates_and_reordering_can_be_injected() {
    let env = env(ALL_READ).await;
    fast_delivery(&env, json!({"duplicateNext": 1})).await;
    let rx = Receiver::start(Behaviour::default()).await;
    subscribed(&env, &rx, "/users").await;
    let id = env.create_user("Twice").await;
    let items = rx.wait_items(2).await;
    assert!(items.iter().all(|n| n["resourceData"]["id"] == id));

    fast_delivery(&env, json!({"reorder": true, "batchWindowMs": 300})).await;
    let rx2 = Receiver::start(Behaviour::default()).await;
    let env2 = &env;
    subscribed(env2, &rx2, "/groups").await;
    let first = env.create_group("First").await;
    let second = env.create_group("Second").await;
    let items = rx2.wait_items(2).await;
    let order: Vec<Value> = items
        .iter()
        .map(|n| n["resourceData"]["id"].clone())
        .collect();
    assert_eq!(order, vec![json!(second), json!(first)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_whose_first_attempts_keep_timing_out_is_judged_slow() {
    let env = env(ALL_READ).await;
    fast_delivery(&env, json!({"firstTimeoutMs": 100, "retryTimeoutMs": 100, "retryBaseMs": 3_600_000, "minSamples": 4, "maxBatch": 1})).await;
    let rx = Receiver::start(Behaviour {
        delay_ms: 300,
        ..Behaviour::default()
    })
    .await;
    subscribed(&env, &rx, "/users").await;
    for i in 0..4 {
        env.create_user(&format!("slow{i}")).await;
    }
    eventually(10, "four timed-out attempts", || async {
        let log = env.deliveries().await;
        (log.iter()
            .filter(|r| r["attempts"].as_array().is_some_and(|a| !a.is_empty()))
            .count()
            >= 4)
            .then_some(())
    })
    .await;
    env.create_user("judged").await;
    let log = env.deliveries().await;
    let last = log.last().expect("record");
    assert_eq!(
        last["endpointState"], "slow",
        "more than 10% of first attempts exceeded the timeout: {last}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reauthorization_is_requested_before_expiry_and_test_only_lifecycle_events_can_be_sent() {
    let env = env(ALL_READ).await;
    fast_delivery(&env, json!({})).await;
    let rx = Receiver::start(Behaviour::default()).await;
    let token = env.token().await;
    let body = json!({"changeType": "updated", "notificationUrl": rx.url, "lifecycleNotificationUrl": rx.url, "resource": "/users", "expirationDateTime": in_minutes(60), "clientState": "cs"});
    let (_, sub) = env.subscribe(&token, body).await;
    let id = sub["id"].as_str().expect("id").to_owned();
    env.advance_clock(50 * 60).await;
    let items = rx.wait_items(1).await;
    assert_eq!(items[0]["lifecycleEvent"], "reauthorizationRequired");
    assert_eq!(items[0]["subscriptionId"], id);
    assert_eq!(items[0]["clientState"], "cs");
    assert!(items[0].get("resource").is_none() && items[0].get("changeType").is_none());

    env.post_ok(
        env.tenant_url(&format!("/subscriptions/{id}/lifecycle")),
        json!({"event": "subscriptionRemoved"}),
    )
    .await;
    let items = rx.wait_items(2).await;
    assert_eq!(items[1]["lifecycleEvent"], "subscriptionRemoved");
    assert_eq!(
        env.get(&env.token().await, &format!("/v1.0/subscriptions/{id}"))
            .await
            .status(),
        reqwest::StatusCode::NOT_FOUND
    );
}

async fn outcome_of(env: &Env, user: &str) -> Value {
    env.deliveries()
        .await
        .into_iter()
        .find(|r| r["notification"]["resourceData"]["id"] == user)
        .map_or(Value::Null, |r| r["outcome"].clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn delivery_pauses_after_reauthorization_required_and_what_changed_meanwhile_is_never_sent() {
    let env = env(ALL_READ).await;
    fast_delivery(&env, json!({})).await;
    let rx = Receiver::start(Behaviour::default()).await;
    let sub = subscribed(&env, &rx, "/users").await;
    env.post_ok(
        env.tenant_url(&format!("/subscriptions/{sub}/lifecycle")),
        json!({"event": "reauthorizationRequired"}),
    )
    .await;
    let during = env.create_user("During").await;
    assert_eq!(
        outcome_of(&env, &during).await,
        "pausedReauthorizationRequired"
    );

    // Renewing answers the challenge: delivery resumes, and the paused change stays unsent.
    let token = env.token().await;
    let resp = env
        .http
        .patch(env.graph(&format!("/v1.0/subscriptions/{sub}")))
        .bearer_auth(&token)
        .json(&json!({"expirationDateTime": in_minutes(900)}))
        .send()
        .await
        .expect("renew");
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    let after = env.create_user("After").await;
    let items = rx.wait_items(2).await;
    assert_eq!(items[0]["lifecycleEvent"], "reauthorizationRequired");
    assert_eq!(items[1]["resourceData"]["id"], after);
    let record = env
        .deliveries()
        .await
        .into_iter()
        .find(|r| r["notification"]["resourceData"]["id"] == during)
        .expect("logged");
    assert_eq!(record["attempts"], json!([]), "never sent: {record}");
    assert!(
        rx.items()
            .iter()
            .all(|n| n["resourceData"]["id"] != during.as_str())
    );

    // Reauthorizing answers it too.
    env.post_ok(
        env.tenant_url(&format!("/subscriptions/{sub}/lifecycle")),
        json!({"event": "reauthorizationRequired"}),
    )
    .await;
    let paused = env.create_user("Paused").await;
    assert_eq!(
        outcome_of(&env, &paused).await,
        "pausedReauthorizationRequired"
    );
    let resp = env
        .http
        .post(env.graph(&format!("/v1.0/subscriptions/{sub}/reauthorize")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("reauthorize");
    assert_eq!(resp.status(), reqwest::StatusCode::NO_CONTENT);
    let resumed = env.create_user("Resumed").await;
    let items = rx.wait_items(4).await;
    assert_eq!(items[3]["resourceData"]["id"], resumed);
}

#[tokio::test(flavor = "multi_thread")]
async fn notifications_keep_flowing_for_the_configured_while_before_the_pause() {
    let env = env(ALL_READ).await;
    fast_delivery(&env, json!({})).await;
    env.put_ok(
        env.control_url("/subscription-policy"),
        json!({"pauseAfterMinutes": 30, "reauthorizeBeforeMinutes": 60}),
    )
    .await;
    let rx = Receiver::start(Behaviour::default()).await;
    let token = env.token().await;
    let body = json!({"changeType": "updated,deleted", "notificationUrl": rx.url, "lifecycleNotificationUrl": rx.url, "resource": "/users", "expirationDateTime": in_minutes(90), "clientState": "cs"});
    let (status, sub) = env.subscribe(&token, body).await;
    assert!(status.is_success(), "{sub}");
    env.advance_clock(40 * 60).await;
    let items = rx.wait_items(1).await;
    assert_eq!(items[0]["lifecycleEvent"], "reauthorizationRequired");
    let soon = env.create_user("Soon").await;
    assert_ne!(
        outcome_of(&env, &soon).await,
        "pausedReauthorizationRequired"
    );
    let items = rx.wait_items(2).await;
    assert_eq!(items[1]["resourceData"]["id"], soon);
    env.advance_clock(31 * 60).await;
    let late = env.create_user("Late").await;
    assert_eq!(
        outcome_of(&env, &late).await,
        "pausedReauthorizationRequired"
    );
}
