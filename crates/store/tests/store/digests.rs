//! Run digests: the people a run names (bounded, each once), failed commands counted once per
//! message, a digest in the outbox exactly when a run ends, the daily digest of live runs, and
//! retention taking a run's people with it.

use cardsync_store::outbox::{self, NewMessage};
use cardsync_store::runs::{
    self, Digest, DigestEncoder, FailedCommand, MAX_DIGEST_PEOPLE, NewPerson, NewRun, RunStatus,
};
use sqlx::PgPool;
use std::sync::Mutex;
use time::OffsetDateTime;
use uuid::Uuid;

/// An encoder that keeps every digest it was asked to encode (and gives the outbox a row
/// nothing relays: `store-test.card-events` is no deployment's exchange).
#[derive(Default)]
pub struct Capture(Mutex<Vec<Digest>>);

impl DigestEncoder for Capture {
    fn encode(&self, digest: &Digest) -> NewMessage {
        self.0.lock().expect("not poisoned").push(digest.clone());
        NewMessage {
            tenant_id: digest.tenant_id,
            message_id: Uuid::now_v7(),
            exchange: "store-test.card-events".into(),
            routing_key: format!("digest.{}", digest.tenant_id),
            message_type: "test".into(),
            payload: Vec::new(),
            headers: Default::default(),
        }
    }
}

impl Capture {
    fn of(&self, tenant: Uuid) -> Vec<Digest> {
        let digests = self.0.lock().expect("not poisoned");
        digests
            .iter()
            .filter(|d| d.tenant_id == tenant)
            .cloned()
            .collect()
    }
}

fn person(user: &str, change: &str) -> NewPerson {
    NewPerson {
        user_id: user.into(),
        card_id: Uuid::new_v4(),
        name: Some(format!("Name of {user}")),
        email: Some(format!("{user}@contoso.example")),
        change: change.into(),
    }
}

async fn running_run(pool: &PgPool, tenant: Uuid) -> Uuid {
    let run = NewRun {
        run_id: Uuid::now_v7(),
        tenant_id: tenant,
        kind: "sync_now".into(),
        cause: "manual".into(),
        started_by: "admin@contoso.example".into(),
        target: None,
    };
    runs::create(pool, &run)
        .await
        .expect("the test database answers");
    runs::set_status(pool, run.run_id, RunStatus::Running, None)
        .await
        .expect("the test database answers");
    run.run_id
}

async fn applied(
    pool: &PgPool,
    run: Uuid,
    counts: &[(&str, i64)],
    people: &[NewPerson],
    digests: &Capture,
) {
    let mut tx = pool.begin().await.expect("the test database answers");
    runs::record_applied(&mut tx, run, counts, people, digests)
        .await
        .expect("the test database answers");
    tx.commit().await.expect("the test database answers");
}

async fn emitted(pool: &PgPool, run: Uuid, commands: i64, digests: &Capture) -> bool {
    let mut tx = pool.begin().await.expect("the test database answers");
    let ended = runs::emission_done(&mut tx, run, commands, &[], digests)
        .await
        .expect("the test database answers");
    tx.commit().await.expect("the test database answers");
    ended
}

#[tokio::test]
async fn a_run_names_each_person_once_at_most_the_bound_with_exact_totals_in_its_one_digest() {
    let pool = cardsync_testkit::test_pool().await;
    let tenant = Uuid::new_v4();
    let digests = Capture::default();
    let run = running_run(&pool, tenant).await;
    let created: Vec<NewPerson> = (0..MAX_DIGEST_PEOPLE + 20)
        .map(|n| person(&format!("u{n:03}"), "created"))
        .collect();
    let (first, rest) = created.split_at(70);
    applied(&pool, run, &[("created", 70)], first, &digests).await;
    // The same people again (a second change in the run) are not named twice.
    applied(&pool, run, &[], &first[..5], &digests).await;
    applied(&pool, run, &[("created", 50)], rest, &digests).await;
    applied(
        &pool,
        run,
        &[("deactivated", 1), ("updated", 1)],
        &[person("gone", "deactivated")],
        &digests,
    )
    .await;
    assert!(digests.of(tenant).is_empty(), "the run has not ended");
    assert!(emitted(&pool, run, 122, &digests).await);

    let announced = digests.of(tenant);
    assert_eq!(announced.len(), 1, "one digest per run");
    let digest = &announced[0];
    assert_eq!(digest.run_id, Some(run));
    assert_eq!(
        (digest.kind.as_str(), digest.status),
        ("sync_now", RunStatus::Succeeded)
    );
    assert_eq!(digest.added_total, 120);
    assert_eq!(digest.added.len(), MAX_DIGEST_PEOPLE);
    let mut users: Vec<&str> = digest.added.iter().map(|p| p.user_id.as_str()).collect();
    users.sort_unstable();
    users.dedup();
    assert_eq!(users.len(), MAX_DIGEST_PEOPLE, "nobody named twice");
    assert_eq!(digest.removed_total, 1);
    assert_eq!(digest.removed[0].user_id, "gone");
    assert_eq!(
        digest.removed[0].email.as_deref(),
        Some("gone@contoso.example")
    );
    // The digest went into the outbox in the transaction that ended the run.
    let rows = outbox::for_tenant(&pool, tenant).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].exchange, "store-test.card-events");
}

#[tokio::test]
async fn a_failed_command_counts_once_however_often_it_is_delivered_and_ends_its_run() {
    let pool = cardsync_testkit::test_pool().await;
    let tenant = Uuid::new_v4();
    let digests = Capture::default();
    let run = running_run(&pool, tenant).await;
    applied(&pool, run, &[("created", 2)], &[], &digests).await;
    assert!(!emitted(&pool, run, 3, &digests).await);
    let failed = FailedCommand {
        run_id: run,
        message_key: "msg-1",
        reason: "invalid_command",
    };
    for expected in [true, false] {
        let mut tx = pool.begin().await.unwrap();
        let counted = runs::record_failed(&mut tx, &failed, &digests)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(counted, expected);
    }
    let done = runs::get(&pool, run).await.unwrap().unwrap();
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(done.counts.get("error:invalid_command"), Some(&1));
    let announced = digests.of(tenant);
    assert_eq!(announced.len(), 1);
    assert_eq!(announced[0].counts.get("error:invalid_command"), Some(&1));
}

#[tokio::test]
async fn a_run_a_worker_fails_is_announced_failed_and_a_rejected_one_is_not_announced() {
    let pool = cardsync_testkit::test_pool().await;
    let tenant = Uuid::new_v4();
    let digests = Capture::default();
    let run = running_run(&pool, tenant).await;
    let mut tx = pool.begin().await.unwrap();
    assert!(
        runs::end(
            &mut tx,
            run,
            RunStatus::Failed,
            Some("graph refused"),
            &digests
        )
        .await
        .unwrap()
    );
    // A finished run never ends again, so it is never announced twice.
    assert!(
        !runs::end(&mut tx, run, RunStatus::Succeeded, None, &digests)
            .await
            .unwrap()
    );
    let rejected = running_run(&pool, tenant).await;
    runs::end(&mut tx, rejected, RunStatus::Rejected, None, &digests)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let announced = digests.of(tenant);
    assert_eq!(announced.len(), 1);
    assert_eq!(announced[0].status, RunStatus::Failed);
    assert_eq!(announced[0].detail.as_deref(), Some("graph refused"));
}

#[tokio::test]
async fn a_tenants_live_runs_of_a_day_are_announced_once_in_one_daily_digest() {
    let pool = cardsync_testkit::test_pool().await;
    let tenant = Uuid::new_v4();
    let digests = Capture::default();
    let today = OffsetDateTime::now_utc().replace_time(time::Time::MIDNIGHT);
    let yesterday = today - time::Duration::DAY;
    let morning = runs::live(&pool, tenant, yesterday + time::Duration::hours(9))
        .await
        .unwrap();
    let evening = runs::live(&pool, tenant, yesterday + time::Duration::hours(23))
        .await
        .unwrap();
    // The current hour's run: its day is not over, so it is not announced yet.
    let now_hour = OffsetDateTime::now_utc().replace_time(time::Time::MIDNIGHT)
        + time::Duration::hours(OffsetDateTime::now_utc().hour().into());
    let current = runs::live(&pool, tenant, now_hour).await.unwrap();
    applied(
        &pool,
        morning,
        &[("created", 2)],
        &[person("ann", "created"), person("bob", "created")],
        &digests,
    )
    .await;
    applied(
        &pool,
        evening,
        &[("created", 1), ("deleted", 1)],
        &[person("ann", "reactivated"), person("cy", "deleted")],
        &digests,
    )
    .await;
    applied(
        &pool,
        current,
        &[("created", 1)],
        &[person("dee", "created")],
        &digests,
    )
    .await;

    let now = OffsetDateTime::now_utc();
    for _ in 0..2 {
        let mut tx = pool.begin().await.unwrap();
        runs::end_live_before(&mut tx, now, &digests).await.unwrap();
        tx.commit().await.unwrap();
    }
    let announced = digests.of(tenant);
    assert_eq!(
        announced.len(),
        1,
        "one digest for the day, however often due runs"
    );
    let day = &announced[0];
    assert_eq!((day.run_id, day.kind.as_str(), day.runs), (None, "live", 2));
    assert_eq!((day.from, day.until), (yesterday, today));
    assert_eq!(day.added_total, 3);
    let added: Vec<&str> = day.added.iter().map(|p| p.user_id.as_str()).collect();
    assert_eq!(added, ["ann", "bob"], "ann is named once for the day");
    assert_eq!(day.removed_total, 1);
    assert_eq!(day.removed[0].user_id, "cy");
    assert_eq!(day.counts.get("created"), Some(&3));
    let still = runs::get(&pool, current).await.unwrap().unwrap();
    assert_eq!(still.status, RunStatus::Running);
}

#[tokio::test]
async fn retention_deletes_a_runs_people_and_failed_commands_with_it() {
    let pool = cardsync_testkit::test_pool().await;
    let tenant = Uuid::new_v4();
    let digests = Capture::default();
    let run = running_run(&pool, tenant).await;
    applied(
        &pool,
        run,
        &[("created", 1)],
        &[person("ann", "created")],
        &digests,
    )
    .await;
    let mut tx = pool.begin().await.unwrap();
    let failed = FailedCommand {
        run_id: run,
        message_key: "m",
        reason: "unknown_tenant",
    };
    runs::record_failed(&mut tx, &failed, &digests)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(emitted(&pool, run, 2, &digests).await);
    sqlx::query("UPDATE sync_runs SET finished_at = now() - interval '40 days' WHERE run_id = $1")
        .bind(run)
        .execute(&pool)
        .await
        .unwrap();
    runs::delete_finished_before(&pool, OffsetDateTime::now_utc() - time::Duration::days(30))
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM sync_run_people WHERE run_id = $1)
              + (SELECT count(*) FROM sync_run_failed_commands WHERE run_id = $1)",
    )
    .bind(run)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(left, 0);
}
