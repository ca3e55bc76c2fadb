//! Schedules of their own, driven through `due` with explicit clocks: once per local day across
//! both daylight-saving changes, once however many jobs overlap, nothing while paused, only the
//! latest missed occurrence after an outage, and a group's run reconciling only its members.
//! On databases of their own: a pass looks at every tenant.

use crate::due::fresh_env;
use crate::support::Env;
use cardsync_bus::Processed;
use cardsync_schedule::{Cadence, Spec, TimeOfDay};
use cardsync_store::runs::{self, RunStatus};
use cardsync_store::schedules::{self, Target};
use std::collections::BTreeSet;
use time::OffsetDateTime;
use time::macros::datetime;

fn daily(at: &str, zone: &str) -> Spec {
    Spec {
        cadence: Cadence::Daily,
        weekday: None,
        day_of_month: None,
        at: TimeOfDay::parse(at).unwrap(),
        time_zone: zone.to_owned(),
    }
}

async fn put(env: &Env, target: &Target, spec: &Spec, paused: bool) {
    schedules::put(&env.pool, env.tenant, target, spec, paused, "test")
        .await
        .unwrap();
}

/// Runs a `due` pass every 15 minutes (the chart's CronJob) from `from` up to `to`; returns the
/// passes that enqueued something.
async fn passes(env: &Env, from: OffsetDateTime, to: OffsetDateTime) -> Vec<OffsetDateTime> {
    let mut enqueued = Vec::new();
    let mut now = from;
    while now < to {
        if env.app.due(now).await.unwrap().enqueued > 0 {
            enqueued.push(now);
        }
        now += time::Duration::minutes(15);
    }
    enqueued
}

/// The tenant's scheduled runs, oldest first, as (target, scheduled_for).
async fn scheduled_runs(env: &Env) -> Vec<(Option<String>, Option<OffsetDateTime>)> {
    sqlx::query_as(
        "SELECT target, scheduled_for FROM sync_runs
          WHERE tenant_id = $1 AND started_by = 'schedule' ORDER BY created_at",
    )
    .bind(env.tenant)
    .fetch_all(&env.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_due_daily_schedule_runs_once_per_day_across_both_daylight_saving_changes() {
    let (database, env) = fresh_env().await;
    // 2027: Berlin springs forward on 28 March (02:00 CET → 03:00 CEST), New York falls back on
    // 7 November (02:00 EDT → 01:00 EST).
    put(
        &env,
        &Target::Tenant,
        &daily("02:30", "Europe/Berlin"),
        false,
    )
    .await;
    let spring = passes(
        &env,
        datetime!(2027-03-26 00:00 UTC),
        datetime!(2027-03-30 00:00 UTC),
    )
    .await;
    assert_eq!(
        spring,
        [
            // The first pass finds the day before's occurrence not run yet.
            datetime!(2027-03-26 00:00 UTC),
            datetime!(2027-03-26 01:30 UTC),
            datetime!(2027-03-27 01:30 UTC),
            // 02:30 does not exist on the 28th: it runs at 03:30 CEST, 01:30 UTC, once.
            datetime!(2027-03-28 01:30 UTC),
            datetime!(2027-03-29 00:30 UTC),
        ]
    );
    let occurrences: Vec<_> = scheduled_runs(&env)
        .await
        .into_iter()
        .map(|(target, at)| (target, at.unwrap()))
        .collect();
    assert_eq!(
        occurrences,
        [
            (None, datetime!(2027-03-25 01:30 UTC)),
            (None, datetime!(2027-03-26 01:30 UTC)),
            (None, datetime!(2027-03-27 01:30 UTC)),
            (None, datetime!(2027-03-28 01:30 UTC)),
            (None, datetime!(2027-03-29 00:30 UTC)),
        ]
    );

    // The tenant's schedule paused (no default either), a group's in New York at 01:30.
    put(
        &env,
        &Target::Tenant,
        &daily("02:30", "Europe/Berlin"),
        true,
    )
    .await;
    let group = Target::Group("group-ny".into());
    put(&env, &group, &daily("01:30", "America/New_York"), false).await;
    let fall = passes(
        &env,
        datetime!(2027-11-05 00:00 UTC),
        datetime!(2027-11-09 00:00 UTC),
    )
    .await;
    assert_eq!(
        fall,
        [
            datetime!(2027-11-05 00:00 UTC),
            datetime!(2027-11-05 05:30 UTC),
            datetime!(2027-11-06 05:30 UTC),
            // 01:30 comes twice on the 7th: at 05:30 UTC (EDT), which runs, and at 06:30 UTC
            // (EST), which does not.
            datetime!(2027-11-07 05:30 UTC),
            datetime!(2027-11-08 06:30 UTC),
        ]
    );
    let group_runs = scheduled_runs(&env)
        .await
        .into_iter()
        .filter(|(target, _)| target.as_deref() == Some("group-ny"))
        .count();
    assert_eq!(group_runs, 5);
    assert_eq!(
        env.ready("reconciler.requests").await,
        10,
        "each run's request published once"
    );
    env.teardown().await;
    database.drop_database().await;
}

#[tokio::test]
async fn overlapping_due_jobs_enqueue_a_schedules_occurrence_once() {
    let (database, env) = fresh_env().await;
    let group = Target::Group("group-1".into());
    put(&env, &group, &daily("00:00", "UTC"), false).await;
    let replica = env.replica().await;
    let tomorrow = OffsetDateTime::now_utc() + time::Duration::days(1);
    for _ in 0..3 {
        let (first, second) = tokio::join!(env.app.due(tomorrow), replica.due(tomorrow));
        let (first, second) = (first.unwrap(), second.unwrap());
        assert!(
            first.enqueued + second.enqueued <= 2,
            "{first:?} {second:?}"
        );
    }
    // The tenant's default and the group's, once each.
    let runs: BTreeSet<_> = scheduled_runs(&env)
        .await
        .into_iter()
        .map(|(target, _)| target)
        .collect();
    assert_eq!(runs, [None, Some("group-1".to_owned())].into());
    assert_eq!(scheduled_runs(&env).await.len(), 2);
    let requests = env.take_requests().await;
    assert_eq!(requests.len(), 2);
    assert!(
        requests.iter().any(|request| request.scope()
            == cardsync_proto::sync_request::Scope::Group
            && request.target_id == "group-1"),
        "{requests:?}"
    );

    // Both requests were lost (a job killed before the broker confirmed): an hour later the
    // next pass publishes them again, the group's still as a group's.
    sqlx::query(
        "UPDATE sync_runs SET created_at = now() - interval '2 hours' WHERE tenant_id = $1",
    )
    .bind(env.tenant)
    .execute(&env.pool)
    .await
    .unwrap();
    let report = env.app.due(tomorrow).await.unwrap();
    assert_eq!((report.requeued, report.enqueued), (2, 0), "{report:?}");
    let again = env.take_requests().await;
    let group_again: Vec<_> = again
        .iter()
        .filter(|request| request.target_id == "group-1")
        .collect();
    assert_eq!(group_again.len(), 1, "{again:?}");
    assert_eq!(
        group_again[0].scope(),
        cardsync_proto::sync_request::Scope::Group
    );
    replica.close().await;
    env.teardown().await;
    database.drop_database().await;
}

#[tokio::test]
async fn a_paused_schedule_enqueues_nothing_and_a_job_back_after_days_runs_only_the_latest_occurrence()
 {
    let (database, env) = fresh_env().await;
    let now = OffsetDateTime::now_utc();
    // A paused tenant-wide schedule: no run, not even the default's.
    put(&env, &Target::Tenant, &daily("06:00", "UTC"), true).await;
    for days in 1..=3 {
        let report = env.app.due(now + time::Duration::days(days)).await.unwrap();
        assert_eq!(report.enqueued, 0, "{report:?}");
    }
    assert!(scheduled_runs(&env).await.is_empty());

    // Resumed, then the CronJob is down for five days: its next pass runs the latest missed
    // occurrence, once.
    put(&env, &Target::Tenant, &daily("06:00", "UTC"), false).await;
    let back = now + time::Duration::days(5);
    assert_eq!(env.app.due(back).await.unwrap().enqueued, 1);
    assert_eq!(
        env.app
            .due(back + time::Duration::minutes(15))
            .await
            .unwrap()
            .enqueued,
        0
    );
    let runs = scheduled_runs(&env).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    let latest = back.replace_time(time::Time::from_hms(6, 0, 0).unwrap());
    let latest = if latest > back {
        latest - time::Duration::days(1)
    } else {
        latest
    };
    assert_eq!(runs[0].1, Some(latest));
    env.teardown().await;
    database.drop_database().await;
}

#[tokio::test]
async fn a_group_schedules_run_reconciles_only_that_groups_members() {
    let (database, env) = fresh_env().await;
    let ids = env.synced_users(&["Ada", "Bob", "Cy"]).await;
    let group = env.create_group("Sales", &[&ids[0], &ids[1]]).await;
    // Ada's and Cy's cards are lost; only Ada is in the group.
    for user in [&ids[0], &ids[2]] {
        sqlx::query("DELETE FROM cards WHERE tenant_id = $1 AND user_id = $2")
            .bind(env.tenant)
            .bind(user)
            .execute(&env.pool)
            .await
            .unwrap();
    }
    // The tenant-wide schedule is paused so that only the group's runs.
    put(&env, &Target::Tenant, &daily("00:00", "UTC"), true).await;
    put(
        &env,
        &Target::Group(group.clone()),
        &daily("00:00", "UTC"),
        false,
    )
    .await;
    let report = env
        .app
        .due(OffsetDateTime::now_utc() + time::Duration::days(1))
        .await
        .unwrap();
    assert_eq!(report.enqueued, 1);
    assert_eq!(env.reconcile_with(&env.app).await, Processed::Acked);

    let commands = env.commands().await;
    let users: BTreeSet<&str> = commands.iter().map(|(_, c)| c.user_id.as_str()).collect();
    assert_eq!(
        users,
        [ids[0].as_str(), ids[1].as_str()].into(),
        "the group's members, on the bulk queue: {commands:?}"
    );
    assert!(
        commands
            .iter()
            .all(|(queue, _)| *queue == "card-writer.bulk")
    );
    env.apply(&commands).await;
    assert!(
        env.card_value(&ids[0], "name").await.is_some(),
        "Ada's card is back"
    );
    assert!(
        env.card_value(&ids[2], "name").await.is_none(),
        "Cy is not the group's"
    );
    let run = runs::list(&env.pool, env.tenant, None, 10)
        .await
        .unwrap()
        .into_iter()
        .find(|run| run.target.as_deref() == Some(group.as_str()))
        .expect("the group's run");
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.counts.get("commands"), Some(&2));
    assert_eq!(run.counts.get("created"), Some(&1));
    assert_eq!(run.counts.get("updated"), Some(&1));
    env.teardown().await;
    database.drop_database().await;
}
