//! Sync runs: one row per id however often it is recorded, a status that stops moving once
//! final, counts that add up from concurrent writers, newest-first paging by tenant.

use cardsync_store::runs::{self, NewRun, RunStatus};
use uuid::Uuid;

fn new_run(tenant: Uuid) -> NewRun {
    NewRun {
        run_id: Uuid::now_v7(),
        tenant_id: tenant,
        kind: "sync_now".into(),
        cause: "manual".into(),
        started_by: "admin@contoso.example".into(),
        target: None,
    }
}

#[tokio::test]
async fn a_run_recorded_twice_is_one_run_and_moves_until_it_is_final() {
    let pool = cardsync_testkit::test_pool().await;
    let run = new_run(Uuid::new_v4());
    runs::create(&pool, &run).await.expect("created");
    runs::create(&pool, &run).await.expect("created again");
    let listed = runs::list(&pool, run.tenant_id, None, 10)
        .await
        .expect("listed");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status, RunStatus::Queued);
    assert_eq!(listed[0].started_at, None);

    assert!(
        runs::set_status(&pool, run.run_id, RunStatus::Running, None)
            .await
            .expect("moved")
    );
    assert!(
        runs::set_status(&pool, run.run_id, RunStatus::Succeeded, None)
            .await
            .expect("moved")
    );
    let done = runs::get(&pool, run.run_id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(done.status, RunStatus::Succeeded);
    assert!(done.started_at.is_some() && done.finished_at.is_some());

    // A finished run never changes again.
    let moved = runs::set_status(&pool, run.run_id, RunStatus::Failed, Some("late"))
        .await
        .expect("answered");
    assert!(!moved);
    let still = runs::get(&pool, run.run_id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!((still.status, still.detail), (RunStatus::Succeeded, None));
}

#[tokio::test]
async fn counts_from_concurrent_writers_add_up() {
    let pool = cardsync_testkit::test_pool().await;
    let run = new_run(Uuid::new_v4());
    runs::create(&pool, &run).await.expect("created");
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let pool = pool.clone();
        writers.spawn(async move {
            runs::add_counts(
                &pool,
                run.run_id,
                &[("created", 3), ("error:email_held", 1), ("unchanged", 0)],
            )
            .await
        });
    }
    while let Some(written) = writers.join_next().await {
        written.expect("joins").expect("counted");
    }
    let counted = runs::get(&pool, run.run_id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(counted.counts.get("created"), Some(&60));
    assert_eq!(counted.counts.get("error:email_held"), Some(&20));
    assert_eq!(
        counted.counts.get("unchanged"),
        None,
        "zero counts are not written"
    );
}

#[tokio::test]
async fn a_tenants_runs_page_newest_first_and_never_show_another_tenants() {
    let pool = cardsync_testkit::test_pool().await;
    let tenant = Uuid::new_v4();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let run = new_run(tenant);
        runs::create(&pool, &run).await.expect("created");
        ids.push(run.run_id);
    }
    runs::create(&pool, &new_run(Uuid::new_v4()))
        .await
        .expect("another tenant's");
    let first = runs::list(&pool, tenant, None, 3).await.expect("page 1");
    let last = &first[2];
    let second = runs::list(&pool, tenant, Some((last.created_at, last.run_id)), 3)
        .await
        .expect("page 2");
    let seen: Vec<Uuid> = first.iter().chain(&second).map(|run| run.run_id).collect();
    assert_eq!(seen.len(), 5);
    let mut newest_first = ids.clone();
    newest_first.sort_by_key(|id| std::cmp::Reverse(*id));
    let mut by_creation = seen.clone();
    by_creation.sort_by_key(|id| std::cmp::Reverse(*id));
    assert_eq!(
        by_creation, newest_first,
        "the same five runs, none of another tenant"
    );
    assert!(seen.iter().all(|id| ids.contains(id)));
}

/// Moves a run's heartbeat (and start) `seconds` into the past, as a worker killed then would.
async fn age(pool: &sqlx::PgPool, run_id: Uuid, seconds: f64) {
    sqlx::query(
        "UPDATE sync_runs SET heartbeat_at = now() - make_interval(secs => $2),
                              started_at = now() - make_interval(secs => $2)
          WHERE run_id = $1",
    )
    .bind(run_id)
    .bind(seconds)
    .execute(pool)
    .await
    .expect("aged");
}

#[tokio::test]
async fn a_run_is_claimed_once_and_taken_over_only_when_its_heartbeat_stopped() {
    let pool = cardsync_testkit::test_pool().await;
    let stale = std::time::Duration::from_secs(60);
    let run = new_run(Uuid::new_v4());
    assert_eq!(
        runs::claim(&pool, run.run_id, stale).await.unwrap(),
        runs::Claim::Missing
    );
    runs::create(&pool, &run).await.unwrap();
    assert_eq!(
        runs::claim(&pool, run.run_id, stale).await.unwrap(),
        runs::Claim::Claimed
    );
    assert_eq!(
        runs::claim(&pool, run.run_id, stale).await.unwrap(),
        runs::Claim::Busy,
        "a fresh heartbeat keeps the run its worker's"
    );
    assert!(runs::heartbeat(&pool, run.run_id).await.unwrap());
    age(&pool, run.run_id, 120.0).await;
    assert_eq!(
        runs::claim(&pool, run.run_id, stale).await.unwrap(),
        runs::Claim::Claimed,
        "a stopped heartbeat lets the next worker take the run over"
    );
    runs::set_status(&pool, run.run_id, RunStatus::Succeeded, None)
        .await
        .unwrap();
    assert_eq!(
        runs::claim(&pool, run.run_id, stale).await.unwrap(),
        runs::Claim::Finished(RunStatus::Succeeded)
    );
    assert!(!runs::heartbeat(&pool, run.run_id).await.unwrap());
}

#[tokio::test]
async fn an_abandoned_run_fails_and_a_queued_one_waits() {
    let pool = cardsync_testkit::test_pool().await;
    // A kind of its own (letters only, as the column wants), so other tests' runs stay out.
    let kind: String = Uuid::new_v4().simple().to_string()[..16]
        .chars()
        .map(|c| (b'a' + c.to_digit(16).unwrap_or_default() as u8) as char)
        .collect();
    let tenant = Uuid::new_v4();
    let abandoned = NewRun {
        kind: kind.clone(),
        ..new_run(tenant)
    };
    let waiting = NewRun {
        kind: kind.clone(),
        ..new_run(tenant)
    };
    // Started, then parked by the safety rail because its tenant was paused: it waits for the
    // resume, however long.
    let parked = NewRun {
        kind: kind.clone(),
        ..new_run(tenant)
    };
    runs::create(&pool, &abandoned).await.unwrap();
    runs::create(&pool, &waiting).await.unwrap();
    runs::create(&pool, &parked).await.unwrap();
    for run in [&abandoned, &parked] {
        runs::claim(&pool, run.run_id, std::time::Duration::from_secs(60))
            .await
            .unwrap();
        age(&pool, run.run_id, 3600.0).await;
    }
    let mut tx = pool.begin().await.unwrap();
    cardsync_store::safety::lock(&mut tx, tenant).await.unwrap();
    cardsync_store::safety::defer(
        &mut tx,
        tenant,
        Some((
            parked.run_id,
            cardsync_store::safety::Worker::Reconcile,
            b"request",
        )),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let digests = crate::digests::Capture::default();
    let mut tx = pool.begin().await.unwrap();
    let failed = runs::fail_abandoned(
        &mut tx,
        &kind,
        std::time::Duration::from_secs(600),
        &digests,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(failed, vec![abandoned.run_id]);
    let run = runs::get(&pool, abandoned.run_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert!(run.detail.unwrap().starts_with("abandoned"));
    let queued = runs::get(&pool, waiting.run_id).await.unwrap().unwrap();
    assert_eq!(queued.status, RunStatus::Queued);
    let parked = runs::get(&pool, parked.run_id).await.unwrap().unwrap();
    assert_eq!(parked.status, RunStatus::Queued);
    assert!(parked.detail.unwrap().contains("paused"));
}

#[tokio::test]
async fn a_schedule_occurrence_records_one_run_however_often_it_is_enqueued() {
    let pool = cardsync_testkit::test_pool().await;
    let tenant = Uuid::new_v4();
    let occurrence = time::macros::datetime!(2026-12-06 00:00 UTC);
    let scheduled = |run: NewRun| NewRun {
        kind: "reconcile".into(),
        started_by: "schedule".into(),
        ..run
    };
    assert!(
        runs::create_scheduled(&pool, &scheduled(new_run(tenant)), occurrence)
            .await
            .unwrap()
    );
    assert!(
        !runs::create_scheduled(&pool, &scheduled(new_run(tenant)), occurrence)
            .await
            .unwrap()
    );
    let next = occurrence + time::Duration::days(1);
    assert!(
        runs::create_scheduled(&pool, &scheduled(new_run(tenant)), next)
            .await
            .unwrap()
    );
    assert_eq!(runs::list(&pool, tenant, None, 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_run_ends_when_every_command_it_emitted_is_accounted_for() {
    let pool = cardsync_testkit::test_pool().await;
    let run = new_run(Uuid::new_v4());
    runs::create(&pool, &run).await.unwrap();
    runs::claim(&pool, run.run_id, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    // The card-writer may apply a command before its worker says they are all out.
    let mut tx = pool.begin().await.unwrap();
    let digests = crate::digests::Capture::default();
    runs::record_applied(&mut tx, run.run_id, &[("created", 1)], &[], &digests)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    let ended = runs::emission_done(&mut tx, run.run_id, 3, &[("unannounced", 2)], &digests)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(!ended, "two commands are still out");
    let waiting = runs::get(&pool, run.run_id).await.unwrap().unwrap();
    assert_eq!(waiting.status, RunStatus::Running);
    assert!(waiting.emitted_at.is_some());
    assert_eq!(
        runs::claim(&pool, run.run_id, std::time::Duration::ZERO)
            .await
            .unwrap(),
        runs::Claim::Applying,
        "a run whose commands are out is never run again"
    );
    let mut tx = pool.begin().await.unwrap();
    runs::record_applied(
        &mut tx,
        run.run_id,
        &[("updated", 1), ("superseded", 1)],
        &[],
        &digests,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let done = runs::get(&pool, run.run_id).await.unwrap().unwrap();
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(done.counts.get("commands"), Some(&3));
    assert_eq!(done.counts.get("unannounced"), Some(&2));
}
