//! Every kind of directory change, announced by Graph's notifications through the real webhook,
//! reaches the cards.

use crate::support::{self, Setup, audit_mark, audit_since, card_field, card_status, unique};
use anyhow::{Context as _, ensure};
use cardsync_demo::Service;
use serde_json::json;
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn every_kind_of_change_converges_through_the_webhook() {
    support::run(Setup::new("kinds", 30), async |p| {
        p.initial_sync(Duration::from_secs(90)).await?;
        let tenant = p.tenant_text();
        let tenant_label = [("tenant", tenant.as_str())];
        let safety_polls = p
            .metric(
                Service::DeltaWorker,
                "cardsync_delta_rounds_total",
                &[("cause", "safety_poll")],
            )
            .await?;
        let mark = audit_mark(p).await?;
        let users = support::enabled_users(p).await?;
        ensure!(users.len() >= 8, "the seed gave only {} enabled users", users.len());
        let domain = support::domain(&users);
        let [titled, phoned, mailed, disabled, soft, restored, purged] =
            std::array::from_fn(|i| users[i].id.clone());

        let title = unique("Title");
        let phone = "+1 206 555 0142".to_owned();
        let mail = format!("{}@{domain}", unique("pipe").replace(' ', "."));
        let created = p
            .control
            .create_user(
                &tenant,
                json!({
                    "displayName": "Pipeline Newcomer",
                    "userPrincipalName": format!("newcomer.{}@{domain}", p.config.run_id),
                    "mail": format!("newcomer.{}@{domain}", p.config.run_id),
                    "jobTitle": "Apprentice",
                    "accountEnabled": true,
                }),
            )
            .await?;
        let newcomer = created["user"]["id"]
            .as_str()
            .or(created["id"].as_str())
            .with_context(|| format!("graph-sim created a user without an id: {created}"))?
            .to_owned();
        p.control
            .update_user(&tenant, &titled, json!({"jobTitle": title}))
            .await?;
        p.control
            .update_user(&tenant, &phoned, json!({"mobilePhone": phone}))
            .await?;
        p.control
            .update_user(&tenant, &mailed, json!({"mail": mail}))
            .await?;
        p.control
            .update_user(&tenant, &disabled, json!({"accountEnabled": false}))
            .await?;
        p.control.delete_user(&tenant, &soft, false).await?;
        p.control.delete_user(&tenant, &restored, false).await?;
        p.control.delete_user(&tenant, &purged, true).await?;
        p.wait_converged(SETTLE).await?;
        ensure!(
            card_status(p, &restored).await?.as_deref() != Some("active"),
            "the soft-deleted user's card is still active before the restore"
        );

        p.control.restore_user(&tenant, &restored).await?;
        let report = p.wait_converged(SETTLE).await?;

        ensure!(
            card_field(p, &newcomer, "name").await?
                == Some(("active".into(), Some("Pipeline Newcomer".into()))),
            "the created user has no active card with its name"
        );
        ensure!(
            card_field(p, &titled, "job_title").await?.and_then(|c| c.1) == Some(title.clone()),
            "the new title is not on the card"
        );
        ensure!(
            card_field(p, &phoned, "phone").await?.and_then(|c| c.1) == Some(phone.clone()),
            "the new phone is not on the card"
        );
        ensure!(
            card_field(p, &mailed, "email").await?.and_then(|c| c.1) == Some(mail.clone()),
            "the new email is not on the card"
        );
        for (user, what) in [
            (&disabled, "disabled"),
            (&soft, "soft-deleted"),
            (&purged, "permanently deleted"),
        ] {
            let status = card_status(p, user).await?;
            ensure!(
                matches!(status.as_deref(), Some("deactivated" | "deleted")),
                "the {what} user's card is {status:?}"
            );
        }
        ensure!(
            card_status(p, &restored).await?.as_deref() == Some("active"),
            "the restored user's card is not active again"
        );
        ensure!(
            // One created; one disabled, one soft-deleted and one purged; one restored.
            report.expected_active == users.len() - 2,
            "expected {} active cards, the directory says {}",
            users.len() - 2,
            report.expected_active
        );

        // One audit row per visible change: nothing applied twice.
        let rows = audit_since(p, mark).await?;
        for (user, action) in [
            (&newcomer, "created"),
            (&titled, "updated"),
            (&phoned, "updated"),
            (&mailed, "updated"),
            (&disabled, "deactivated"),
        ] {
            let mine: Vec<&str> = rows
                .iter()
                .filter(|(u, _)| u == user)
                .map(|(_, a)| a.as_str())
                .collect();
            ensure!(mine == [action], "audit rows of {user}: {mine:?}, expected [{action}]");
        }
        let untouched = rows
            .iter()
            .filter(|(u, _)| {
                ![&newcomer, &titled, &phoned, &mailed, &disabled, &soft, &restored, &purged]
                    .contains(&u)
            })
            .count();
        ensure!(untouched == 0, "{untouched} audit rows for users nobody changed");

        // The path was the webhook: notifications accepted and rounds they triggered, no
        // safety poll in between.
        let accepted = p
            .metric(
                Service::Webhook,
                "cardsync_webhook_notifications_accepted_total",
                &tenant_label,
            )
            .await?;
        ensure!(accepted >= 8.0, "the webhook accepted only {accepted} notifications");
        let notified = p
            .metric(
                Service::DeltaWorker,
                "cardsync_delta_rounds_total",
                &[("cause", "notification"), ("outcome", "ok")],
            )
            .await?;
        ensure!(notified >= 1.0, "no delta round was triggered by a notification");
        let polls_after = p
            .metric(
                Service::DeltaWorker,
                "cardsync_delta_rounds_total",
                &[("cause", "safety_poll")],
            )
            .await?;
        ensure!(
            polls_after == safety_polls,
            "a safety poll ran ({safety_polls} -> {polls_after}): the changes may not have come through the webhook"
        );
        Ok(())
    })
    .await;
}
