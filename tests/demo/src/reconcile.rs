//! The full reconcile at the end of the demo, as the nightly job runs it: a reconcile run asked
//! of the reconciler (a Sync Now), waited for in `sync_runs`, and what it found.

use crate::pipeline::Pipeline;
use anyhow::{Context as _, ensure};
use cardsync_store::runs::{self, NewRun, RunStatus};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How a reconcile run ended.
#[derive(Debug, Clone)]
pub struct Reconciled {
    /// Its final status.
    pub status: RunStatus,
    /// Why it failed, if it did.
    pub detail: Option<String>,
    /// From the request to the run's end.
    pub elapsed: Duration,
    /// The run's counts (`unannounced`, `repaired`, `commands`, `graph_pages`).
    pub counts: BTreeMap<String, i64>,
}

impl Reconciled {
    /// A count of the run (0 when absent).
    pub fn count(&self, name: &str) -> i64 {
        self.counts.get(name).copied().unwrap_or_default()
    }
}

/// Records a reconcile run of `tenant` (one of the pipeline's), asks the reconciler for it and
/// waits up to `timeout` for it to end.
pub async fn reconcile(
    pipeline: &Pipeline,
    tenant: Uuid,
    timeout: Duration,
) -> anyhow::Result<Reconciled> {
    let run_id = Uuid::now_v7();
    runs::create(
        &pipeline.pool,
        &NewRun {
            run_id,
            tenant_id: tenant,
            kind: "reconcile".into(),
            cause: "reconcile".into(),
            started_by: "demo".into(),
            target: None,
        },
    )
    .await?;
    let started = Instant::now();
    pipeline.request_reconcile(tenant, run_id).await?;
    loop {
        let run = runs::get(&pipeline.pool, run_id)
            .await?
            .context("the reconcile run vanished")?;
        if run.status.is_final() {
            return Ok(Reconciled {
                status: run.status,
                detail: run.detail,
                elapsed: started.elapsed(),
                counts: run.counts,
            });
        }
        ensure!(
            started.elapsed() < timeout,
            "the reconcile run is still {} after {timeout:?}",
            run.status.as_str()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
