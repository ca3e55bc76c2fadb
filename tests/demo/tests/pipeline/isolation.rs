//! Tenant isolation end to end (issue 19 §4): two tenants on one pipeline, seeded alike so they
//! share every object id and email address. One tenant's delete policy (with a deleted user),
//! Sync Now and scope change each leave the other tenant's cards exactly as they were, row for
//! row. A notification crossing two tenants' subscriptions and ids is refused by the webhook
//! (services/webhook/tests/api/notifications.rs,
//! `a_tenants_subscription_with_another_registered_tenants_id_never_publishes`). Last, the
//! first tenant is offboarded: the second keeps every card and still syncs a change.

use crate::support::{self, Setup};
use anyhow::{Context as _, ensure};
use cardsync_demo::Pipeline;
use cardsync_demo::tenants::NewTenant;
use cardsync_store::runs::RunStatus;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

const SETTLE: Duration = Duration::from_secs(120);

/// Every card row of `tenant`, all columns, by card id.
async fn rows(p: &Pipeline, tenant: Uuid) -> anyhow::Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT row_to_json(c)::text FROM cards c WHERE tenant_id = $1 ORDER BY card_id",
    )
    .bind(tenant)
    .fetch_all(&p.pool)
    .await?)
}

/// `(user id, status)` of every card of `tenant` that has a user, by user id.
async fn statuses(p: &Pipeline, tenant: Uuid) -> anyhow::Result<Vec<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT user_id, status FROM cards WHERE tenant_id = $1 AND user_id IS NOT NULL
          ORDER BY user_id",
    )
    .bind(tenant)
    .fetch_all(&p.pool)
    .await?)
}

/// Fails unless `tenant`'s cards are row for row what they were.
async fn untouched(
    p: &Pipeline,
    tenant: Uuid,
    before: &[String],
    what: &str,
) -> anyhow::Result<()> {
    let after = rows(p, tenant).await?;
    ensure!(
        after == before,
        "{what} changed the other tenant's cards: {} rows before, {} after; first difference: {:?}",
        before.len(),
        after.len(),
        before.iter().zip(&after).find(|(b, a)| b != a)
    );
    Ok(())
}

async fn sync_now(
    p: &Pipeline,
    tenant: Uuid,
) -> anyhow::Result<cardsync_demo::reconcile::Reconciled> {
    let run = cardsync_demo::reconcile::reconcile(p, tenant, SETTLE).await?;
    ensure!(
        run.status == RunStatus::Succeeded,
        "Sync Now of {tenant} ended {} ({:?})",
        run.status.as_str(),
        run.detail
    );
    Ok(run)
}

#[tokio::test]
async fn one_tenants_delete_policy_sync_now_and_scope_change_leave_the_others_cards_untouched() {
    support::run(Setup::new("isolation", 12), async |p| {
        p.initial_sync(SETTLE).await?;
        let first = p.tenant;
        let second = p
            .add_tenant(&NewTenant {
                users: 12,
                seed: p.config.seed,
                scope_groups: Vec::new(),
            })
            .await?;
        let snapshot = p.control.snapshot(&second.to_string()).await?;
        let expected = cardsync_demo::check::compare(&p.pool, second, &snapshot)
            .await?
            .expected_active;
        p.request_sync_for(second, cardsync_proto::sync_request::Depth::Full)
            .await?;
        support::eventually("the second tenant's initial sync", SETTLE, async || {
            Ok((p.active_cards_of(second).await? >= expected).then_some(()))
        })
        .await?;
        p.wait_drained(SETTLE).await?;
        let (first_cards, second_cards) = (statuses(p, first).await?, statuses(p, second).await?);
        ensure!(
            !first_cards.is_empty() && first_cards == second_cards,
            "the tenants share every object id: {first_cards:?} / {second_cards:?}"
        );

        // 1. The first tenant deletes cards of removed users; one of its users is deleted.
        let before = rows(p, second).await?;
        let file = p.config.logs.join("rules-delete.json");
        let shown: Value = serde_json::from_str(&p.cardsync(&[
            "rules",
            "show",
            "--tenant",
            &first.to_string(),
            "-o",
            "json",
        ])?)?;
        let mut rules = shown["rules"].clone();
        rules["removal"] = json!("delete");
        std::fs::write(&file, serde_json::to_vec(&rules)?)?;
        let saved: Value = serde_json::from_str(&p.cardsync(&[
            "rules",
            "put",
            "--tenant",
            &first.to_string(),
            &file.display().to_string(),
            "-o",
            "json",
        ])?)?;
        ensure!(
            saved["apply"]["run_id"].is_string(),
            "the save answered {saved}"
        );
        let victim = support::enabled_users(p).await?.remove(0).id;
        p.control
            .delete_user(&first.to_string(), &victim, false)
            .await?;
        support::eventually("the deleted user's card is deleted", SETTLE, async || {
            let status: Option<String> = sqlx::query_scalar(
                "SELECT status FROM cards WHERE tenant_id = $1 AND user_id = $2",
            )
            .bind(first)
            .bind(&victim)
            .fetch_optional(&p.pool)
            .await?;
            Ok((status.as_deref() == Some("deleted")).then_some(()))
        })
        .await?;
        p.wait_drained(SETTLE).await?;
        untouched(
            p,
            second,
            &before,
            "the first tenant's delete policy and deletion",
        )
        .await?;

        // 2. Sync Now of the second tenant.
        let before = rows(p, first).await?;
        sync_now(p, second).await?;
        p.wait_drained(SETTLE).await?;
        untouched(p, first, &before, "the second tenant's Sync Now").await?;

        // 3. The first tenant narrows its scope to one group and syncs.
        let before = rows(p, second).await?;
        let snapshot = p.control.snapshot(&first.to_string()).await?;
        let group = snapshot["directory"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|g| g["displayName"] == "Dept Sales")
            .and_then(|g| g["id"].as_str())
            .context("the seeded directory has a Dept Sales group")?
            .to_owned();
        p.cardsync(&[
            "scope",
            "set",
            "--tenant",
            &first.to_string(),
            "--group",
            &group,
        ])?;
        sync_now(p, first).await?;
        p.wait_drained(SETTLE).await?;
        let members = cardsync_demo::check::members_of(&snapshot, std::slice::from_ref(&group));
        let first_after = statuses(p, first).await?;
        ensure!(
            first_after
                .iter()
                .any(|(user, status)| !members.contains(user) && status == "deleted")
                && first_after
                    .iter()
                    .any(|(user, status)| members.contains(user) && status == "active"),
            "the scope change took effect in the first tenant: {first_after:?}"
        );
        untouched(p, second, &before, "the first tenant's scope change").await?;

        // 4. The first tenant is offboarded; the second keeps its cards and keeps syncing.
        let before = rows(p, second).await?;
        let first_text = first.to_string();
        p.cardsync(&["tenant", "offboard", &first_text, "--confirm", &first_text])?;
        support::eventually(
            "the first tenant's connection is gone",
            SETTLE,
            async || {
                let left: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM tenant_connections WHERE tenant_id = $1",
                )
                .bind(first)
                .fetch_one(&p.pool)
                .await?;
                Ok((left == 0).then_some(()))
            },
        )
        .await?;
        ensure!(
            rows(p, first).await?.is_empty(),
            "the offboarded tenant has no card left"
        );
        untouched(p, second, &before, "the first tenant's offboarding").await?;
        // The tenants were seeded alike: an enabled user of the first is one of the second.
        let user = support::enabled_users(p)
            .await?
            .into_iter()
            .map(|user| user.id)
            .find(|user| *user != victim)
            .context("an enabled user")?;
        let title = support::unique("After offboarding");
        p.control
            .update_user(&second.to_string(), &user, json!({"jobTitle": title}))
            .await?;
        support::eventually("the second tenant's change lands", SETTLE, async || {
            let field: Option<Option<String>> = sqlx::query_scalar(
                "SELECT fields->'job_title'->>'value' FROM cards
                  WHERE tenant_id = $1 AND user_id = $2",
            )
            .bind(second)
            .bind(&user)
            .fetch_optional(&p.pool)
            .await?;
            Ok((field.flatten().as_deref() == Some(title.as_str())).then_some(()))
        })
        .await?;
        Ok(())
    })
    .await;
}
