//! `reconciler due`: one run per tenant and schedule occurrence however many jobs overlap, and
//! no run left running by a reconciler that died. On a database of its own: a pass looks at
//! every tenant.

use crate::support::{Env, env_on};
use cardsync_bus::Processed;
use cardsync_store::runs::{self, RunStatus};
use cardsync_testkit::FreshDatabase;
use std::time::Duration;
use time::OffsetDateTime;

pub(crate) async fn fresh_env() -> (FreshDatabase, Env) {
    let database = FreshDatabase::create().await;
    let pool = database.pool().await;
    cardsync_store::migrate(&pool).await.unwrap();
    let env = env_on(pool, &database.url, &[]).await;
    (database, env)
}

#[tokio::test]
async fn overlapping_due_jobs_enqueue_each_tenants_occurrence_once() {
    let (database, env) = fresh_env().await;
    env.synced_users(&["Ada"]).await;
    let replica = env.replica().await;
    // The next midnight (UTC) has come: the tenant, created today, is due.
    let tomorrow = OffsetDateTime::now_utc() + time::Duration::days(1);
    let (first, second) = tokio::join!(env.app.due(tomorrow), replica.due(tomorrow));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first.enqueued + second.enqueued, 1, "{first:?} {second:?}");
    assert_eq!(env.ready("reconciler.requests").await, 1);
    let again = env.app.due(tomorrow).await.unwrap();
    assert_eq!(again.enqueued, 0);

    let listed: Vec<_> = runs::list(&env.pool, env.tenant, None, 10)
        .await
        .unwrap()
        .into_iter()
        .filter(|run| run.kind == "reconcile")
        .collect();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].started_by, "schedule");
    assert_eq!(env.reconcile_with(&env.app).await, Processed::Acked);
    let run = env.run(listed[0].run_id).await;
    assert_eq!(run.status, RunStatus::Succeeded);

    replica.close().await;
    env.teardown().await;
    database.drop_database().await;
}

#[tokio::test]
async fn a_run_whose_reconciler_died_is_failed_by_the_next_due_job() {
    let (database, env) = fresh_env().await;
    let run = env.new_run().await;
    runs::claim(&env.pool, run, Duration::from_secs(30))
        .await
        .unwrap();
    // Its reconciler died an hour ago and its request is gone.
    sqlx::query(
        "UPDATE sync_runs SET heartbeat_at = now() - interval '1 hour',
                              started_at = now() - interval '1 hour'
          WHERE run_id = $1",
    )
    .bind(run)
    .execute(&env.pool)
    .await
    .unwrap();
    let report = env.app.due(OffsetDateTime::now_utc()).await.unwrap();
    assert_eq!(report.abandoned, 1);
    let failed = env.run(run).await;
    assert_eq!(failed.status, RunStatus::Failed);
    assert!(failed.detail.unwrap().starts_with("abandoned"));
    assert!(failed.finished_at.is_some());
    env.teardown().await;
    database.drop_database().await;
}

#[tokio::test]
async fn live_rounds_add_into_one_run_per_tenant_and_hour_which_due_ends() {
    let (database, env) = fresh_env().await;
    let ids = env.synced_users(&["Ada", "Bob"]).await;
    env.update_user(&ids[0], serde_json::json!({"jobTitle": "CTO"}))
        .await;
    env.round(
        cardsync_proto::Cause::Notification,
        cardsync_rounds::Mode::Incremental,
    )
    .await;
    let update = env.commands().await;
    assert_eq!(update.len(), 1);
    let listed = runs::list(&env.pool, env.tenant, None, 10).await.unwrap();
    assert_eq!(listed.len(), 1, "both rounds of the hour are one run");
    let live = &listed[0];
    assert_eq!(
        (live.kind.as_str(), live.status),
        ("live", RunStatus::Running)
    );
    assert_eq!(update[0].1.run_id, live.run_id.to_string());
    env.apply(&update).await;
    let counted = env.run(live.run_id).await;
    assert_eq!(counted.counts.get("commands"), Some(&3));
    assert_eq!(counted.counts.get("updated"), Some(&1));

    // The hour ends: the next due pass ends the run.
    env.app
        .due(OffsetDateTime::now_utc() + time::Duration::hours(1))
        .await
        .unwrap();
    let ended = env.run(live.run_id).await;
    assert_eq!(ended.status, RunStatus::Succeeded);
    env.teardown().await;
    database.drop_database().await;
}

#[tokio::test]
async fn a_user_sync_left_running_is_failed_by_the_next_due_job() {
    let (database, env) = fresh_env().await;
    let user_sync = |minutes_ago: i32| {
        let (pool, tenant) = (env.pool.clone(), env.tenant);
        async move {
            let run_id = uuid::Uuid::now_v7();
            runs::create(
                &pool,
                &runs::NewRun {
                    run_id,
                    tenant_id: tenant,
                    kind: "user_sync".into(),
                    cause: "manual".into(),
                    started_by: "admin@contoso.test".into(),
                    target: Some("u-ada".into()),
                },
            )
            .await
            .unwrap();
            // What the delta-worker does when it takes the request: running, no heartbeat.
            runs::set_status(&pool, run_id, RunStatus::Running, None)
                .await
                .unwrap();
            sqlx::query(
                "UPDATE sync_runs SET started_at = now() - make_interval(mins => $2::int)
                  WHERE run_id = $1",
            )
            .bind(run_id)
            .bind(minutes_ago)
            .execute(&pool)
            .await
            .unwrap();
            run_id
        }
    };
    // Its request was dead-lettered an hour ago; another one started a minute ago.
    let lost = user_sync(60).await;
    let recent = user_sync(1).await;
    let report = env.app.due(OffsetDateTime::now_utc()).await.unwrap();
    assert_eq!(report.abandoned, 1);
    let failed = env.run(lost).await;
    assert_eq!(failed.status, RunStatus::Failed);
    assert!(failed.detail.unwrap().starts_with("abandoned"));
    assert_eq!(env.run(recent).await.status, RunStatus::Running);
    env.teardown().await;
    database.drop_database().await;
}
