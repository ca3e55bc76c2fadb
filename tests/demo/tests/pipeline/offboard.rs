//! Offboarding a synced tenant with `cardsync tenant offboard`: every row and Redis key of it
//! goes, the subscription manager deletes its Graph subscription (gone in graph-sim) and then its
//! connection, and a sync request still arriving for it is consumed and counted as dropped.

use crate::support::{self, Setup};
use anyhow::{Context as _, ensure};
use cardsync_demo::{Pipeline, Service};
use cardsync_proto as proto;
use reqwest::Method;
use serde_json::Value;
use std::time::Duration;

/// A Redis database of its own, so a scan for the tenant's keys sees this run's only.
const OWN_REDIS: &str = "redis://127.0.0.1:6379/12";

async fn graph_subscriptions(p: &Pipeline) -> anyhow::Result<Vec<Value>> {
    let listed = p
        .control
        .call(
            Method::GET,
            &format!("/tenants/{}/subscriptions", p.tenant),
            None,
        )
        .await?;
    Ok(listed["value"].as_array().cloned().unwrap_or_default())
}

/// Rows of the tenant per table with a `tenant_id` column, those with any.
async fn tables_with_rows(p: &Pipeline) -> anyhow::Result<Vec<(String, i64)>> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.columns
          WHERE table_schema = current_schema() AND column_name = 'tenant_id'",
    )
    .fetch_all(&p.pool)
    .await?;
    let mut with_rows = Vec::new();
    for table in tables {
        let sql = format!("SELECT count(*) FROM \"{table}\" WHERE tenant_id = $1");
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(p.tenant)
            .fetch_one(&p.pool)
            .await?;
        if count > 0 {
            with_rows.push((table, count));
        }
    }
    with_rows.sort();
    Ok(with_rows)
}

#[tokio::test]
async fn an_offboarded_tenant_leaves_nothing_behind_and_its_late_requests_are_dropped() {
    let mut setup = Setup::new("offboard", 10);
    setup.redis_url = OWN_REDIS;
    support::run(setup, async |p| {
        p.initial_sync(Duration::from_secs(90)).await?;
        let tenant = p.tenant_text();
        ensure!(graph_subscriptions(p).await?.len() == 1, "subscribed");

        let answer = p.cardsync(&[
            "tenant",
            "offboard",
            &tenant,
            "--confirm",
            &tenant,
            "-o",
            "json",
        ])?;
        let report: Value = serde_json::from_str(&answer).context("the report")?;
        ensure!(report["rows"]["cards"].as_u64() == Some(10), "{report}");
        ensure!(report["subscriptions_pending"] == true, "{report}");

        support::eventually(
            "the Graph subscription and the connection gone",
            Duration::from_secs(60),
            async || {
                let connections: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM tenant_connections WHERE tenant_id = $1",
                )
                .bind(p.tenant)
                .fetch_one(&p.pool)
                .await?;
                Ok((connections == 0 && graph_subscriptions(p).await?.is_empty()).then_some(()))
            },
        )
        .await?;

        // A request arriving for it now: consumed and counted, never dead-lettered.
        p.request_sync(proto::sync_request::Depth::Info).await?;
        support::eventually(
            "the late request dropped",
            Duration::from_secs(30),
            async || {
                let dropped = p
                    .metric(
                        Service::DeltaWorker,
                        "cardsync_delta_rounds_total",
                        &[("outcome", "dropped")],
                    )
                    .await?;
                Ok((dropped >= 1.0).then_some(()))
            },
        )
        .await?;

        let left = tables_with_rows(p).await?;
        ensure!(
            left == [("admin_audit".to_owned(), 1)],
            "only the record of the offboarding stays: {left:?}"
        );
        let client = redis::Client::open(OWN_REDIS)?;
        let mut redis = client.get_multiplexed_async_connection().await?;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("*{{{tenant}}}*"))
            .query_async(&mut redis)
            .await?;
        ensure!(keys.is_empty(), "Redis keys left: {keys:?}");
        let dead: Value =
            serde_json::from_str(&p.cardsync(&["dead-letters", "list", "-o", "json"])?)?;
        ensure!(
            !dead.to_string().contains(&tenant),
            "dead letters of the tenant: {dead}"
        );
        Ok(())
    })
    .await;
}
