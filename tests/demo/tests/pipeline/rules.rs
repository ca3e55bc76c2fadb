//! Field rules changed on a running tenant through the operator's CLI (issue 15): the dry run's
//! counts are exactly what the apply then changes on the cards, and a custom field reading a
//! property no delta link selected (named by the dry run as not previewable) fills on every card
//! and follows later directory changes.

use crate::support::{self, Setup};
use anyhow::{Context as _, bail, ensure};
use cardsync_demo::Pipeline;
use cardsync_store::runs::{self, Run, RunStatus};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use uuid::Uuid;

const SETTLE: Duration = Duration::from_secs(90);

/// Every card of the tenant by user: its status and each field's value.
type Cards = HashMap<String, (String, BTreeMap<String, Option<String>>)>;

async fn cards(p: &Pipeline) -> anyhow::Result<Cards> {
    let rows: Vec<(Option<String>, String, Value)> =
        sqlx::query_as("SELECT user_id, status, fields FROM cards WHERE tenant_id = $1")
            .bind(p.tenant)
            .fetch_all(&p.pool)
            .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(user, status, fields)| {
            let values = fields
                .as_object()
                .into_iter()
                .flatten()
                .map(|(name, state)| (name.clone(), state["value"].as_str().map(str::to_owned)))
                .collect();
            Some((user?, (status, values)))
        })
        .collect())
}

/// The rules in force, changed by `change`, written to a file the CLI reads.
fn proposed(p: &Pipeline, change: impl FnOnce(&mut Value)) -> anyhow::Result<String> {
    let shown: Value = serde_json::from_str(&p.cardsync(&[
        "rules",
        "show",
        "--tenant",
        &p.tenant_text(),
        "-o",
        "json",
    ])?)?;
    let mut rules = shown["rules"].clone();
    change(&mut rules);
    let path = p.config.logs.join(format!("rules-{}.json", Uuid::new_v4()));
    std::fs::write(&path, serde_json::to_vec_pretty(&rules)?)?;
    Ok(path.display().to_string())
}

fn dry_run(p: &Pipeline, file: &str) -> anyhow::Result<Value> {
    let text = p.cardsync(&[
        "rules",
        "dry-run",
        "--tenant",
        &p.tenant_text(),
        "-f",
        file,
        "-o",
        "json",
    ])?;
    serde_json::from_str(&text).with_context(|| format!("the dry run printed {text}"))
}

/// Saves the rules in `file` with the CLI and waits for the apply run it started to end.
async fn save_and_apply(p: &Pipeline, file: &str) -> anyhow::Result<Run> {
    let text = p.cardsync(&[
        "rules",
        "put",
        "--tenant",
        &p.tenant_text(),
        file,
        "-o",
        "json",
    ])?;
    let saved: Value = serde_json::from_str(&text)?;
    ensure!(
        saved["apply"]["status"] == "queued",
        "the save answered {saved}"
    );
    let run_id: Uuid = saved["apply"]["run_id"]
        .as_str()
        .context("no apply run")?
        .parse()?;
    let started = Instant::now();
    loop {
        let run = runs::get(&p.pool, run_id)
            .await?
            .context("the run vanished")?;
        if run.status.is_final() {
            ensure!(
                run.status == RunStatus::Succeeded,
                "the apply run ended {:?}: {:?}",
                run.status,
                run.detail
            );
            println!(
                "apply run {run_id} ended in {:.1} s: {:?}",
                started.elapsed().as_secs_f64(),
                run.counts
            );
            return Ok(run);
        }
        if started.elapsed() > SETTLE {
            bail!("the apply run is still {:?} after {SETTLE:?}", run.status);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_rules_apply_changes_exactly_the_cards_its_dry_run_counted() {
    support::run(Setup::new("rules-apply", 150), async |p| {
        p.initial_sync(SETTLE).await?;
        // These rules change most cards on purpose: the safety rail lets such an apply through
        // only when told to (or when an admin approves it).
        p.cardsync(&[
            "tenant",
            "safety",
            &p.tenant_text(),
            "--update-percent",
            "100",
        ])?;
        let file = proposed(p, |rules| {
            rules["fields"]["job_title"]["source"] = json!("upper(jobTitle)");
            rules["phone_order"] = json!("business_first");
        })?;
        let preview = dry_run(p, &file)?;
        ensure!(preview["unpreviewable"] == json!([]), "{preview}");
        ensure!(preview["enumeration_first"] == false, "{preview}");
        ensure!(preview["users"] == 150, "{preview}");
        let counted: BTreeMap<String, u64> = preview["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|field| {
                (
                    field["field"].as_str().unwrap_or_default().to_owned(),
                    field["changes"].as_u64().unwrap_or_default(),
                )
            })
            .collect();
        ensure!(
            counted.get("job_title").is_some_and(|n| *n > 0)
                && counted.get("phone").is_some_and(|n| *n > 0),
            "the rules change should touch titles and phones: {preview}"
        );

        let before = cards(p).await?;
        let run = save_and_apply(p, &file).await?;
        let after = cards(p).await?;
        let mut changed: BTreeMap<String, u64> = BTreeMap::new();
        let mut changed_cards = 0;
        for (user, (_, fields)) in &after {
            let (_, was) = before.get(user).context("a card appeared")?;
            let differing: Vec<&String> = fields
                .iter()
                .filter(|(name, value)| was.get(*name).unwrap_or(&None) != *value)
                .map(|(name, _)| name)
                .collect();
            changed_cards += u64::from(!differing.is_empty());
            for name in differing {
                *changed.entry(name.clone()).or_default() += 1;
            }
        }
        ensure!(
            changed == counted,
            "the apply changed {changed:?}, the dry run counted {counted:?}"
        );
        ensure!(
            preview["cards_changed"] == changed_cards,
            "{changed_cards} cards changed, the dry run said {}",
            preview["cards_changed"]
        );
        ensure!(
            run.counts.get("updated").copied().unwrap_or_default() == changed_cards as i64,
            "the run counted {:?} for {changed_cards} changed cards",
            run.counts
        );
        // The snapshot had every property these rules read: the apply asked Graph nothing.
        ensure!(
            run.counts.get("graph_pages").copied().unwrap_or_default() == 0,
            "the apply read Graph pages: {:?}",
            run.counts
        );
        // A sample is a real card's before and after.
        let sample = &preview["fields"][0]["samples"][0];
        let user = sample["user_id"].as_str().context("sample user")?;
        let field = preview["fields"][0]["field"].as_str().context("field")?;
        ensure!(
            before[user].1.get(field).cloned().flatten().as_deref() == sample["before"].as_str()
                && after[user].1.get(field).cloned().flatten().as_deref()
                    == sample["after"].as_str(),
            "sample {sample} is not what happened to {user}'s {field}"
        );
        // Applying the same rules again changes nothing: its dry run says so first.
        let again = dry_run(p, &file)?;
        ensure!(again["cards_changed"] == 0, "{again}");
        p.wait_converged(SETTLE).await?;
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn a_custom_field_reading_an_unselected_property_fills_every_card_and_follows_changes() {
    support::run(Setup::new("rules-custom", 100), async |p| {
        p.initial_sync(SETTLE).await?;
        // These rules change most cards on purpose: the safety rail lets such an apply through
        // only when told to (or when an admin approves it).
        p.cardsync(&[
            "tenant",
            "safety",
            &p.tenant_text(),
            "--update-percent",
            "100",
        ])?;
        let file = proposed(p, |rules| {
            rules["custom_fields"] =
                json!({"office": {"expression": "coalesce(officeLocation, \"remote\")"}});
        })?;
        let preview = dry_run(p, &file)?;
        ensure!(
            preview["unpreviewable"]
                == json!([{"field": "office", "properties": ["officeLocation"]}]),
            "{preview}"
        );
        ensure!(preview["enumeration_first"] == true, "{preview}");
        ensure!(preview["cards_changed"] == 0, "{preview}");

        let run = save_and_apply(p, &file).await?;
        ensure!(
            run.counts.get("graph_pages").copied().unwrap_or_default() > 0,
            "the apply read no Graph page: {:?}",
            run.counts
        );
        let filled = cards(p).await?;
        let empty: Vec<&String> = filled
            .iter()
            .filter(|(_, (status, fields))| {
                status == "active" && fields.get("office").cloned().flatten().is_none()
            })
            .map(|(user, _)| user)
            .collect();
        ensure!(empty.is_empty(), "cards without an office: {empty:?}");
        // Every card is what the directory gives under the new rules.
        p.wait_converged(SETTLE).await?;

        // The stored delta link now tracks the property: a change to it alone reaches the card.
        let tenant = p.tenant_text();
        let user = support::enabled_users(p).await?[0].id.clone();
        let office = support::unique("Tower");
        p.control
            .update_user(&tenant, &user, json!({"officeLocation": office}))
            .await?;
        p.wait_converged(SETTLE).await?;
        let value = cards(p).await?[&user].1.get("office").cloned().flatten();
        ensure!(
            value.as_deref() == Some(office.as_str()),
            "the card's office is {value:?}, the directory's {office}"
        );
        Ok(())
    })
    .await;
}
