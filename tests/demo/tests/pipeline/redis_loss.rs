//! Redis lost mid-run (FLUSHDB of the pipeline's own Redis database): the delta links and the
//! leases are gone; the design says that costs one full delta round, never a card.

use crate::support::{self, Setup, unique};
use anyhow::{Context as _, ensure};
use cardsync_demo::{Pipeline, Service};
use serde_json::json;
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(60);
/// A Redis database no other test uses, so flushing it disturbs nobody.
const OWN_REDIS: &str = "redis://127.0.0.1:6379/11";

async fn full_rounds(p: &Pipeline) -> anyhow::Result<f64> {
    p.metric(
        Service::DeltaWorker,
        "cardsync_delta_full_rounds_total",
        &[],
    )
    .await
}

async fn failed_rounds(p: &Pipeline) -> anyhow::Result<f64> {
    p.metric(
        Service::DeltaWorker,
        "cardsync_delta_rounds_total",
        &[("outcome", "failed")],
    )
    .await
}

#[tokio::test]
async fn a_flushed_redis_costs_exactly_one_full_round() {
    let mut setup = Setup::new("redis", 40);
    setup.redis_url = OWN_REDIS;
    support::run(setup, async |p| {
        p.initial_sync(Duration::from_secs(90)).await?;
        let tenant = p.tenant_text();
        let users = support::enabled_users(p).await?;
        let before = full_rounds(p).await?;
        ensure!(
            before >= 1.0,
            "the initial sync was not counted as a full round"
        );
        let failed_before = failed_rounds(p).await?;

        let client = redis::Client::open(OWN_REDIS).context("redis url")?;
        let mut redis = client
            .get_multiplexed_async_connection()
            .await
            .context("connecting to redis")?;
        let () = redis::cmd("FLUSHDB")
            .query_async(&mut redis)
            .await
            .context("FLUSHDB")?;

        for user in &users[..3] {
            p.control
                .update_user(&tenant, &user.id, json!({"jobTitle": unique("Flushed")}))
                .await?;
        }
        p.wait_converged(SETTLE).await?;
        let after = full_rounds(p).await?;
        ensure!(
            after == before + 1.0,
            "full rounds went from {before} to {after} after Redis was flushed, expected one more"
        );
        // One full round, not a series of failed attempts before it.
        let failed = failed_rounds(p).await?;
        ensure!(
            failed == failed_before,
            "{} delta rounds failed after Redis was flushed (the delta-worker log says why)",
            failed - failed_before
        );

        // The next change is incremental again: the full round stored a new delta link.
        p.control
            .update_user(&tenant, &users[3].id, json!({"jobTitle": unique("Later")}))
            .await?;
        p.wait_converged(SETTLE).await?;
        let later = full_rounds(p).await?;
        ensure!(
            later == after,
            "a change after the resync cost another full round ({after} -> {later})"
        );
        Ok(())
    })
    .await;
}
