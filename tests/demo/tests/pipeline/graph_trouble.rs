//! Graph itself in trouble: delta tokens that expire or that Graph asks to resync, and a storm
//! of 429s in the middle of a delta round.

use crate::support::{self, Setup, eventually, unique};
use anyhow::ensure;
use cardsync_demo::{Pipeline, Service};
use serde_json::json;
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(60);

async fn delta_metric(p: &Pipeline, name: &str) -> anyhow::Result<f64> {
    p.metric(Service::DeltaWorker, name, &[]).await
}

#[tokio::test]
async fn an_expired_delta_token_and_a_resync_request_start_a_full_round_that_converges() {
    support::run(Setup::new("expiry", 40), async |p| {
        p.initial_sync(Duration::from_secs(90)).await?;
        let tenant = p.tenant_text();
        let users = support::enabled_users(p).await?;
        let domain = support::domain(&users);
        let resyncs_before = delta_metric(p, "cardsync_delta_resyncs_total").await?;

        // The stored delta link's token is now older than Graph keeps sync state:
        // `410 syncStateNotFound` on the next round. Meanwhile a user is created, one changed
        // and one deleted for good, which only a full enumeration can notice as gone.
        p.control
            .set_delta(&tenant, json!({"tokenMaxAgeSecs": 60}))
            .await?;
        p.control.advance_clock(120).await?;
        p.control
            .create_user(
                &tenant,
                json!({
                    "displayName": "Expiry Newcomer",
                    "userPrincipalName": format!("expiry.{}@{domain}", p.config.run_id),
                    "accountEnabled": true,
                }),
            )
            .await?;
        p.control
            .update_user(
                &tenant,
                &users[0].id,
                json!({"jobTitle": unique("Expired")}),
            )
            .await?;
        p.control.delete_user(&tenant, &users[1].id, true).await?;
        p.wait_converged(SETTLE).await?;
        let resyncs = delta_metric(p, "cardsync_delta_resyncs_total").await?;
        ensure!(
            resyncs > resyncs_before,
            "no resync counted after the token expired ({resyncs_before} -> {resyncs})"
        );

        // Graph answers the next delta link with `410 Gone` + Location (resyncRequired).
        p.control
            .set_delta(&tenant, json!({"resyncNext": 1}))
            .await?;
        p.control
            .update_user(
                &tenant,
                &users[2].id,
                json!({"jobTitle": unique("Resynced")}),
            )
            .await?;
        p.wait_converged(SETTLE).await?;
        let after = delta_metric(p, "cardsync_delta_resyncs_total").await?;
        ensure!(
            after > resyncs,
            "no resync counted after Graph asked for one ({resyncs} -> {after})"
        );
        let gone = p.graph_responses("users.delta", 410).await?;
        ensure!(
            gone >= 2,
            "graph-sim served {gone} 410s on users.delta, expected 2"
        );
        Ok(())
    })
    .await;
}

/// Changes `count` users and, once the round they trigger has fetched its first delta page,
/// throttles the next `throttled` delta requests with `retry_after`; then waits for the cards.
async fn storm(
    p: &mut Pipeline,
    users: &[support::User],
    throttled: u32,
    retry_after: Option<&str>,
) -> anyhow::Result<()> {
    let tenant = p.tenant_text();
    let pages_before = p.graph_responses("users.delta", 200).await?;
    // Every delta page takes a while, so the round is surely still paging when the storm starts.
    p.control
        .set_faults(json!([{"endpoint": "users.delta", "kind": "slow", "delayMs": 250}]))
        .await?;
    for user in users {
        p.control
            .update_user(&tenant, &user.id, json!({"jobTitle": unique("Storm")}))
            .await?;
    }
    eventually("the round's first delta page", SETTLE, async || {
        let pages = p.graph_responses("users.delta", 200).await?;
        Ok((pages > pages_before).then_some(()))
    })
    .await?;
    p.control
        .set_faults(json!([{
            "endpoint": "users.delta",
            "kind": "throttle",
            "remaining": throttled,
            "retryAfter": retry_after,
        }]))
        .await?;
    p.wait_converged(SETTLE).await?;
    Ok(())
}

#[tokio::test]
async fn a_429_storm_mid_round_with_fractional_and_missing_retry_after_converges() {
    support::run(Setup::new("storm", 60), async |p| {
        p.initial_sync(Duration::from_secs(90)).await?;
        let tenant = p.tenant_text();
        // Small pages: a round over 20 changed users takes several requests.
        p.control
            .set_delta(&tenant, json!({"defaultPageSize": 4}))
            .await?;
        let users = support::enabled_users(p).await?;
        ensure!(users.len() >= 40, "only {} enabled users", users.len());
        let failed_before = p
            .metric(
                Service::DeltaWorker,
                "cardsync_delta_rounds_total",
                &[("outcome", "failed")],
            )
            .await?;

        storm(p, &users[..20], 3, Some("0.75")).await?;
        let fractional = p.graph_responses("users.delta", 429).await?;
        ensure!(
            fractional >= 3,
            "graph-sim served {fractional} 429s with a fractional Retry-After, expected 3"
        );

        storm(p, &users[20..40], 3, None).await?;
        let all = p.graph_responses("users.delta", 429).await?;
        ensure!(
            all >= fractional + 3,
            "graph-sim served {} 429s without Retry-After, expected 3",
            all - fractional
        );

        // The client waited the storms out inside the round: no round had to fail and retry.
        let failed = p
            .metric(
                Service::DeltaWorker,
                "cardsync_delta_rounds_total",
                &[("outcome", "failed")],
            )
            .await?;
        ensure!(
            failed == failed_before,
            "{} delta rounds failed during the storms",
            failed - failed_before
        );
        Ok(())
    })
    .await;
}
