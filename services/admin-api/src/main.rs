//! `admin-api`: serve the admin API (the default command), or `migrate` (the Helm chart's
//! migration Job runs `admin-api migrate`).

use admin_api::{Application, Settings};
use anyhow::Context as _;
use cardsync_runtime::Service;
use std::process::ExitCode;

/// mimalloc, as in every cardsync service: a profile of the rules dry run (100,000 users) found
/// glibc's malloc and free at a quarter of the admin-api's CPU, and mimalloc returns the memory
/// of a dry run's pages to the system.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    Service::new(
        "admin-api",
        "The admin API: tenants, connections, scope, rules, cards, sync and runs behind bearer tokens",
    )
    .run(|settings: Settings, shutdown| async move {
        let application = Application::build(&settings)
            .await
            .context("building the admin-api")?;
        tracing::info!(port = application.port(), "admin-api listening");
        application
            .run_until_stopped(shutdown)
            .await
            .context("serving")
    })
}
