//! Runs under concurrency and failure: overlapping reconcilers, a reconciler killed mid-run,
//! users changing while a reconcile holds the tenant.

use crate::support::{Env, env, eventually, field};
use cardsync_bus::{Delivery, Handler as _, HandlerError, Processed};
use cardsync_proto::Cause;
use cardsync_rounds::Mode;
use cardsync_store::runs::RunStatus;
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

/// Makes every users delta page hold one user and take `delay_ms`, so a reconcile lasts.
async fn slow_enumeration(env: &Env, delay_ms: u64) {
    env.control
        .set_delta(&env.tenant_text(), json!({"defaultPageSize": 1}))
        .await
        .unwrap();
    env.control
        .set_faults(json!([{"endpoint": "users.delta", "kind": "slow", "delayMs": delay_ms}]))
        .await
        .unwrap();
}

/// The users delta requests graph-sim has served the tenant.
async fn delta_requests(env: &Env) -> u64 {
    let counters = env
        .control
        .counters(Some(&env.tenant_text()))
        .await
        .unwrap();
    counters[env.tenant_text()]["users.delta"]["requests"]
        .as_u64()
        .unwrap_or(0)
}

/// Removes `user`'s card, as if its command had been lost: the drift a reconcile repairs.
async fn lose_card(env: &Env, user: &str) {
    sqlx::query("DELETE FROM cards WHERE tenant_id = $1 AND user_id = $2")
        .bind(env.tenant)
        .bind(user)
        .execute(&env.pool)
        .await
        .unwrap();
}

fn delivery(env: &Env, run: Uuid) -> Delivery<cardsync_proto::SyncRequest> {
    Delivery {
        message: reconciler::due::request(&env.tenant_text(), run),
        attempt: 1,
        redelivered: false,
        message_id: None,
        tenant_id: Some(env.tenant_text()),
        exchange: String::new(),
        routing_key: String::new(),
    }
}

#[tokio::test]
async fn overlapping_reconcilers_run_a_tenant_once() {
    let env = env().await;
    let ids = env.synced_users(&["Ada", "Bob"]).await;
    lose_card(&env, &ids[0]).await;
    let replica = env.replica().await;
    let run = env.new_run().await;
    // Two jobs asked for the same run (an overlapping schedule, a redelivery).
    env.request(run).await;
    env.request(run).await;

    let (first, second) = tokio::join!(env.reconcile_with(&env.app), env.reconcile_with(&replica));
    for processed in [first, second] {
        assert!(
            matches!(processed, Processed::Acked | Processed::Retried { .. }),
            "{processed:?}"
        );
    }
    // A request refused while the other ran comes back, finds the run ended, and is dropped.
    eventually(
        "both requests are done",
        Duration::from_secs(60),
        || async {
            replica
                .requests_consumer()
                .process_next(&replica.handler(), Duration::from_millis(500))
                .await
                .unwrap();
            env.ready("reconciler.requests").await == 0 && env.run(run).await.emitted_at.is_some()
        },
    )
    .await;
    let commands = env.commands().await;
    assert_eq!(
        commands.len(),
        1,
        "one reconcile repaired Ada once: {commands:?}"
    );
    assert_eq!(commands[0].1.user_id, ids[0]);
    env.apply(&commands).await;
    assert_eq!(env.run(run).await.status, RunStatus::Succeeded);
    replica.close().await;
    env.teardown().await;
}

#[tokio::test]
async fn a_reconciler_killed_mid_run_leaves_a_run_the_next_job_finishes() {
    let env = env().await;
    let ids = env.synced_users(&["Ada", "Bob", "Cy", "Dee"]).await;
    lose_card(&env, &ids[3]).await;
    slow_enumeration(&env, 500).await;
    let run = env.new_run().await;
    let pages_before = delta_requests(&env).await;

    let handler = env.app.handler();
    let request = delivery(&env, run);
    let killed = tokio::spawn(async move { handler.handle(request).await });
    eventually("the run is running", Duration::from_secs(30), || async {
        env.run(run).await.status == RunStatus::Running
    })
    .await;
    // Killed mid-enumeration: once Graph has served the round a page of the slow delta.
    eventually(
        "the reconcile reads the delta",
        Duration::from_secs(30),
        || async { delta_requests(&env).await > pages_before },
    )
    .await;
    killed.abort();
    assert!(killed.await.unwrap_err().is_cancelled());
    assert_eq!(
        env.run(run).await.status,
        RunStatus::Running,
        "left running"
    );

    // The broker redelivers the unacknowledged request to the next reconciler, which is
    // refused until the dead one's heartbeat is stale, then takes the run over.
    let replica = env.replica().await;
    let next = replica.handler();
    let mut refused = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        match next.handle(delivery(&env, run)).await {
            Ok(()) => break,
            Err(HandlerError::Transient(_)) => refused += 1,
            Err(error) => panic!("{error:?}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "not taken over");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        refused > 0,
        "the run was not taken while its heartbeat was fresh"
    );
    assert!(
        env.run(run).await.emitted_at.is_some(),
        "the next job did the work"
    );
    let commands = env.commands().await;
    assert!(
        commands.iter().any(|(_, c)| c.user_id == ids[3]),
        "Dee's card was repaired: {commands:?}"
    );
    env.apply(&commands).await;
    assert_eq!(env.run(run).await.status, RunStatus::Succeeded);
    replica.close().await;
    env.teardown().await;
}

#[tokio::test]
async fn users_changed_during_a_reconcile_lose_nothing() {
    let env = env().await;
    let ids = env.synced_users(&["Ada", "Bob", "Cy", "Dee"]).await;
    let initial = env.commands().await;
    assert!(initial.is_empty());
    slow_enumeration(&env, 300).await;
    let run = env.new_run().await;
    env.request(run).await;

    let reconcile = env.reconcile_with(&env.app);
    let change = async {
        eventually("the reconcile runs", Duration::from_secs(30), || async {
            env.run(run).await.status == RunStatus::Running
        })
        .await;
        env.update_user(&ids[0], json!({"jobTitle": "Changed during"}))
            .await;
        env.create_user("Eve").await
    };
    let (processed, eve) = tokio::join!(reconcile, change);
    assert_eq!(processed, Processed::Acked);
    // The notifications of both changes reach the delta-worker, whose round waited for the
    // tenant's lease.
    env.round(Cause::Notification, Mode::Incremental).await;

    let commands = env.commands().await;
    let ada = commands
        .iter()
        .filter(|(_, c)| c.user_id == ids[0])
        .max_by_key(|(_, c)| c.version)
        .expect("Ada's change was sent");
    assert_eq!(field(&ada.1, "job_title"), Some("Changed during"));
    assert!(
        commands.iter().any(|(_, c)| c.user_id == eve),
        "Eve was created: {commands:?}"
    );
    env.apply(&commands).await;
    assert_eq!(
        env.card_value(&ids[0], "job_title").await.as_deref(),
        Some("Changed during")
    );
    assert_eq!(env.run(run).await.status, RunStatus::Succeeded);
    env.teardown().await;
}
