//! Teams follow groups (issue 17 §6) through the whole pipeline: renaming the scope group in the
//! directory renames the team on every member's card within seconds, with no member change and
//! no card command, and the group's description is kept with the team (the admin API's card
//! view shows both).

use crate::support::{self, Setup};
use anyhow::{Context as _, ensure};
use cardsync_demo::Pipeline;
use cardsync_store::runs::RunStatus;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

const SETTLE: Duration = Duration::from_secs(90);
/// A rename is one notification and one light round: seconds, not minutes.
const RENAME: Duration = Duration::from_secs(30);

/// The CLI's JSON answer.
fn cli(p: &Pipeline, args: &[&str]) -> anyhow::Result<Value> {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    let text = p.cardsync(&args)?;
    serde_json::from_str(&text).with_context(|| format!("cardsync {args:?} printed {text}"))
}

/// Every card of the tenant by id: applied version.
async fn versions(p: &Pipeline) -> anyhow::Result<BTreeMap<Uuid, i64>> {
    let rows: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT card_id, applied_version FROM cards WHERE tenant_id = $1")
            .bind(p.tenant)
            .fetch_all(&p.pool)
            .await?;
    Ok(rows.into_iter().collect())
}

/// The teams the admin API shows on `card`.
fn teams_shown(p: &Pipeline, card: Uuid) -> anyhow::Result<Vec<Value>> {
    let tenant = p.tenant_text();
    let shown = cli(
        p,
        &["cards", "show", "--tenant", &tenant, &card.to_string()],
    )?;
    shown["teams"]
        .as_array()
        .cloned()
        .with_context(|| format!("no teams in {shown}"))
}

#[tokio::test]
async fn a_group_rename_renames_the_team_on_every_members_card_without_a_member_change() {
    support::run(Setup::new("teams-rename", 12), async |p| {
        p.initial_sync(SETTLE).await?;
        let tenant = p.tenant_text();
        // Scoping the tenant to the group touches every card's teams: let updates through.
        cli(
            p,
            &["tenant", "safety", &tenant, "--update-percent", "100"],
        )?;
        let users = support::enabled_users(p).await?;
        let created = p
            .control
            .create_group(
                &tenant,
                json!({"displayName": "Field Sales", "mailNickname": "fieldsales",
                       "securityEnabled": true, "description": "Sells in the field"}),
            )
            .await?;
        let group = created["id"].as_str().context("no group id")?.to_owned();
        for user in &users {
            p.control.add_member(&tenant, &group, &user.id).await?;
        }
        cli(p, &["scope", "set", "--tenant", &tenant, "--group", &group])?;
        // Group changes reach the delta-worker once the groups subscription exists.
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
        let members: Vec<Uuid> = sqlx::query_scalar(
            "SELECT card_id FROM card_teams WHERE tenant_id = $1 AND group_id = $2 ORDER BY card_id",
        )
        .bind(p.tenant)
        .bind(&group)
        .fetch_all(&p.pool)
        .await?;
        ensure!(
            members.len() == users.len(),
            "every member's card is in the team: {} of {}",
            members.len(),
            users.len()
        );
        let shown = teams_shown(p, members[0])?;
        ensure!(
            shown == vec![json!({"group_id": group, "name": "Field Sales", "description": "Sells in the field"})],
            "the card shows its team with the group's description: {shown:?}"
        );

        // The rename: only the group's name and description change, no member moves.
        let before = versions(p).await?;
        let mark = support::audit_mark(p).await?;
        support::take_events(p).await?;
        let renamed_at = Instant::now();
        p.control
            .update_group(
                &tenant,
                &group,
                json!({"displayName": "Field & Inside Sales", "description": "Everyone who sells"}),
            )
            .await?;
        let want = json!({"group_id": group, "name": "Field & Inside Sales", "description": "Everyone who sells"});
        support::eventually("the team is renamed", RENAME, async || {
            let name: Option<String> = sqlx::query_scalar(
                "SELECT name FROM teams WHERE tenant_id = $1 AND group_id = $2",
            )
            .bind(p.tenant)
            .bind(&group)
            .fetch_one(&p.pool)
            .await?;
            Ok((name.as_deref() == Some("Field & Inside Sales")).then_some(()))
        })
        .await?;
        let took = renamed_at.elapsed();
        for card in &members {
            let shown = teams_shown(p, *card)?;
            ensure!(shown == vec![want.clone()], "card {card}: {shown:?}");
        }
        eprintln!(
            "a rename of a {}-member group reached every card in {:.1} s",
            members.len(),
            took.as_secs_f64()
        );
        // Let anything a command would have done land (nothing in flight for the tenant), then
        // prove none was sent.
        p.wait_drained(Duration::from_secs(60)).await?;
        ensure!(
            versions(p).await? == before,
            "no card was written for the rename"
        );
        let audit = support::audit_since(p, mark).await?;
        ensure!(audit.is_empty(), "no card changed: {audit:?}");
        let events = support::take_events(p).await?;
        ensure!(events.is_empty(), "no card event: {events:?}");
        let teams: i64 = sqlx::query_scalar("SELECT count(*) FROM teams WHERE tenant_id = $1")
            .bind(p.tenant)
            .fetch_one(&p.pool)
            .await?;
        ensure!(teams == 1, "the rename made no second team: {teams}");
        Ok(())
    })
    .await;
}
