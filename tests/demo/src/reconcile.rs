//! The full reconcile at the end of the demo, as the nightly job runs it: a Sync Now through the
//! admin API (`cardsync sync`), which is a reconcile run of the reconciler, waited for in
//! `sync_runs`, and what it found.

use crate::pipeline::Pipeline;
use anyhow::{Context as _, ensure};
use cardsync_store::runs::{self, RunStatus};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How a reconcile run ended.
#[derive(Debug, Clone)]
pub struct Reconciled {
    /// The run.
    pub run_id: Uuid,
    /// Its kind (`reconcile`), cause (`manual` for a Sync Now) and who asked.
    pub kind: String,
    /// Its cause.
    pub cause: String,
    /// Who asked for it (the operator's token subject).
    pub started_by: String,
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

/// Asks for a reconcile of `tenant` (one of the pipeline's) with Sync Now (the operator's
/// `cardsync sync`) and waits up to `timeout` for the run to end.
pub async fn reconcile(
    pipeline: &Pipeline,
    tenant: Uuid,
    timeout: Duration,
) -> anyhow::Result<Reconciled> {
    let started = Instant::now();
    let run_id = pipeline.sync_now(tenant)?;
    loop {
        let run = runs::get(&pipeline.pool, run_id)
            .await?
            .context("the reconcile run vanished")?;
        if run.status.is_final() {
            return Ok(Reconciled {
                run_id,
                kind: run.kind,
                cause: run.cause,
                started_by: run.started_by,
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
