//! The per-tenant lease against real Redis: one holder at a time, tokens that only grow, and a
//! fencing counter that never restarts below what PostgreSQL has accepted.
#![allow(
    clippy::unwrap_used,
    reason = "test set-up helpers fail the test by panicking"
)]

use cardsync_rounds::RedisState;
use std::time::Duration;
use uuid::Uuid;

async fn redis() -> redis::aio::ConnectionManager {
    cardsync_testkit::init();
    let client = redis::Client::open(cardsync_testkit::redis_url()).unwrap();
    redis::aio::ConnectionManager::new(client)
        .await
        .expect("Redis must run (CARDSYNC_TEST_REDIS_URL or 127.0.0.1:6379): run `make services`")
}

async fn state() -> (RedisState, String) {
    let prefix = cardsync_testkit::unique_prefix("lease");
    (RedisState::new(redis().await, &prefix), prefix)
}

#[tokio::test]
async fn one_holder_at_a_time_and_every_token_is_greater_than_the_last() {
    let (state, _) = state().await;
    let tenant = Uuid::new_v4();
    let ttl = Duration::from_secs(5);
    let first = state.acquire(tenant, ttl, 0).await.unwrap().unwrap();
    assert!(state.acquire(tenant, ttl, 0).await.unwrap().is_none());
    assert!(state.renew(&first, ttl).await.unwrap());
    state.release(&first).await.unwrap();
    let second = state.acquire(tenant, ttl, 0).await.unwrap().unwrap();
    assert!(second.token > first.token);
    assert!(
        !state.renew(&first, ttl).await.unwrap(),
        "a released lease cannot be renewed by its old holder"
    );
    // Another tenant's lease is independent.
    assert!(
        state
            .acquire(Uuid::new_v4(), ttl, 0)
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn a_flushed_counter_restarts_above_the_fence_postgres_knows() {
    let (state, prefix) = state().await;
    let tenant = Uuid::new_v4();
    let ttl = Duration::from_secs(5);
    let lease = state.acquire(tenant, ttl, 41).await.unwrap().unwrap();
    assert_eq!(lease.token, 42);
    state.release(&lease).await.unwrap();
    // Redis loses everything; PostgreSQL still says 42 wrote last.
    assert!(cardsync_testkit::forget_redis_keys(&prefix).await > 0);
    let lease = state.acquire(tenant, ttl, 42).await.unwrap().unwrap();
    assert_eq!(lease.token, 43);
    // The floor only raises the counter; it never lowers it.
    state.release(&lease).await.unwrap();
    let lease = state.acquire(tenant, ttl, 0).await.unwrap().unwrap();
    assert_eq!(lease.token, 44);
}
