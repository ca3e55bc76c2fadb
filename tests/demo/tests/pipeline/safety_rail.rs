//! The mass-change safety rail (issue 17 §4) through the whole pipeline and the operator's CLI:
//! a scope group deleted by mistake in the directory holds the live round that would deactivate
//! its members (no card changes while held) until an admin approves it, which applies exactly
//! the kept commands; a reconcile held after the scope was narrowed is rejected, the cards stay,
//! the tenant stays paused, and a change made meanwhile is applied once the tenant is resumed,
//! without the rejected mass change coming back. A change under the threshold is never held.

use crate::support::{self, Setup};
use anyhow::{Context as _, ensure};
use cardsync_demo::{Pipeline, Service};
use cardsync_store::runs::{self, Run, RunStatus};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

const SETTLE: Duration = Duration::from_secs(90);

/// Every card of the tenant by user: status and applied version.
async fn cards(p: &Pipeline) -> anyhow::Result<BTreeMap<String, (String, i64)>> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT user_id, status, applied_version FROM cards
          WHERE tenant_id = $1 AND user_id IS NOT NULL",
    )
    .bind(p.tenant)
    .fetch_all(&p.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(user, status, version)| (user, (status, version)))
        .collect())
}

/// Cards by user with their status only.
async fn statuses(p: &Pipeline) -> anyhow::Result<BTreeMap<String, String>> {
    Ok(cards(p)
        .await?
        .into_iter()
        .map(|(user, (status, _))| (user, status))
        .collect())
}

/// The CLI's JSON answer.
fn cli(p: &Pipeline, args: &[&str]) -> anyhow::Result<Value> {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    let text = p.cardsync(&args)?;
    serde_json::from_str(&text).with_context(|| format!("cardsync {args:?} printed {text}"))
}

/// Waits for the tenant's one held run.
async fn held_run(p: &Pipeline) -> anyhow::Result<Run> {
    support::eventually("a run is held", SETTLE, async || {
        let held =
            runs::list_with_status(&p.pool, p.tenant, Some(RunStatus::Held), None, 5).await?;
        ensure!(held.len() <= 1, "more than one held run: {held:?}");
        Ok(held.into_iter().next())
    })
    .await
}

/// Waits until the delta-worker's rail gauges for the tenant read `held` and `paused`.
async fn gauges(p: &Pipeline, held: f64, paused: f64) -> anyhow::Result<()> {
    let tenant = p.tenant_text();
    support::eventually("the rail gauges follow", SETTLE, async || {
        let labels = [("tenant", tenant.as_str())];
        let now = (
            p.metric(Service::DeltaWorker, "cardsync_delta_held_runs", &labels)
                .await?,
            p.metric(
                Service::DeltaWorker,
                "cardsync_delta_tenant_paused",
                &labels,
            )
            .await?,
        );
        Ok((now == (held, paused)).then_some(()))
    })
    .await
}

/// Whether `user`'s card shows `title`.
async fn has_title(p: &Pipeline, user: &str, title: &str) -> anyhow::Result<bool> {
    Ok(support::card_field(p, user, "job_title")
        .await?
        .is_some_and(|(_, value)| value.as_deref() == Some(title)))
}

/// A group of graph-sim holding `members`; returns its id.
async fn group_of(p: &Pipeline, name: &str, members: &[&str]) -> anyhow::Result<String> {
    let tenant = p.tenant_text();
    let created = p
        .control
        .create_group(
            &tenant,
            json!({"displayName": name, "mailNickname": name.to_lowercase(), "securityEnabled": true}),
        )
        .await?;
    let group = created["id"].as_str().context("no group id")?.to_owned();
    for member in members {
        p.control.add_member(&tenant, &group, member).await?;
    }
    Ok(group)
}

#[tokio::test]
async fn a_scope_group_deleted_by_mistake_holds_the_live_round_until_approved_and_then_exactly_its_plan_applies()
 {
    support::run(Setup::new("rail-approve", 30), async |p| {
        p.initial_sync(SETTLE).await?;
        let tenant = p.tenant_text();
        // Scoping the tenant to the group touches every card's teams: let updates through.
        let rail = cli(
            p,
            &[
                "tenant",
                "safety",
                &tenant,
                "--update-percent",
                "100",
                "--minimum",
                "5",
            ],
        )?;
        ensure!(
            rail["removal_percent"] == 10.0 && rail["minimum"] == 5,
            "{rail}"
        );
        let users = support::enabled_users(p).await?;
        let ids: Vec<&str> = users.iter().map(|user| user.id.as_str()).collect();
        let group = group_of(p, "Everyone Sales", &ids).await?;
        cli(p, &["scope", "set", "--tenant", &tenant, "--group", &group])?;
        // Group changes reach the delta-worker once the groups subscription exists (the
        // subscription manager makes it for a group-scoped tenant, a moment after the scope).
        support::eventually("the groups subscription is active", SETTLE, async || {
            let active: Option<Option<Uuid>> = sqlx::query_scalar(
                "SELECT subscription_id FROM subscription_slots
                  WHERE tenant_id = $1 AND resource = '/groups' AND state = 'active'",
            )
            .bind(p.tenant)
            .fetch_optional(&p.pool)
            .await?;
            Ok(active.flatten())
        })
        .await?;
        let scoped = cardsync_demo::reconcile::reconcile(p, p.tenant, SETTLE).await?;
        ensure!(scoped.status == RunStatus::Succeeded, "scoping: {scoped:?}");

        // Under the threshold: two people leave; nothing is held.
        for user in &users[..2] {
            p.control.remove_member(&tenant, &group, &user.id).await?;
        }
        for user in &users[..2] {
            support::eventually("a leaver's card is deactivated", SETTLE, async || {
                Ok(support::card_status(p, &user.id)
                    .await?
                    .filter(|s| s == "deactivated"))
            })
            .await?;
        }
        ensure!(
            runs::list_with_status(&p.pool, p.tenant, Some(RunStatus::Held), None, 5)
                .await?
                .is_empty(),
            "two leavers of 30 were held"
        );

        // The scope group is deleted by mistake: every remaining member would lose their card.
        let before = cards(p).await?;
        p.control
            .call(
                reqwest::Method::DELETE,
                &format!("/tenants/{tenant}/groups/{group}?permanent=false"),
                None,
            )
            .await?;
        let run = held_run(p).await?;
        ensure!(run.kind == "live", "a live round was held: {run:?}");
        let members = users.len() - 2;
        let detail = run.detail.clone().unwrap_or_default();
        ensure!(
            detail.contains(&format!(
                "would deactivate or delete {members} of {members} active cards"
            )) && detail.contains("Everyone Sales")
                && detail.contains("no longer found"),
            "the reason says what and why: {detail}"
        );
        let plan = cli(
            p,
            &["runs", "plan", &run.run_id.to_string(), "--limit", "5"],
        )?;
        ensure!(plan["commands"] == members, "{plan}");
        ensure!(plan["sample"].as_array().map(Vec::len) == Some(5), "{plan}");
        ensure!(
            plan["summary"]["outcomes"]["deactivated"] == members,
            "{plan}"
        );
        ensure!(
            plan["summary"]["causes"]["left the scope"] == members,
            "{plan}"
        );
        ensure!(
            plan["summary"]["samples"]
                .as_array()
                .is_some_and(|s| !s.is_empty()),
            "{plan}"
        );
        let paused = cli(p, &["tenant", "safety", &tenant])?;
        ensure!(
            paused["paused"] == true && paused["held_runs"] == json!([run.run_id]),
            "{paused}"
        );
        let listed = cli(p, &["runs", "--tenant", &tenant, "--held"])?;
        ensure!(
            listed["items"].as_array().map(Vec::len) == Some(1),
            "{listed}"
        );

        // Held: nothing reached the cards.
        p.wait_drained(SETTLE).await?;
        ensure!(
            cards(p).await? == before,
            "a card changed while the run was held"
        );

        let kept: Vec<(String, i64, String)> = sqlx::query_as(
            "SELECT user_id, version, action FROM held_commands WHERE run_id = $1 ORDER BY seq",
        )
        .bind(run.run_id)
        .fetch_all(&p.pool)
        .await?;
        ensure!(kept.len() == members, "{} commands kept", kept.len());
        let approved = cli(p, &["runs", "approve", &run.run_id.to_string()])?;
        ensure!(
            approved["status"] == "running" || approved["status"] == "succeeded",
            "{approved}"
        );
        let ended = support::eventually("the approved run ends", SETTLE, async || {
            let run = runs::get(&p.pool, run.run_id)
                .await?
                .context("run vanished")?;
            Ok(run.status.is_final().then_some(run))
        })
        .await?;
        ensure!(ended.status == RunStatus::Succeeded, "{ended:?}");
        let planned = i64::try_from(members)?;
        let count = |name: &str| ended.counts.get(name).copied().unwrap_or_default();
        ensure!(
            count("deactivated") == planned && count("commands") == planned,
            "{ended:?}"
        );

        // Exactly the plan: each kept command's card is deactivated at the kept version; every
        // other card is as it was.
        let after = cards(p).await?;
        for (user, version, action) in &kept {
            ensure!(
                action == "upsert" || action == "deactivate" || action == "delete",
                "{action}"
            );
            let card = after.get(user).context("a planned card vanished")?;
            ensure!(
                card == &("deactivated".to_owned(), *version),
                "{user}: {card:?} after {action} v{version}"
            );
        }
        for (user, card) in &after {
            if !kept.iter().any(|(planned, _, _)| planned == user) {
                ensure!(
                    before.get(user) == Some(card),
                    "{user} changed outside the plan"
                );
            }
        }
        let resumed = cli(p, &["tenant", "safety", &tenant])?;
        ensure!(
            resumed["paused"] == false && resumed["held_runs"] == json!([]),
            "{resumed}"
        );
        let again = cli(p, &["runs", "approve", &run.run_id.to_string()]);
        ensure!(
            again.is_err(),
            "approving a run that is no longer held is refused"
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn a_rejected_reconcile_keeps_the_cards_and_a_change_made_while_paused_is_applied_after_resume()
 {
    // The delta-worker refreshes the rail's gauges on its safety-poll tick: a short one here.
    let setup = Setup {
        safety_poll: ("10m", "1s"),
        ..Setup::new("rail-reject", 30)
    };
    support::run(setup, async |p| {
        p.initial_sync(SETTLE).await?;
        let tenant = p.tenant_text();
        cli(p, &["tenant", "safety", &tenant, "--minimum", "5"])?;
        let users = support::enabled_users(p).await?;
        let kept_in: Vec<&str> = users[..3].iter().map(|user| user.id.as_str()).collect();
        // The scope narrowed by mistake to a group of three: the reconcile would deactivate
        // everyone else.
        let group = group_of(p, "Board", &kept_in).await?;
        cli(p, &["scope", "set", "--tenant", &tenant, "--group", &group])?;
        let before = statuses(p).await?;
        let run_id = p.sync_now(p.tenant)?;
        let run = held_run(p).await?;
        ensure!(run.run_id == run_id && run.kind == "reconcile", "{run:?}");
        ensure!(
            run.detail.as_deref().is_some_and(|d| d.contains("left the scope")),
            "{run:?}"
        );
        p.wait_drained(SETTLE).await?;
        ensure!(statuses(p).await? == before, "a card changed while held");
        gauges(p, 1.0, 1.0).await?;

        // A directory change while paused waits: the round that noticed it leaves a mark.
        let title = support::unique("Chair");
        p.control
            .update_user(&tenant, &users[0].id, json!({"jobTitle": title}))
            .await?;
        support::eventually("the paused tenant owes a round", SETTLE, async || {
            let rail = cli(p, &["tenant", "safety", &tenant])?;
            Ok((rail["round_pending"] == true).then_some(()))
        })
        .await?;
        ensure!(!has_title(p, &users[0].id, &title).await?, "the change went through a paused tenant");

        let rejected = cli(p, &["runs", "reject", &run.run_id.to_string(), "--reason", "wrong group"])?;
        ensure!(rejected["status"] == "rejected", "{rejected}");
        ensure!(
            rejected["detail"].as_str().is_some_and(|d| d.contains("wrong group")),
            "{rejected}"
        );
        let rail = cli(p, &["tenant", "safety", &tenant])?;
        ensure!(rail["paused"] == true && rail["held_runs"] == json!([]), "{rail}");
        ensure!(statuses(p).await? == before, "a rejection changed a card");
        gauges(p, 0.0, 1.0).await?;

        let resumed = cli(p, &["tenant", "resume", &tenant])?;
        ensure!(resumed["paused"] == false && resumed["round_pending"] == false, "{resumed}");
        support::eventually("the change made while paused is applied", SETTLE, async || {
            Ok(has_title(p, &users[0].id, &title).await?.then_some(()))
        })
        .await?;
        p.wait_drained(SETTLE).await?;
        gauges(p, 0.0, 0.0).await?;
        // The rejected mass change did not come back with the live round.
        let now = statuses(p).await?;
        ensure!(now == before, "cards changed after the resume: {now:?} vs {before:?}");
        ensure!(
            runs::list_with_status(&p.pool, p.tenant, Some(RunStatus::Held), None, 5).await?.is_empty(),
            "the resume's round was held"
        );
        let audit: Vec<String> = sqlx::query_scalar(
            "SELECT action FROM admin_audit WHERE tenant_id = $1 AND action IN ('run.reject', 'tenant.resume', 'safety.update') ORDER BY action",
        )
        .bind(p.tenant)
        .fetch_all(&p.pool)
        .await?;
        ensure!(audit == ["run.reject", "safety.update", "tenant.resume"], "{audit:?}");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn a_rules_apply_that_rewrites_most_job_titles_is_held_naming_the_field() {
    support::run(Setup::new("rail-rules", 30), async |p| {
        p.initial_sync(SETTLE).await?;
        let tenant = p.tenant_text();
        let before = cards(p).await?;
        // A slip: the job title mapped from the department.
        let shown = cli(p, &["rules", "show", "--tenant", &tenant])?;
        let mut rules = shown["rules"].clone();
        rules["fields"]["job_title"]["source"] = json!("department");
        let file = p.config.logs.join("rules-slip.json");
        std::fs::write(&file, serde_json::to_vec(&rules)?)?;
        let saved = cli(
            p,
            &[
                "rules",
                "put",
                "--tenant",
                &tenant,
                &file.display().to_string(),
            ],
        )?;
        let apply: uuid::Uuid = saved["apply"]["run_id"]
            .as_str()
            .context("no apply run")?
            .parse()?;
        let run = held_run(p).await?;
        ensure!(run.run_id == apply && run.kind == "rules_apply", "{run:?}");
        let detail = run.detail.clone().unwrap_or_default();
        ensure!(
            detail.contains("would update")
                && detail.contains("updated fields: job_title")
                && detail.contains("rules apply"),
            "{detail}"
        );
        let plan = cli(p, &["runs", "plan", &run.run_id.to_string()])?;
        let updated = plan["summary"]["outcomes"]["updated"]
            .as_u64()
            .unwrap_or_default();
        ensure!(
            plan["summary"]["fields"]["job_title"].as_u64() == Some(updated) && updated >= 10,
            "{plan}"
        );
        p.wait_drained(SETTLE).await?;
        ensure!(
            cards(p).await? == before,
            "a card changed while the apply was held"
        );
        Ok(())
    })
    .await;
}
