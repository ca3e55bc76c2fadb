//! Sync Now through the admin API, as an operator asks for it (`cardsync sync`): a reconcile run
//! the API records, the reconciler runs and the card-writer ends, with its counts.

use crate::support::{self, Setup};
use anyhow::{Context as _, ensure};
use cardsync_store::runs::RunStatus;
use std::time::Duration;

#[tokio::test]
async fn sync_now_is_a_reconcile_run_that_repairs_a_lost_card_and_ends_with_its_counts() {
    support::run(Setup::new("syncnow", 20), async |p| {
        p.initial_sync(Duration::from_secs(90)).await?;
        let users = support::enabled_users(p).await?;
        let lost = &users.first().context("a user")?.id;
        // The card is lost behind cardsync's back: no notification will bring it back.
        sqlx::query("DELETE FROM cards WHERE tenant_id = $1 AND user_id = $2")
            .bind(p.tenant)
            .bind(lost)
            .execute(&p.pool)
            .await?;

        let run =
            cardsync_demo::reconcile::reconcile(p, p.tenant, Duration::from_secs(120)).await?;
        ensure!(
            run.status == RunStatus::Succeeded,
            "the run ended {} ({:?})",
            run.status.as_str(),
            run.detail
        );
        ensure!(
            (run.kind.as_str(), run.cause.as_str()) == ("reconcile", "manual"),
            "a Sync Now is a manual reconcile run: {run:?}"
        );
        ensure!(run.started_by.starts_with("app:"), "{run:?}");
        ensure!(
            run.count("repaired") == 1 && run.count("created") == 1,
            "one card repaired, created again: {run:?}"
        );
        ensure!(
            run.count("commands") >= 1 && run.count("graph_pages") >= 1,
            "{run:?}"
        );
        ensure!(
            support::card_status(p, lost).await?.as_deref() == Some("active"),
            "the lost card is back"
        );
        // The run's digest, for a mailer: the person it added, by name.
        let name = support::card_field(p, lost, "name")
            .await?
            .and_then(|(_, name)| name);
        let run_id = run.run_id.to_string();
        let digest = support::eventually("the run's digest", Duration::from_secs(30), async || {
            let digests = support::take_digests(p).await?;
            Ok(digests.into_iter().find(|d| d.run_id == run_id))
        })
        .await?;
        ensure!(
            (
                digest.kind.as_str(),
                digest.status.as_str(),
                digest.added_total
            ) == ("reconcile", "succeeded", 1),
            "{digest:?}"
        );
        let added: Vec<(&str, &str)> = digest
            .added
            .iter()
            .map(|person| (person.user_id.as_str(), person.name.as_str()))
            .collect();
        ensure!(
            added == [(lost.as_str(), name.as_deref().unwrap_or(""))],
            "the digest names the person added: {digest:?}"
        );
        ensure!(
            !support::take_digests(p)
                .await?
                .iter()
                .any(|d| d.run_id == run_id),
            "one digest per run"
        );
        Ok(())
    })
    .await;
}
