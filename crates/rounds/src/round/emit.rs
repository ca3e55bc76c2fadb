//! The emit pass: card commands for saved rows, published in batches with publisher confirms,
//! then recorded as emitted. A row is recorded only after the broker confirmed its command, so
//! a round that dies in between leaves it unemitted and the next round sends it again at the
//! same version (the card-writer applies a version once). While a round's passes run, saved
//! rows are only noted: the safety rail (`rail.rs`) sends the whole plan, or holds it, at the
//! end of the round.

use super::{Round, RoundError, Rounds};
use crate::snapshot::{self, Skip};
use cardsync_bus::{Outgoing, routing};
use cardsync_store::directory::{self, UserRow};
use std::collections::HashMap;
use tracing::Instrument as _;

impl Rounds {
    /// Saves `rows` under the fence (each gets the next version of its user) and emits them.
    pub(super) async fn save_and_emit(
        &self,
        round: &mut Round<'_>,
        rows: Vec<UserRow>,
    ) -> Result<(), RoundError> {
        if rows.is_empty() {
            return Ok(());
        }
        round.check()?;
        let span = tracing::info_span!(
            "directory save",
            otel.kind = "client",
            db.system = "postgresql",
            users = rows.len(),
        );
        let versions = async {
            let mut tx = self.pool.begin().await?;
            round.fence(&mut tx).await?;
            let versions = directory::save_users(&mut tx, round.tenant, &rows).await?;
            tx.commit().await?;
            Ok::<_, RoundError>(versions)
        }
        .instrument(span)
        .await?;
        self.emit(round, &with_versions(rows, &versions)).await
    }

    /// Emits what a crashed round saved but never had confirmed, at the versions it saved.
    pub(super) async fn emit_unemitted(&self, round: &mut Round<'_>) -> Result<(), RoundError> {
        loop {
            let rows = directory::unemitted(
                &self.pool,
                round.tenant,
                i64::from(self.settings.emit_batch),
            )
            .await?;
            if rows.is_empty() {
                return Ok(());
            }
            let rows: Vec<(UserRow, i64)> = rows
                .into_iter()
                .map(|row| {
                    let version = row.version;
                    (row, version)
                })
                .collect();
            self.emit(round, &rows).await?;
        }
    }

    /// Publishes the commands for `rows` and records them as emitted once confirmed.
    pub(super) async fn emit(
        &self,
        round: &mut Round<'_>,
        rows: &[(UserRow, i64)],
    ) -> Result<(), RoundError> {
        let routing_key = if round.bulk {
            routing::bulk_command(&round.tenant_text)
        } else {
            routing::live_command(&round.tenant_text)
        };
        if round.deferring {
            // The safety rail sends the round's plan once the passes are done (`rail.rs`):
            // the rows stay unemitted until then. Their cards are about to change, so a cards
            // pass leaves them alone.
            if let Some(sent) = &mut round.emitted {
                sent.extend(rows.iter().map(|(row, _)| row.user_id.clone()));
            }
            return Ok(());
        }
        for chunk in rows.chunks(self.settings.emit_batch as usize) {
            round.check()?;
            let mut outgoing = Vec::with_capacity(chunk.len());
            let mut emitted = Vec::with_capacity(chunk.len());
            for (row, version) in chunk {
                match self.command(round, row, *version) {
                    Ok((command, action)) => {
                        self.metrics
                            .commands
                            .with_label_values(&[action.as_str()])
                            .inc();
                        outgoing.push(Outgoing::new(&self.cards_exchange, &routing_key, &command));
                        emitted.push((row.user_id.clone(), *version, Some(action.as_str())));
                    }
                    Err(Skip::Nothing) => emitted.push((row.user_id.clone(), *version, None)),
                    Err(Skip::Unmappable(reason)) => {
                        self.metrics.unmappable.inc();
                        tracing::warn!(tenant = %round.tenant, user_id = %row.user_id, reason, "user cannot be mapped; no card");
                        emitted.push((row.user_id.clone(), *version, None));
                    }
                }
            }
            round.report.commands += outgoing.len() as u64;
            self.publisher.publish_all(outgoing).await?;
            directory::mark_emitted(&self.pool, round.tenant, &emitted).await?;
            if let Some(sent) = &mut round.emitted {
                sent.extend(
                    emitted
                        .iter()
                        .filter(|(_, _, action)| action.is_some())
                        .map(|(id, _, _)| id.clone()),
                );
            }
        }
        Ok(())
    }
}

impl Rounds {
    /// The command `row` calls for at `version`, as this round sends it (its run, the
    /// freshness start), or why there is none; what the safety rail keeps, too.
    pub(super) fn command(
        &self,
        round: &Round<'_>,
        row: &UserRow,
        version: i64,
    ) -> Result<(cardsync_proto::CardCommand, snapshot::Action), Skip> {
        let (mut command, action) = snapshot::command_for(
            &round.tenant_text,
            row,
            version,
            &round.rules,
            &round.scope,
            round.cause,
        )?;
        command.notified_at = round.notified_at.map(cardsync_proto::timestamp);
        command.run_id.clone_from(&round.run_id);
        Ok((command, action))
    }
}

/// Pairs each saved row with the version saving gave it.
pub(super) fn with_versions(
    rows: Vec<UserRow>,
    versions: &HashMap<String, i64>,
) -> Vec<(UserRow, i64)> {
    rows.into_iter()
        .map(|row| {
            let version = versions.get(&row.user_id).copied().unwrap_or(row.version);
            (row, version)
        })
        .collect()
}
