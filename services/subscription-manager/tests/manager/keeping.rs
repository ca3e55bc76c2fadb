//! Creating on connect, renewing for 60 days, recreating, retrying, the quota, two replicas, the
//! monitor's orphans, and deleting on disconnect.

use crate::support::{env, env_with};
use cardsync_proto as proto;
use cardsync_store::subscription_slots::{self as slots, SlotState};
use cardsync_store::subscriptions;
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

const DAY: Duration = Duration::from_secs(86_400);

#[tokio::test(flavor = "multi_thread")]
async fn a_connected_tenant_is_subscribed_and_a_disconnected_one_is_unsubscribed_in_graph_and_the_registry()
 {
    let env = env().await;
    let report = env.pass().await;
    assert_eq!(report.created, 1, "{report:?}");
    let in_graph = env.graph_subscriptions().await;
    assert_eq!(in_graph.len(), 1, "{in_graph:?}");
    let sub = &in_graph[0];
    assert_eq!(sub["resource"], "/users");
    assert_eq!(sub["changeType"], "updated,deleted");
    assert_eq!(
        sub["notificationUrl"],
        format!("{}/graph/notifications", env.webhook_url)
    );
    assert_eq!(
        sub["lifecycleNotificationUrl"],
        format!("{}/graph/lifecycle", env.webhook_url)
    );
    let id = Uuid::parse_str(sub["id"].as_str().expect("id")).expect("guid");
    let held = env.slots().await;
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].state, SlotState::Active);
    assert_eq!(held[0].subscription_id, Some(id));
    let registered = subscriptions::find(&env.pool, id)
        .await
        .expect("registry")
        .expect("registered for the webhook");
    let client_state = sub["clientState"].as_str().expect("clientState");
    assert!(
        registered
            .client_state
            .matches(&subscriptions::ClientStateHash::of(client_state)),
        "only the hash of the clientState given to Graph is stored"
    );

    // The first change is notified and accepted by the webhook at once.
    let user = env.create_user("First").await;
    env.wait_change_of(&user).await;

    // A scope with groups adds /groups; a pass with nothing to do does nothing.
    cardsync_store::directory::set_scope(&env.pool, env.tenant, &["g-1".to_owned()])
        .await
        .expect("scope");
    assert_eq!(env.pass().await.created, 1);
    assert_eq!(
        env.pass().await,
        subscription_manager::PassReport::default()
    );
    let resources: Vec<String> = env
        .graph_subscriptions()
        .await
        .iter()
        .map(|s| s["resource"].as_str().expect("resource").to_owned())
        .collect();
    assert_eq!(resources.len(), 2);
    assert!(resources.contains(&"/groups".to_owned()), "{resources:?}");

    // Disconnecting deletes both in Graph and in the registry, then removes the connection.
    assert!(
        slots::request_disconnect(&env.pool, env.tenant)
            .await
            .expect("disconnect")
    );
    let report = env.pass().await;
    assert_eq!((report.retired, report.disconnected), (2, 1), "{report:?}");
    assert_eq!(
        env.graph_subscriptions().await,
        Vec::<serde_json::Value>::new()
    );
    assert!(env.slots().await.is_empty());
    assert!(
        subscriptions::find(&env.pool, id)
            .await
            .expect("registry")
            .is_none()
    );
    assert_eq!(
        env.graph_requests("subscriptions.delete").await,
        2,
        "deleted in Graph, not left to lapse"
    );
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn renewal_keeps_delivery_going_through_60_simulated_days() {
    let env = env().await;
    env.pass().await;
    let first = env.graph_subscriptions().await[0]["id"].clone();
    let user = env.create_user("Daily").await;
    env.wait_change_of(&user).await;
    for day in 1..=60 {
        env.advance(DAY).await;
        let report = env.pass().await;
        assert_eq!(report.failed, 0, "day {day}: {report:?}");
        env.change_user(&user, &format!("Title on day {day}")).await;
        env.wait_change_of(&user).await;
    }
    let in_graph = env.graph_subscriptions().await;
    assert_eq!(in_graph.len(), 1);
    assert_eq!(in_graph[0]["id"], first, "renewed, never recreated");
    let renewals = env.graph_requests("subscriptions.update").await;
    assert!(
        (55..=61).contains(&renewals),
        "about one renewal a day (jitter may pull one forward): {renewals}"
    );
    assert_eq!(env.graph_requests("subscriptions.create").await, 1);
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewal_answered_404_recreates_the_subscription_and_asks_for_a_catch_up_round() {
    let env = env().await;
    env.pass().await;
    let old = env.graph_subscriptions().await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // Graph loses the subscription (its lifecycle event is left unconsumed here).
    env.control
        .call(
            reqwest::Method::POST,
            &format!("/tenants/{}/subscriptions/{old}/lifecycle", env.tenant),
            Some(json!({"event": "subscriptionRemoved"})),
        )
        .await
        .expect("removed");
    let unseen = env.create_user("WhileGone").await;
    env.advance(DAY).await;
    let report = env.pass().await;
    assert_eq!(report.created, 1, "{report:?}");
    let in_graph = env.graph_subscriptions().await;
    assert_eq!(in_graph.len(), 1);
    assert_ne!(in_graph[0]["id"], old.as_str());
    let requests: Vec<proto::SyncRequest> = env.drain("delta-worker.requests").await;
    assert_eq!(requests.len(), 1, "one catch-up round");
    assert_eq!(requests[0].depth(), proto::sync_request::Depth::Info);
    assert_eq!(requests[0].scope(), proto::sync_request::Scope::Tenant);
    let envelope = requests[0].envelope.as_ref().expect("envelope");
    assert_eq!(envelope.tenant_id, env.tenant_text());
    assert_eq!(envelope.cause, proto::Cause::Lifecycle as i32);
    // Nothing told the webhook about the change made while there was no subscription.
    assert!(
        env.drain::<proto::GraphChange>("delta-worker.changes")
            .await
            .iter()
            .all(|c| c.resource_id != unseen)
    );
    let after = env.create_user("AfterRecreate").await;
    env.wait_change_of(&after).await;
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_create_is_retried_with_backoff_until_it_works_and_its_error_stays_visible() {
    let env = env_with(&[("CARDSYNC__GRAPH__MAX_ATTEMPTS", "1")]).await;
    env.control
        .set_faults(
            json!([{"endpoint": "subscriptions.create", "kind": "unavailable", "remaining": 2}]),
        )
        .await
        .expect("faults");
    assert_eq!(env.pass().await.failed, 1);
    let slot = env.slots().await.remove(0);
    assert_eq!(slot.state, SlotState::Retrying);
    assert_eq!(slot.failures, 1);
    assert!(
        slot.last_error
            .as_deref()
            .is_some_and(|e| e.contains("Graph")),
        "the error is kept for operators: {:?}",
        slot.last_error
    );
    // Not due yet: nothing is tried.
    env.pass().await;
    assert_eq!(env.slots().await.remove(0).failures, 1);
    env.clock.advance(Duration::from_secs(31));
    assert_eq!(env.pass().await.failed, 1);
    let slot = env.slots().await.remove(0);
    assert_eq!(slot.failures, 2);
    let wait = slot.next_attempt_at.expect("next attempt") - env.clock.now();
    assert!(
        wait > time::Duration::seconds(50),
        "the second wait doubles: {wait}"
    );
    env.clock.advance(Duration::from_secs(61));
    assert_eq!(env.pass().await.created, 1);
    let slot = env.slots().await.remove(0);
    assert_eq!((slot.state, slot.failures), (SlotState::Active, 0));
    // graph-sim counts the requests it answered, not those its fault rules refused.
    assert_eq!(env.graph_requests("subscriptions.create").await, 1);
    assert_eq!(env.graph_subscriptions().await.len(), 1);
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_subscription_quota_becomes_a_tenant_status_not_a_retry_storm() {
    let env = env().await;
    // Another notification URL that answers Graph's handshake: not cardsync's notification URL.
    let elsewhere = format!("{}/graph/lifecycle", env.webhook_url);
    for i in 0..100 {
        env.subscribe_directly(&format!("/users/u{i}"), &elsewhere)
            .await;
    }
    let report = env.pass().await;
    assert_eq!(report.failed, 1, "{report:?}");
    let slot = env.slots().await.remove(0);
    assert_eq!(slot.state, SlotState::QuotaExceeded);
    assert!(
        slot.last_error
            .as_deref()
            .is_some_and(|e| e.contains("quota")),
        "{:?}",
        slot.last_error
    );
    for _ in 0..5 {
        env.pass().await;
    }
    assert_eq!(
        env.graph_requests("subscriptions.create").await,
        101,
        "one refused create, then nothing until the quota retry"
    );
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_never_create_the_same_subscription_twice() {
    let env = env().await;
    let replica = env.replica().await;
    let (a, b) = tokio::join!(env.app.manager().reconcile(), replica.manager().reconcile());
    let (a, b) = (a.expect("a"), b.expect("b"));
    assert_eq!(a.created + b.created, 1, "{a:?} {b:?}");
    assert_eq!(env.graph_requests("subscriptions.create").await, 1);
    assert_eq!(env.graph_subscriptions().await.len(), 1);
    replica.close().await;
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_monitor_deletes_an_orphan_of_cardsyncs_and_leaves_a_foreign_one_alone() {
    let env = env().await;
    env.pass().await;
    let ours = format!("{}/graph/notifications", env.webhook_url);
    let orphan = env.subscribe_directly("/groups", &ours).await;
    // Another app's subscription: it delivers elsewhere (here a URL that answers the handshake).
    let foreign = env
        .subscribe_directly(
            "/users/someone",
            &format!("{}/graph/lifecycle", env.webhook_url),
        )
        .await;
    let report = env.app.manager().sweep().await.expect("sweep");
    assert_eq!(report.orphans_deleted, 1, "{report:?}");
    let ids: Vec<serde_json::Value> = env
        .graph_subscriptions()
        .await
        .iter()
        .map(|s| s["id"].clone())
        .collect();
    assert!(!ids.contains(&orphan["id"]), "the orphan is gone");
    assert!(ids.contains(&foreign["id"]), "the foreign one stays");
    assert_eq!(ids.len(), 2, "ours and the foreign one");
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operators_recreate_replaces_the_subscription_and_the_overview_shows_its_deliveries() {
    let env = env().await;
    env.pass().await;
    let old = env.graph_subscriptions().await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // A notification accepted by the webhook shows as the subscription's last notification.
    let first = env.create_user("BeforeRecreate").await;
    env.wait_change_of(&first).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let seen = loop {
        let overview = slots::overview(&env.pool, env.tenant)
            .await
            .expect("overview");
        assert_eq!(overview.len(), 1, "{overview:?}");
        assert_eq!(overview[0].state, "active");
        assert_eq!(
            overview[0].subscription_id.map(|id| id.to_string()),
            Some(old.clone())
        );
        if let Some(at) = overview[0].last_notification_at {
            break at;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no last notification time written"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(time::OffsetDateTime::now_utc() - seen < time::Duration::minutes(1));

    assert!(
        slots::request_recreate(&env.pool, env.tenant, "/users", env.clock.now())
            .await
            .expect("request")
    );
    assert!(
        !slots::request_recreate(&env.pool, env.tenant, "/nothing", env.clock.now())
            .await
            .expect("request"),
        "no such slot"
    );
    let report = env.pass().await;
    assert_eq!(report.created, 1, "{report:?} {:?}", env.slots().await);
    // The old subscription is gone from Graph and from the registry; one new one is there.
    let in_graph = env.graph_subscriptions().await;
    assert_eq!(in_graph.len(), 1, "{in_graph:?}");
    let new = in_graph[0]["id"].as_str().expect("id").to_owned();
    assert_ne!(new, old);
    let slot = env.slots().await.remove(0);
    assert_eq!(slot.state, SlotState::Active);
    assert_eq!(slot.subscription_id.map(|id| id.to_string()), Some(new));
    assert_eq!(slot.recreate_requested_at, None, "carried out once");
    let requests: Vec<proto::SyncRequest> = env.drain("delta-worker.requests").await;
    assert_eq!(requests.len(), 1, "one catch-up round");
    assert_eq!(requests[0].depth(), proto::sync_request::Depth::Info);
    // The next pass renews nothing early and recreates nothing again.
    let again = env.pass().await;
    assert_eq!(again.created, 0, "{again:?}");
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_disconnected_by_an_operator_is_unsubscribed_and_subscribed_again_on_reconnect() {
    let env = env().await;
    assert_eq!(env.pass().await.created, 1);
    let old = env.graph_subscriptions().await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // `cardsync tenant disconnect`: syncing stops, the connection and the cards stay.
    cardsync_store::tenants::put(
        &env.pool,
        &cardsync_store::tenants::TenantConfig {
            id: env.tenant,
            name: "Contoso".into(),
            rules: Default::default(),
            invites_enabled: false,
            admin_roles_enabled: false,
        },
    )
    .await
    .expect("the tenant's configuration");
    let mut conn = env.pool.acquire().await.expect("connection");
    assert!(
        cardsync_store::admin::set_disconnected(&mut conn, env.tenant, true)
            .await
            .expect("disconnect")
    );
    let report = env.pass().await;
    assert_eq!(report.retired, 1, "{report:?}");
    assert_eq!(
        env.graph_subscriptions().await,
        Vec::<serde_json::Value>::new()
    );
    assert!(env.slots().await.is_empty());
    let registered = subscriptions::find(&env.pool, Uuid::parse_str(&old).expect("guid"))
        .await
        .expect("registry");
    assert!(
        registered.is_none(),
        "the webhook no longer accepts its notifications"
    );

    assert!(
        cardsync_store::admin::set_disconnected(&mut conn, env.tenant, false)
            .await
            .expect("reconnect")
    );
    assert_eq!(env.pass().await.created, 1);
    let in_graph = env.graph_subscriptions().await;
    assert_eq!(in_graph.len(), 1);
    assert_ne!(in_graph[0]["id"], old.as_str());
    drop(conn);
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_offboarded_tenant_loses_its_graph_subscription_then_its_connection_and_nothing_is_left()
{
    let env = env().await;
    cardsync_store::tenants::put(
        &env.pool,
        &cardsync_store::tenants::TenantConfig {
            id: env.tenant,
            name: "Contoso".into(),
            rules: Default::default(),
            invites_enabled: false,
            admin_roles_enabled: false,
        },
    )
    .await
    .expect("the tenant's configuration");
    assert_eq!(env.pass().await.created, 1);
    assert_eq!(env.graph_subscriptions().await.len(), 1);

    // `cardsync tenant offboard`: the rows go at once, the connection waits for this pass.
    let mut tx = env.pool.begin().await.expect("tx");
    let done = cardsync_store::offboarding::offboard(&mut tx, env.tenant)
        .await
        .expect("offboard")
        .expect("the tenant exists");
    tx.commit().await.expect("commit");
    assert!(done.connection_pending);

    let report = env.pass().await;
    assert_eq!(report.retired, 1, "{report:?}");
    assert_eq!(report.disconnected, 1, "{report:?}");
    assert_eq!(
        env.graph_subscriptions().await,
        Vec::<serde_json::Value>::new(),
        "deleted in Graph"
    );
    for table in cardsync_store::offboarding::LEFT_TO_THE_MANAGER {
        let sql = format!("SELECT count(*) FROM {table} WHERE tenant_id = $1");
        let left: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(env.tenant)
            .fetch_one(&env.pool)
            .await
            .expect("count");
        assert_eq!(left, 0, "{table}");
    }
    // Nothing brings it back: the next pass has nothing to subscribe.
    assert_eq!(env.pass().await.created, 0);
    assert!(env.graph_subscriptions().await.is_empty());
    env.teardown().await;
}
