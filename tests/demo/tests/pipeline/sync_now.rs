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
        Ok(())
    })
    .await;
}
