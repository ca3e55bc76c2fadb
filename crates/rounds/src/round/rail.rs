//! The round's side of the mass-change safety rail. The passes save the snapshot but send
//! nothing: every command of the round is its plan, the users whose current version has no
//! confirmed command. Once the passes are done the plan is assessed against the cards
//! ([`crate::rail::Tally`]) and either released (sent as the emit pass sends it) or held: its
//! commands kept in PostgreSQL with their versions, in the transaction that records them as
//! handed over, its run `held` with the reason, and the tenant paused. A paused tenant's round
//! does nothing but leave what it owed for the resume: its named run's request parked, or the
//! pending mark.

use super::{Mode, Round, RoundError, RoundRequest, Rounds};
use crate::drift::assess;
use crate::rail::Tally;
use cardsync_proto::{self as proto, Message as _};
use cardsync_store::cards::{self, Card};
use cardsync_store::directory;
use cardsync_store::runs::{self, NewRun};
use cardsync_store::safety::{self, HeldCommand, HeldPlan, Worker};
use proto::sync_request::{Depth, Scope};
use std::collections::HashMap;
use uuid::Uuid;

/// Planned users assessed (and held) per page: memory stays bounded whatever the plan's size.
const PAGE: i64 = 1000;

/// The longest reason recorded on a held run (the column allows 4096 bytes).
const MAX_DETAIL: usize = 2048;

/// How a round's plan was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Settled {
    /// Sent (or empty).
    Released,
    /// Kept for an admin, under this run.
    Held(Uuid),
}

impl Rounds {
    /// Whether the tenant is paused. When it is, the round records what it owed (its named
    /// run's request, parked; or the pending mark) and must do nothing else. Runs under the
    /// lease: only a round of this tenant pauses it, so "not paused" stays true for the round.
    pub(super) async fn paused(
        &self,
        round: &Round<'_>,
        request: &RoundRequest,
    ) -> Result<bool, RoundError> {
        if safety::state(&self.pool, round.tenant)
            .await?
            .paused_at
            .is_none()
        {
            return Ok(false);
        }
        let parked = request.run_id.map(|run_id| {
            let (worker, message) = parked_request(round, request, run_id);
            (run_id, worker, message.encode_to_vec())
        });
        let mut tx = self.pool.begin().await?;
        round.fence(&mut tx).await?;
        // The lock orders this against a resume: either it sees the parked request or the
        // round sees the tenant resumed.
        if safety::lock(&mut tx, round.tenant)
            .await?
            .paused_at
            .is_none()
        {
            return Ok(false);
        }
        safety::defer(
            &mut tx,
            round.tenant,
            parked
                .as_ref()
                .map(|(run_id, worker, bytes)| (*run_id, *worker, bytes.as_slice())),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(tenant = %round.tenant, mode = request.mode.as_str(), "tenant paused by the safety rail; round deferred to the resume");
        Ok(true)
    }

    /// Assesses the round's plan and sends it, or holds it when it is more than the tenant
    /// lets through. `run` is the round's run (`true` for the tenant's live run of the hour,
    /// which a held plan does not take over: it gets a run of its own).
    pub(super) async fn settle(
        &self,
        round: &mut Round<'_>,
        request: &RoundRequest,
        run: Option<(Uuid, bool)>,
    ) -> Result<Settled, RoundError> {
        round.deferring = false;
        let rail = safety::state(&self.pool, round.tenant).await?;
        let planned = directory::count_unemitted(&self.pool, round.tenant).await?;
        if planned >= i64::from(rail.thresholds.minimum) {
            let active = safety::active_cards(&self.pool, round.tenant).await?;
            let active = u64::try_from(active).unwrap_or(0);
            // No active card (a first import): nothing to deactivate or update, nothing to hold.
            let tally = if active == 0 {
                Tally::default()
            } else {
                self.assess_plan(round).await?
            };
            if let Some(verdict) = tally.verdict(&rail.thresholds, active) {
                let run_id = self
                    .hold(round, request, run, &tally, &verdict, active, &rail)
                    .await?;
                return Ok(Settled::Held(run_id));
            }
        }
        self.emit_unemitted(round).await?;
        Ok(Settled::Released)
    }

    /// What the plan would do to the cards.
    async fn assess_plan(&self, round: &Round<'_>) -> Result<Tally, RoundError> {
        let mut tally = Tally::default();
        let mut after: Option<String> = None;
        loop {
            round.check()?;
            let rows = directory::unemitted_after(&self.pool, round.tenant, after.as_deref(), PAGE)
                .await?;
            let Some(last) = rows.last() else {
                return Ok(tally);
            };
            after = Some(last.user_id.clone());
            let ids: Vec<String> = rows.iter().map(|row| row.user_id.clone()).collect();
            let by_user: HashMap<String, Card> = cards::of_users(&self.pool, round.tenant, &ids)
                .await?
                .into_iter()
                .filter_map(|card| Some((card.user_id.clone()?, card)))
                .collect();
            for row in &rows {
                tally.add(row, &assess(row, by_user.get(&row.user_id), &round.rules));
            }
        }
    }

    /// Keeps the plan for an admin: the run held with the reason and summary, every planned
    /// command kept (and its user recorded as handed over, so no later round sends it), the
    /// tenant paused; all in one transaction under the fence.
    #[allow(clippy::too_many_arguments)] // one call site; the pieces are the round's findings
    async fn hold(
        &self,
        round: &mut Round<'_>,
        request: &RoundRequest,
        run: Option<(Uuid, bool)>,
        tally: &Tally,
        verdict: &str,
        active: u64,
        rail: &safety::SafetyState,
    ) -> Result<Uuid, RoundError> {
        let mut notes = self.scope_notes(round.tenant).await?;
        if request.mode == Mode::Apply {
            notes.push("the rules in force changed (rules apply)".to_owned());
        }
        let mut detail = tally.describe(verdict, &notes);
        truncate(&mut detail, MAX_DETAIL);
        let run_id = match run {
            Some((run_id, false)) => run_id,
            // A live round's plan gets its own run: the hour's live run goes on.
            _ => {
                let run_id = Uuid::now_v7();
                let live = matches!(
                    round.cause,
                    proto::Cause::Notification | proto::Cause::SafetyPoll
                );
                runs::create(
                    &self.pool,
                    &NewRun {
                        run_id,
                        tenant_id: round.tenant,
                        kind: if live { "live" } else { "round" }.to_owned(),
                        cause: round.cause.as_str().to_owned(),
                        started_by: "system".to_owned(),
                        target: None,
                    },
                )
                .await?;
                run_id
            }
        };
        round.run_id = run_id.to_string();
        let summary = serde_json::json!({
            "verdict": verdict,
            "notes": notes,
            "mode": request.mode.as_str(),
            "cause": round.cause.as_str(),
            "active_cards": active,
            "thresholds": {
                "removal_percent": rail.thresholds.removal_percent,
                "update_percent": rail.thresholds.update_percent,
                "minimum": rail.thresholds.minimum,
            },
            "outcomes": tally.outcomes,
            "fields": tally.fields,
            "causes": tally.causes,
            "samples": tally.samples,
        });
        round.check()?;
        let mut tx = self.pool.begin().await?;
        round.fence(&mut tx).await?;
        safety::lock(&mut tx, round.tenant).await?;
        let plan = HeldPlan {
            run_id,
            tenant_id: round.tenant,
            lane: if round.bulk { "bulk" } else { "live" }.to_owned(),
            summary,
            created_at: time::OffsetDateTime::now_utc(),
            decided_at: None,
            decided_by: None,
        };
        safety::hold(&mut tx, &plan, &detail).await?;
        let mut after: Option<String> = None;
        let mut seq = 0_i64;
        loop {
            let rows =
                directory::unemitted_after(&mut *tx, round.tenant, after.as_deref(), PAGE).await?;
            let Some(last) = rows.last() else { break };
            after = Some(last.user_id.clone());
            let mut kept = Vec::with_capacity(rows.len());
            let mut handed = Vec::with_capacity(rows.len());
            for row in &rows {
                match self.command(round, row, row.version) {
                    Ok((command, action)) => {
                        seq += 1;
                        kept.push(HeldCommand {
                            seq,
                            user_id: row.user_id.clone(),
                            version: row.version,
                            action: action.as_str().to_owned(),
                            command: command.encode_to_vec(),
                        });
                        handed.push((row.user_id.clone(), row.version, Some(action.as_str())));
                    }
                    Err(_) => handed.push((row.user_id.clone(), row.version, None)),
                }
            }
            safety::keep_commands(&mut tx, run_id, &kept).await?;
            directory::mark_emitted(&mut *tx, round.tenant, &handed).await?;
        }
        tx.commit().await?;
        self.metrics.held.inc();
        tracing::warn!(tenant = %round.tenant, %run_id, commands = seq, reason = %detail, "round held by the safety rail");
        Ok(run_id)
    }

    /// Sets the safety-rail gauges (held runs, paused) of every tenant from PostgreSQL: the
    /// admin API approves and rejects, so the delta-worker refreshes them on its poll tick.
    pub async fn refresh_rail_gauges(&self) -> Result<(), RoundError> {
        let overview = safety::overview(&self.pool).await?;
        self.metrics.set_rail(&overview);
        Ok(())
    }

    /// Notes on the tenant's scope an operator needs: scope groups the directory no longer has.
    async fn scope_notes(&self, tenant: Uuid) -> Result<Vec<String>, RoundError> {
        let Some(scope) = directory::scope(&self.pool, tenant).await? else {
            return Ok(Vec::new());
        };
        let groups = directory::groups(&self.pool, tenant).await?;
        let by_id: HashMap<&str, &directory::GroupRow> = groups
            .iter()
            .map(|group| (group.group_id.as_str(), group))
            .collect();
        Ok(scope
            .iter()
            .filter_map(|id| match by_id.get(id.as_str()) {
                Some(group) if group.present => None,
                Some(group) => Some(format!(
                    "scope group {:?} ({id}) no longer found in the directory",
                    group.display_name.as_deref().unwrap_or("")
                )),
                None => Some(format!("scope group {id} not found in the directory")),
            })
            .collect())
    }
}

/// The request that asks again for a named run that found its tenant paused, and who takes it.
fn parked_request(
    round: &Round<'_>,
    request: &RoundRequest,
    run_id: Uuid,
) -> (Worker, proto::SyncRequest) {
    let (worker, scope, depth, target) = match &request.mode {
        Mode::Reconcile => (Worker::Reconcile, Scope::Tenant, Depth::Full, String::new()),
        Mode::Apply => (
            Worker::Reconcile,
            Scope::Tenant,
            Depth::Cards,
            String::new(),
        ),
        Mode::Group(group) => (Worker::Reconcile, Scope::Group, Depth::Full, group.clone()),
        Mode::Users(ids) => (
            Worker::Delta,
            Scope::User,
            Depth::Full,
            ids.first().cloned().unwrap_or_default(),
        ),
        Mode::Full => (Worker::Delta, Scope::Tenant, Depth::Full, String::new()),
        Mode::Incremental => (Worker::Delta, Scope::Tenant, Depth::Info, String::new()),
    };
    let message = proto::SyncRequest {
        envelope: Some(proto::Envelope::new(&round.tenant_text, round.cause)),
        scope: scope as i32,
        target_id: target,
        depth: depth as i32,
        run_id: run_id.to_string(),
    };
    (worker, message)
}

fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}
