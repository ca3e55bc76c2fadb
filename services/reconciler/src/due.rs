//! `reconciler due`, the CronJob's one pass: fail the runs whose reconciler died and whose
//! request never came back, and those whose commands were never all applied; end the live runs
//! of past hours; delete runs past their retention; record and enqueue one run per due schedule
//! occurrence, and enqueue again the runs whose request was lost before it reached the broker.
//!
//! Which occurrence is due: the latest at or before now ([`Schedule::latest_at_or_before`]), so
//! a job that was down for days runs the latest missed occurrence once, not every one. A tenant
//! without a tenant-wide schedule of its own runs the default one (daily, 00:00 UTC); a paused
//! schedule enqueues nothing. A group's schedule runs a reconcile of that group's members.
//!
//! A run is recorded before its request is published, and only once per occurrence: the
//! default schedule's under the unique (tenant, kind, occurrence) of `sync_runs`, an explicit
//! schedule's by moving the schedule's `last_occurrence` forward in the same transaction. So
//! overlapping `due` jobs enqueue an occurrence once; a job killed in between leaves a queued
//! run that a later job publishes again.

use crate::handler::KIND;
use crate::settings::ReconcilerSettings;
use cardsync_bus::{Outgoing, PublishError, Publisher, Topology, names, routing};
use cardsync_cards::DigestEvents;
use cardsync_proto as proto;
use cardsync_schedule::Schedule;
use cardsync_store::StoreError;
use cardsync_store::runs::{self, NewRun, QueuedRun};
use cardsync_store::schedules::{self, StoredSchedule, Target};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DueReport {
    /// Runs failed because no worker renewed their heartbeat (or, for a user sync, ended it)
    /// for `abandon_after`.
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

/// The default schedule's occurrence due at `now`: every tenant without a schedule of its own
/// reconciles at 00:00 UTC each day, so the latest midnight (UTC) not after `now`.
pub fn default_occurrence(now: OffsetDateTime) -> Option<OffsetDateTime> {
    Schedule::nightly().latest_at_or_before(now)
}

/// One pass at `now`.
pub async fn enqueue_due(
    pool: &PgPool,
    publisher: &Publisher,
    topology: &Topology,
    settings: &ReconcilerSettings,
    now: OffsetDateTime,
) -> Result<DueReport, DueError> {
    // Every kind of run a worker runs ends these ways: reconciles and rules applies (this
    // service), and the delta-worker's user syncs, which have no heartbeat (a user sync takes
    // seconds) and would otherwise stay running for ever once their request is dead-lettered.
    // Every run that ends here has its digest put in the outbox in the same transaction.
    let digests = DigestEvents::new(topology.name(names::CARD_EVENTS));
    let mut abandoned = Vec::new();
    let mut unsettled = Vec::new();
    let mut tx = pool.begin().await.map_err(StoreError::from)?;
    for kind in runs::DIGEST_KINDS {
        abandoned
            .extend(runs::fail_abandoned(&mut tx, kind, settings.abandon_after, &digests).await?);
        unsettled
            .extend(runs::fail_unsettled(&mut tx, kind, settings.settle_within, &digests).await?);
    }
    tx.commit().await.map_err(StoreError::from)?;
    for run_id in &abandoned {
        tracing::warn!(%run_id, "abandoned run failed");
    }
    for run_id in &unsettled {
        tracing::warn!(%run_id, "unsettled run failed");
    }
    let retention = time::Duration::try_from(settings.retention).unwrap_or(time::Duration::MAX);
    let horizon = now
        .checked_sub(retention)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let deleted = runs::delete_finished_before(pool, horizon).await?;
    let mut tx = pool.begin().await.map_err(StoreError::from)?;
    let live_ended = runs::end_live_before(&mut tx, now, &digests).await?;
    tx.commit().await.map_err(StoreError::from)?;
    // Lost requests first, so a run recorded just below is not published twice.
    let mut requests = runs::stale_queued(pool, KIND, settings.requeue_after).await?;
    let requeued = requests.len();
    let mut enqueued = 0;
    if let Some(occurrence) = default_occurrence(now) {
        for (tenant, created_at) in schedules::on_default(pool).await? {
            // A tenant created after the occurrence waits for the next one (it just had its
            // initial sync).
            if created_at > occurrence {
                continue;
            }
            let run = scheduled_run(tenant, None);
            if runs::create_scheduled(pool, &run, occurrence).await? {
                requests.push(queued(&run));
                enqueued += 1;
            }
        }
    }
    for stored in schedules::of_syncing_tenants(pool).await? {
        if stored.paused_at.is_some() {
            continue;
        }
        if let Some(run) = enqueue_occurrence(pool, &stored, now).await? {
            requests.push(run);
            enqueued += 1;
        }
    }
    let exchange = topology.name(names::SYNC);
    let outgoing: Vec<Outgoing> = requests
        .iter()
        .map(|run| {
            let tenant = run.tenant_id.to_string();
            let message = match &run.target {
                None => request(&tenant, run.run_id),
                Some(group) => group_request(&tenant, group, run.run_id),
            };
            Outgoing::new(&exchange, &routing::reconcile_request(&tenant), &message)
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

/// Records the run of `stored`'s occurrence due at `now`, if it has one that no job enqueued
/// yet and that is not older than the schedule's last change.
async fn enqueue_occurrence(
    pool: &PgPool,
    stored: &StoredSchedule,
    now: OffsetDateTime,
) -> Result<Option<QueuedRun>, DueError> {
    let schedule = match stored.spec.check() {
        Ok(schedule) => schedule,
        Err(invalid) => {
            // Stored by an older release whose zone database knew a zone this one does not.
            tracing::warn!(tenant = %stored.tenant_id, error = %invalid, "schedule skipped");
            return Ok(None);
        }
    };
    let Some(occurrence) = schedule.latest_at_or_before(now) else {
        return Ok(None);
    };
    let mut tx = pool.begin().await.map_err(StoreError::from)?;
    if !schedules::claim_occurrence(&mut *tx, stored.tenant_id, &stored.target, occurrence).await? {
        return Ok(None);
    }
    let run = scheduled_run(stored.tenant_id, stored.target.group());
    let recorded = match &stored.target {
        // The tenant-wide run also takes the occurrence's slot in `sync_runs`, as the default
        // schedule's does.
        Target::Tenant => runs::create_scheduled(&mut *tx, &run, occurrence).await?,
        Target::Group(_) => {
            runs::create(&mut *tx, &run).await?;
            true
        }
    };
    tx.commit().await.map_err(StoreError::from)?;
    Ok(recorded.then(|| queued(&run)))
}

fn scheduled_run(tenant: Uuid, group: Option<&str>) -> NewRun {
    NewRun {
        run_id: Uuid::now_v7(),
        tenant_id: tenant,
        kind: KIND.into(),
        cause: proto::Cause::Reconcile.as_str().into(),
        started_by: "schedule".into(),
        target: group.map(str::to_owned),
    }
}

fn queued(run: &NewRun) -> QueuedRun {
    QueuedRun {
        run_id: run.run_id,
        tenant_id: run.tenant_id,
        target: run.target.clone(),
    }
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

/// The reconcile request of run `run_id` for the (nested) members of `group` (a reconcile
/// run with a target is a group's).
pub fn group_request(tenant: &str, group: &str, run_id: Uuid) -> proto::SyncRequest {
    proto::SyncRequest {
        scope: proto::sync_request::Scope::Group as i32,
        target_id: group.to_owned(),
        ..request(tenant, run_id)
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
            Some(datetime!(2026-12-06 00:00 UTC))
        );
        assert_eq!(
            default_occurrence(datetime!(2026-12-06 00:00 UTC)),
            Some(datetime!(2026-12-06 00:00 UTC))
        );
        // 00:30 in Berlin is still the day before in UTC.
        assert_eq!(
            default_occurrence(datetime!(2026-12-06 00:30 +01:00)),
            Some(datetime!(2026-12-05 00:00 UTC))
        );
    }
}
