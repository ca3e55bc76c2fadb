//! The tenant's lease across replicas: a worker stopped gracefully hands its tenant over at once
//! and leaves its trigger on the queue; a killed holder blocks its tenant for at most the lease
//! TTL, and the fence refuses its writes once the next holder took over.

use crate::support::{env_with, eventually};
use cardsync_bus::Processed;
use cardsync_proto::Cause;
use cardsync_proto::card_command::Action;
use cardsync_rounds::{Mode, RedisState, RoundError, RoundRequest};
use cardsync_store::directory;
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What "a few seconds" means for a crashed worker's cost to its tenant.
const A_FEW_SECONDS: Duration = Duration::from_secs(8);

/// How long the tests wait for something that should happen at once (never a speed assertion:
/// only a bound that keeps a broken build from hanging).
const PATIENCE: Duration = Duration::from_secs(30);

/// Claims the tenant for `token` and commits, as every write of a round does first; whether the
/// fence let it through.
async fn write_under(pool: &sqlx::PgPool, tenant: Uuid, token: i64) -> bool {
    let mut tx = pool.begin().await.unwrap();
    let allowed = directory::fence(&mut tx, tenant, token).await.unwrap();
    tx.commit().await.unwrap();
    allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_gracefully_mid_round_hands_its_tenant_and_trigger_to_the_next_at_once() {
    // A lease far longer than anything the test waits for: only a release explains a handover.
    let env = env_with(&[
        ("CARDSYNC__WORKER__LEASE_TTL", "120s"),
        ("CARDSYNC__WORKER__LEASE_WAIT", "2s"),
    ])
    .await;
    let users = env.seed(12).await;
    // Graph answers the first delta page only after a minute: the round is mid-way when stopped.
    env.control
        .set_faults(json!([{"endpoint": "users.delta", "kind": "slow", "delayMs": 60000}]))
        .await
        .unwrap();
    let stopping = env.replica(&[]).await;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(stopping.run_until_stopped(shutdown.clone()));
    env.publish_change(&users[0]).await;
    eventually("the round holds the tenant's lease", PATIENCE, || async {
        env.lease_holder().await.is_some()
    })
    .await;

    shutdown.cancel();
    tokio::time::timeout(PATIENCE, running)
        .await
        .expect("the stopped worker exits")
        .unwrap()
        .unwrap();
    assert_eq!(
        env.lease_holder().await,
        None,
        "the stopped worker released the tenant's lease"
    );
    assert_eq!(
        env.ready(cardsync_bus::names::DELTA_WORKER_CHANGES).await,
        1,
        "the trigger is back on its queue, not acknowledged and not parked in a retry queue"
    );

    // The next worker finds the trigger on the queue and the tenant free.
    env.control.set_faults(json!([])).await.unwrap();
    let next = env.replica(&[]).await;
    let processed = next
        .changes_consumer()
        .process_next(&next.change_handler(), PATIENCE)
        .await
        .unwrap();
    assert_eq!(processed, Processed::Acked);
    let commands = env.commands().await;
    assert!(!commands.is_empty(), "the next worker's round emitted");
    assert!(commands.iter().all(|c| c.action() == Action::Upsert));
    next.close().await;
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_delays_the_next_round_by_at_most_the_lease_ttl_and_never_writes_again() {
    // The shipped lease TTL; the next round waits for the tenant a few seconds at most.
    let env = env_with(&[("CARDSYNC__WORKER__LEASE_WAIT", "8s")]).await;
    let ttl = delta_worker::Settings::load(&cardsync_config::Sources::development())
        .unwrap()
        .worker
        .rounds
        .lease_ttl;
    assert!(
        ttl <= A_FEW_SECONDS,
        "a crashed worker blocks its tenant for {ttl:?}, more than a few seconds"
    );
    env.seed(10).await;

    // A worker takes the tenant's lease as a round does, writes under it, and is killed:
    // nothing renews the lease and nothing releases it.
    let redis = redis::Client::open(cardsync_testkit::redis_url()).unwrap();
    let killed = RedisState::new(
        redis::aio::ConnectionManager::new(redis).await.unwrap(),
        &env.prefix,
    );
    directory::ensure_sync_state(&env.pool, env.tenant)
        .await
        .unwrap();
    let floor = directory::current_fence(&env.pool, env.tenant)
        .await
        .unwrap();
    let lease = killed
        .acquire(env.tenant, ttl, floor)
        .await
        .unwrap()
        .expect("the tenant is free");
    assert!(write_under(&env.pool, env.tenant, lease.token).await);

    // Graph answers the next round's first page only after a minute: it is still under way, and
    // has written nothing yet, when the killed holder wakes up.
    env.control
        .set_faults(json!([{"endpoint": "users.delta", "kind": "slow", "delayMs": 60000}]))
        .await
        .unwrap();
    let rounds = env.app.coalescer().rounds().clone();
    let next = tokio::spawn({
        let rounds = rounds.clone();
        let request = RoundRequest {
            tenant: env.tenant,
            cause: Cause::Manual,
            announced: HashSet::new(),
            mode: Mode::Incremental,
            triggers: Default::default(),
            run_id: None,
        };
        async move { rounds.run(&request).await }
    });
    eventually(
        "the next round takes the tenant once the killed holder's lease expired",
        PATIENCE,
        || async {
            directory::current_fence(&env.pool, env.tenant)
                .await
                .unwrap()
                > lease.token
        },
    )
    .await;
    assert!(
        !write_under(&env.pool, env.tenant, lease.token).await,
        "the killed holder's write is refused while the next round runs"
    );

    // That worker stops; the one after it finishes the job, and the killed holder stays out.
    rounds.stop();
    let stopped = next.await.unwrap();
    assert!(
        matches!(stopped, Err(RoundError::Interrupted)),
        "{stopped:?}"
    );
    env.control.set_faults(json!([])).await.unwrap();
    let last = env.replica(&[]).await;
    let report = last
        .coalescer()
        .rounds()
        .run(&RoundRequest {
            tenant: env.tenant,
            cause: Cause::Manual,
            announced: HashSet::new(),
            mode: Mode::Incremental,
            triggers: Default::default(),
            run_id: None,
        })
        .await
        .unwrap();
    assert!(report.full);
    assert!(!env.commands().await.is_empty(), "the last round emitted");
    assert!(
        !write_under(&env.pool, env.tenant, lease.token).await,
        "nor ever after"
    );
    last.close().await;
    env.teardown().await;
}
