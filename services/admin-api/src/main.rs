//! `admin-api`: serve the admin API (the default command), or `migrate` (the Helm chart's
//! migration Job runs `admin-api migrate`).

use admin_api::{Application, Settings};
use anyhow::Context as _;
use cardsync_runtime::Service;
use std::process::ExitCode;

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
