//! `reconciler due`, the CronJob's one pass: fail the runs whose reconciler died and whose
//! request never came back, and those whose commands were never all applied; end the live runs
//! of past hours; delete runs past their retention; record and enqueue one run per tenant whose schedule is due, and enqueue
//! again the runs whose request was lost before it reached the broker.
//!
//! A run is recorded before its request is published, under a unique (tenant, occurrence), so
//! overlapping `due` jobs enqueue a tenant's occurrence once; a job killed in between leaves a
//! queued run that a later job publishes again.

use crate::handler::{APPLY_KIND, KIND};
use crate::settings::ReconcilerSettings;
use cardsync_bus::{Outgoing, PublishError, Publisher, Topology, names, routing};
use cardsync_proto as proto;
use cardsync_store::StoreError;
use cardsync_store::runs::{self, NewRun};
use sqlx::PgPool;
use time::{OffsetDateTime, Time, UtcOffset};
use uuid::Uuid;

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DueReport {
    /// Runs failed because no reconciler renewed their heartbeat for `abandon_after`.
    pub abandoned: usize,
    /// Runs recorded and enqueued for a due schedule occurrence.
    pub enqueued: usize,
    /// Queued runs whose request was published again.
    pub requeued: usize,
    /// Runs failed because their commands were not all applied within `settle_within`.
    pub unsettled: usize,
    /// Runs deleted because they ended more than `retention` ago.
    pub deleted: u64,
    /// Live runs ended because their hour was over.
    pub live_ended: u64,
}

/// Why a pass failed (the CronJob's next pass tries again).
#[derive(Debug, thiserror::Error)]
pub enum DueError {
    /// PostgreSQL failed.
    #[error("database failed")]
    Store(#[from] StoreError),
    /// The broker did not confirm the requests; their runs stay queued for the next pass.
    #[error("publishing reconcile requests failed")]
    Publish(#[from] PublishError),
}

/// The schedule occurrence due at `now`: every tenant's default schedule is a reconcile at
/// 00:00 UTC each day, so the latest midnight (UTC) not after `now`.
pub fn default_occurrence(now: OffsetDateTime) -> OffsetDateTime {
    now.to_offset(UtcOffset::UTC).replace_time(Time::MIDNIGHT)
}

/// One pass at `now`.
pub async fn enqueue_due(
    pool: &PgPool,
    publisher: &Publisher,
    topology: &Topology,
    settings: &ReconcilerSettings,
    now: OffsetDateTime,
) -> Result<DueReport, DueError> {
    // Rules applies run in the reconciler too: they end the same ways.
    let mut abandoned = Vec::new();
    let mut unsettled = Vec::new();
    for kind in [KIND, APPLY_KIND] {
        abandoned.extend(runs::fail_abandoned(pool, kind, settings.abandon_after).await?);
        unsettled.extend(runs::fail_unsettled(pool, kind, settings.settle_within).await?);
    }
    for run_id in &abandoned {
        tracing::warn!(%run_id, "abandoned reconcile run failed");
    }
    for run_id in &unsettled {
        tracing::warn!(%run_id, "unsettled reconcile run failed");
    }
    let retention = time::Duration::try_from(settings.retention).unwrap_or(time::Duration::MAX);
    let horizon = now
        .checked_sub(retention)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let deleted = runs::delete_finished_before(pool, horizon).await?;
    let live_ended = runs::end_live_before(pool, now).await?;
    // Lost requests first, so a run recorded just below is not published twice.
    let mut requests: Vec<(Uuid, Uuid)> =
        runs::stale_queued(pool, KIND, settings.requeue_after).await?;
    let requeued = requests.len();
    let occurrence = default_occurrence(now);
    let mut enqueued = 0;
    for (tenant, created_at) in cardsync_store::tenants::connected(pool).await? {
        // A tenant created after the occurrence waits for the next one (it just had its
        // initial sync).
        if created_at > occurrence {
            continue;
        }
        let run = NewRun {
            run_id: Uuid::now_v7(),
            tenant_id: tenant,
            kind: KIND.into(),
            cause: proto::Cause::Reconcile.as_str().into(),
            started_by: "schedule".into(),
            target: None,
        };
        if runs::create_scheduled(pool, &run, occurrence).await? {
            requests.push((run.run_id, tenant));
            enqueued += 1;
        }
    }
    let exchange = topology.name(names::SYNC);
    let outgoing: Vec<Outgoing> = requests
        .iter()
        .map(|(run_id, tenant)| {
            let tenant = tenant.to_string();
            Outgoing::new(
                &exchange,
                &routing::reconcile_request(&tenant),
                &request(&tenant, *run_id),
            )
        })
        .collect();
    if !outgoing.is_empty() {
        publisher.publish_all(outgoing).await?;
    }
    Ok(DueReport {
        abandoned: abandoned.len(),
        enqueued,
        requeued,
        unsettled: unsettled.len(),
        deleted,
        live_ended,
    })
}

/// The reconcile request of run `run_id` for the whole tenant.
pub fn request(tenant: &str, run_id: Uuid) -> proto::SyncRequest {
    use proto::sync_request::{Depth, Scope};
    proto::SyncRequest {
        envelope: Some(proto::Envelope::new(tenant, proto::Cause::Reconcile)),
        scope: Scope::Tenant as i32,
        target_id: String::new(),
        depth: Depth::Full as i32,
        run_id: run_id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_default_occurrence_is_the_last_midnight_utc() {
        assert_eq!(
            default_occurrence(datetime!(2026-12-06 08:15:00 UTC)),
            datetime!(2026-12-06 00:00 UTC)
        );
        assert_eq!(
            default_occurrence(datetime!(2026-12-06 00:00 UTC)),
            datetime!(2026-12-06 00:00 UTC)
        );
        // 00:30 in Berlin is still the day before in UTC.
        assert_eq!(
            default_occurrence(datetime!(2026-12-06 00:30 +01:00)),
            datetime!(2026-12-05 00:00 UTC)
        );
    }
}
