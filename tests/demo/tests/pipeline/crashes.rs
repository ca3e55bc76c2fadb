//! Processes dying mid-work with SIGKILL: the card-writer in the middle of an initial sync's
//! batches, the delta-worker in the middle of a round. Restarted, the pipeline converges with no
//! duplicate card, no doubled card event and no lost change.

use crate::support::{self, Setup, eventually, unique};
use anyhow::ensure;
use cardsync_demo::{Pipeline, Service};
use cardsync_proto as proto;
use cardsync_proto::card_event::Kind;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(120);

/// Directory users the delta-worker has saved for the tenant.
async fn saved_users(p: &Pipeline) -> anyhow::Result<usize> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM directory_users WHERE tenant_id = $1")
        .bind(p.tenant)
        .fetch_one(&p.pool)
        .await?;
    Ok(usize::try_from(n).unwrap_or_default())
}

#[tokio::test]
async fn a_card_writer_killed_mid_batch_converges_with_each_card_created_once() {
    support::run(Setup::new("cwkill", 2000), async |p| {
        let expected = p.expected_active().await?;
        p.request_sync(proto::sync_request::Depth::Full).await?;
        // Some cards written, most not: kill it there.
        let threshold = (expected / 10).max(1);
        eventually("the first cards of the initial sync", SETTLE, async || {
            Ok((p.active_cards().await? >= threshold).then_some(()))
        })
        .await?;
        p.kill(Service::CardWriter)?;
        let at_kill = p.active_cards().await?;
        ensure!(
            at_kill < expected,
            "the initial sync finished ({at_kill} of {expected} cards) before the card-writer was killed"
        );
        println!("card-writer killed with {at_kill} of {expected} cards written");
        p.restart(Service::CardWriter).await?;
        let report = p.wait_converged(SETTLE).await?;
        ensure!(report.expected_active == expected, "{report:?}");

        let cards: Vec<(String, String)> = sqlx::query_as(
            "SELECT card_id::text, user_id FROM cards WHERE tenant_id = $1",
        )
        .bind(p.tenant)
        .fetch_all(&p.pool)
        .await?;
        ensure!(
            cards.len() == expected,
            "{} cards for {expected} enabled users",
            cards.len()
        );
        // The relay delivers at least once: killed between the broker's confirm and its commit,
        // it publishes the same event again, with the same envelope message id. So `created`
        // events count by distinct message id; two ids for one card is a doubled event.
        let mut created: HashMap<String, HashSet<String>> = HashMap::new();
        for event in support::take_events(p).await? {
            if event.kind() == Kind::Created {
                let id = event.envelope.as_ref().map(|e| e.message_id.clone());
                created
                    .entry(event.card_id.clone())
                    .or_default()
                    .insert(id.unwrap_or_default());
            }
        }
        let doubled: Vec<_> = created.iter().filter(|(_, ids)| ids.len() > 1).collect();
        ensure!(doubled.is_empty(), "cards with more than one `created` event: {doubled:?}");
        let missing: Vec<_> = cards
            .iter()
            .filter(|(card, _)| !created.contains_key(card))
            .take(5)
            .collect();
        ensure!(missing.is_empty(), "cards without a `created` event: {missing:?}");
        let audit_created: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND action = 'created'",
        )
        .bind(p.tenant)
        .fetch_one(&p.pool)
        .await?;
        ensure!(
            audit_created == expected as i64,
            "{audit_created} `created` audit rows for {expected} cards"
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn a_delta_worker_killed_mid_round_converges_without_losing_a_change() {
    support::run(Setup::new("dwkill", 600), async |p| {
        let tenant = p.tenant_text();
        // Small pages: the initial round takes many requests, and a slow Graph makes each last.
        p.control
            .set_delta(&tenant, json!({"defaultPageSize": 10}))
            .await?;
        p.control
            .set_faults(json!([{"endpoint": "users.delta", "kind": "slow", "delayMs": 50}]))
            .await?;
        let users = support::enabled_users(p).await?;
        // Nothing ran before this request (the safety poll's first sweep waits a tick), so the
        // round below is the only one, with the small slow pages set above.
        let before = saved_users(p).await?;
        ensure!(before == 0, "{before} users saved before the first round was requested");
        p.request_sync(proto::sync_request::Depth::Full).await?;
        eventually("the initial round under way", SETTLE, async || {
            Ok((saved_users(p).await? >= 100).then_some(()))
        })
        .await?;
        p.kill(Service::DeltaWorker)?;
        let at_kill = saved_users(p).await?;
        ensure!(
            at_kill < users.len(),
            "the round finished ({at_kill} users saved) before the delta-worker was killed"
        );
        println!("delta-worker killed with {at_kill} of {} users saved", users.len());

        // Changes while it is dead: the webhook queues their notifications.
        let mut titles = Vec::new();
        for user in users.iter().step_by(97).take(5) {
            let title = unique("Survivor");
            p.control
                .update_user(&tenant, &user.id, json!({"jobTitle": title}))
                .await?;
            titles.push((user.id.clone(), title));
        }
        p.control
            .update_user(&tenant, &users[1].id, json!({"accountEnabled": false}))
            .await?;
        p.control.set_faults(json!([])).await?;
        p.restart(Service::DeltaWorker).await?;
        p.wait_converged(SETTLE).await?;

        for (user, title) in &titles {
            let card = support::card_field(p, user, "job_title").await?;
            ensure!(
                card == Some(("active".into(), Some(title.clone()))),
                "{user}'s card is {card:?}, the directory says {title}"
            );
        }
        // Deactivated, or never made: the killed round's commands are sent only once its plan is
        // settled (the safety rail), so a user disabled before any of them went out gets no card.
        let status = support::card_status(p, &users[1].id).await?;
        ensure!(
            matches!(status.as_deref(), None | Some("deactivated")),
            "the user disabled while the delta-worker was down still has an active card"
        );
        let doubled: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT user_id FROM audit_log a JOIN cards c USING (tenant_id, card_id)
               WHERE a.tenant_id = $1 AND a.action = 'created' GROUP BY user_id HAVING count(*) > 1) d",
        )
        .bind(p.tenant)
        .fetch_one(&p.pool)
        .await?;
        ensure!(doubled == 0, "{doubled} users got more than one card created");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn services_killed_from_a_shell_are_restarted_by_the_harness_and_no_change_is_lost() {
    support::run(Setup::new("shellkill", 200), async |p| {
        p.initial_sync(SETTLE).await?;
        let tenant = p.tenant_text();
        let users = support::enabled_users(p).await?;
        ensure!(users.len() >= 20, "only {} enabled users", users.len());
        // As a user would, from a shell: `kill -9 <pid>`, with no help from the harness.
        for (i, service) in [Service::CardWriter, Service::DeltaWorker, Service::Webhook]
            .into_iter()
            .enumerate()
        {
            for user in users.iter().skip(i * 5).take(5) {
                p.control
                    .update_user(&tenant, &user.id, json!({"jobTitle": unique("Killed")}))
                    .await?;
            }
            let pid = p
                .pid(service)
                .ok_or_else(|| anyhow::anyhow!("{} is not running", service.name()))?;
            let killed = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()?;
            ensure!(killed.success(), "kill -9 {pid} failed");
            eventually(
                &format!("the harness restarts the {}", service.name()),
                SETTLE,
                async || {
                    Ok(p.supervise()?
                        .contains(&service.name().to_owned())
                        .then_some(()))
                },
            )
            .await?;
        }
        let report = p.wait_converged(SETTLE).await?;
        ensure!(
            report.divergent == 0 && report.duplicates == 0,
            "{report:?}"
        );
        let restarts = p.restarts();
        for service in [Service::CardWriter, Service::DeltaWorker, Service::Webhook] {
            ensure!(
                restarts.get(service.name()) == Some(&1),
                "{} restarted {:?} times",
                service.name(),
                restarts.get(service.name())
            );
        }
        Ok(())
    })
    .await;
}
