//! `reconciler`: consume reconcile requests (`serve`, the default), enqueue due runs and exit
//! (`due`, the CronJob), or `migrate`.

use anyhow::Context as _;
use cardsync_runtime::{Service, Task, Work};
use reconciler::{Application, Settings};
use std::process::ExitCode;

/// mimalloc returns freed memory to the system (a reconcile's pages come and go).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `reconciler due`: the CronJob's pass.
const TASKS: &[Task] = &[Task::new(
    "due",
    "Enqueue every run whose schedule is due, fail abandoned runs, and exit",
)];

fn main() -> ExitCode {
    Service::new(
        "reconciler",
        "Full reconciles of a tenant against the cards, on request and on schedule",
    )
    .with_tasks(TASKS)
    .run_work(|settings: Settings, work, shutdown| async move {
        match work {
            Work::Task(_) => reconciler::run_due(settings).await,
            Work::Serve => {
                let application = Application::build(settings)
                    .await
                    .context("building the reconciler")?;
                tracing::info!(port = application.port(), "reconciler running");
                application
                    .run_until_stopped(shutdown)
                    .await
                    .context("running")
            }
        }
    })
}
