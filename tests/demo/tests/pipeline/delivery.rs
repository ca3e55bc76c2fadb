//! Graph's notification delivery misbehaving: duplicated and reordered notifications change
//! nothing twice; lost ones are caught by the delta-worker's safety poll.

use crate::support::{self, Setup, audit_mark, audit_since, eventually, take_events, unique};
use anyhow::ensure;
use cardsync_demo::Service;
use cardsync_proto::card_event::Kind;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn duplicated_and_reordered_notifications_change_each_card_once() {
    support::run(Setup::new("dup", 30), async |p| {
        p.initial_sync(Duration::from_secs(90)).await?;
        let tenant = p.tenant_text();
        // Every notification twice, each batch one per POST and newest first; a short batch
        // window so that several changes share a batch to be reversed.
        p.control
            .set_delivery(
                json!({"duplicateProbability": 1.0, "reorder": true, "batchWindowMs": 300}),
            )
            .await?;
        let audit = audit_mark(p).await?;
        // The initial sync has drained, so its events are all on the audit queue: clear them,
        // and what the queue holds after the changes is what they caused.
        take_events(p).await?;
        let users = support::enabled_users(p).await?;
        let changed: Vec<String> = users.iter().take(8).map(|u| u.id.clone()).collect();
        let mut titles = BTreeMap::new();
        for user in &changed {
            let title = unique("Dup");
            p.control
                .update_user(&tenant, user, json!({"jobTitle": title}))
                .await?;
            titles.insert(user.clone(), title);
        }
        p.wait_converged(SETTLE).await?;

        let deliveries = p.deliveries().await?;
        let duplicates = deliveries
            .iter()
            .filter(|d| !d["duplicateOf"].is_null())
            .count();
        ensure!(
            duplicates >= changed.len(),
            "graph-sim duplicated only {duplicates} notifications"
        );
        let accepted = p
            .metric(
                Service::Webhook,
                "cardsync_webhook_notifications_accepted_total",
                &[("tenant", tenant.as_str())],
            )
            .await?;
        ensure!(
            accepted >= (2 * changed.len()) as f64,
            "the webhook accepted {accepted} notifications for {} changes sent twice",
            changed.len()
        );

        let rows = audit_since(p, audit).await?;
        for user in &changed {
            let mine: Vec<&str> = rows
                .iter()
                .filter(|(u, _)| u == user)
                .map(|(_, a)| a.as_str())
                .collect();
            ensure!(mine == ["updated"], "audit rows of {user}: {mine:?}");
        }
        ensure!(
            rows.len() == changed.len(),
            "{} audit rows for {} changes: {rows:?}",
            rows.len(),
            changed.len()
        );
        let events = take_events(p).await?;
        for user in &changed {
            let updated = events
                .iter()
                .filter(|e| e.user_id == *user && e.kind() == Kind::Updated)
                .count();
            ensure!(updated == 1, "{updated} `updated` card events for {user}");
        }
        ensure!(
            events.len() == changed.len(),
            "{} card events for {} changes",
            events.len(),
            changed.len()
        );
        for (user, title) in &titles {
            let card = support::card_field(p, user, "job_title").await?;
            ensure!(
                card.as_ref().and_then(|c| c.1.as_ref()) == Some(title),
                "{user}'s card has {card:?}, the directory {title}"
            );
        }
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn the_safety_poll_brings_the_changes_whose_notifications_were_lost() {
    let mut setup = Setup::new("lost", 30);
    setup.safety_poll = ("2s", "1s");
    support::run(setup, async |p| {
        p.initial_sync(Duration::from_secs(90)).await?;
        let tenant = p.tenant_text();
        let tenant_label = [("tenant", tenant.as_str())];
        // Let a first safety poll pass (it checks photos), so that what it counts from here on
        // is the lost changes only.
        let polls = p
            .metric(
                Service::DeltaWorker,
                "cardsync_delta_rounds_total",
                &[("cause", "safety_poll"), ("outcome", "ok")],
            )
            .await?;
        eventually("a safety poll round after the initial sync", SETTLE, async || {
            let now = p
                .metric(
                    Service::DeltaWorker,
                    "cardsync_delta_rounds_total",
                    &[("cause", "safety_poll"), ("outcome", "ok")],
                )
                .await?;
            Ok((now > polls).then_some(()))
        })
        .await?;
        p.wait_drained(SETTLE).await?;
        let unannounced_before = p
            .metric(
                Service::DeltaWorker,
                "cardsync_delta_unannounced_changes_total",
                &tenant_label,
            )
            .await?;
        let accepted_before = p
            .metric(
                Service::Webhook,
                "cardsync_webhook_notifications_accepted_total",
                &tenant_label,
            )
            .await?;
        let delivered_before = p.deliveries().await?.len();

        p.control.set_delivery(json!({"lossProbability": 1.0})).await?;
        let users = support::enabled_users(p).await?;
        let mut changes = 0;
        for user in users.iter().take(5) {
            p.control
                .update_user(&tenant, &user.id, json!({"jobTitle": unique("Lost")}))
                .await?;
            changes += 1;
        }
        p.control
            .update_user(&tenant, &users[5].id, json!({"accountEnabled": false}))
            .await?;
        changes += 1;
        p.wait_converged(SETTLE).await?;

        let deliveries = p.deliveries().await?;
        let new: Vec<_> = deliveries.iter().skip(delivered_before).collect();
        ensure!(
            new.len() >= changes
                && new.iter().all(|d| d["outcome"].as_str() == Some("lost")),
            "not every notification after the switch was lost: {new:?}"
        );
        let accepted = p
            .metric(
                Service::Webhook,
                "cardsync_webhook_notifications_accepted_total",
                &tenant_label,
            )
            .await?;
        ensure!(
            accepted == accepted_before,
            "the webhook received notifications ({accepted_before} -> {accepted}) although all were lost"
        );
        let unannounced = p
            .metric(
                Service::DeltaWorker,
                "cardsync_delta_unannounced_changes_total",
                &tenant_label,
            )
            .await?;
        ensure!(
            unannounced - unannounced_before >= changes as f64,
            "the delta-worker counted {} unannounced changes for {changes} lost ones",
            unannounced - unannounced_before
        );
        Ok(())
    })
    .await;
}
