//! A changed photo lands as image bytes (issue 17 §5): graph-sim's photo changes and nothing
//! announces it; the tenant's photo check (its own cadence) finds the new version, the
//! delta-worker downloads the 240x240 rendition and stores it before the card command, the card
//! names the image's SHA-256, and the admin API serves exactly the bytes graph-sim served.

use crate::support::{self, Setup};
use anyhow::{Context as _, ensure};
use cardsync_demo::photos::sha256_hex;
use std::time::Duration;
use uuid::Uuid;

/// The card of `user`: its id and the image it names.
async fn card_of(
    p: &cardsync_demo::Pipeline,
    user: &str,
) -> anyhow::Result<Option<(Uuid, Option<String>)>> {
    Ok(sqlx::query_as(
        "SELECT card_id, photo_sha256 FROM cards WHERE tenant_id = $1 AND user_id = $2",
    )
    .bind(p.tenant)
    .bind(user)
    .fetch_optional(&p.pool)
    .await?)
}

#[tokio::test]
async fn a_changed_photo_lands_as_the_image_graph_serves_and_the_admin_api_serves_it() {
    let mut setup = Setup::new("photos", 10);
    // No idle-tenant poll during the test; the photo check is due every 2 s, and the poll's
    // sweep (every second) starts a round for it.
    setup.safety_poll = ("10m", "1s");
    setup.env = vec![
        ("CARDSYNC__WORKER__PHOTO_CHECK_INTERVAL", "2s".to_owned()),
        ("CARDSYNC__WORKER__PHOTO_RECHECK_AFTER", "0s".to_owned()),
    ];
    support::run(setup, async |p| {
        p.initial_sync(Duration::from_secs(90)).await?;
        let users = support::enabled_users(p).await?;
        let user = &users.first().context("a user")?.id;
        let (card, before) = card_of(p, user).await?.context("the user's card")?;

        p.control
            .set_photo(
                &p.tenant_text(),
                user,
                b"\xff\xd8\xff\xe0 a new portrait".to_vec(),
                "image/jpeg",
            )
            .await?;
        let sha256 = support::eventually(
            "the card names a new image",
            Duration::from_secs(60),
            async || {
                Ok(match card_of(p, user).await? {
                    Some((_, Some(sha256))) if Some(&sha256) != before.as_ref() => Some(sha256),
                    _ => None,
                })
            },
        )
        .await?;

        let from_graph = p.graph_photo(user, 240).await?;
        ensure!(
            sha256 == sha256_hex(&from_graph),
            "the card names {sha256}, graph-sim serves {}",
            sha256_hex(&from_graph)
        );
        let served = p.card_photo(p.tenant, card).await?;
        ensure!(served.status == 200, "the admin API answered {served:?}");
        ensure!(
            served.bytes == from_graph,
            "the admin API serves other bytes"
        );
        ensure!(
            served.content_type == "image/png",
            "graph-sim's rendition is a PNG: {}",
            served.content_type
        );
        ensure!(served.etag == format!("\"{sha256}\""), "{served:?}");
        // The cards still agree with the directory, photo versions and images included.
        let report = p.compare().await?;
        ensure!(report.divergent == 0, "{:?}", report.examples);
        Ok(())
    })
    .await;
}
