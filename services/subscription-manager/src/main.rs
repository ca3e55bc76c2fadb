//! `subscription-manager`: keep Graph subscriptions alive (the default command), or `migrate`.

use anyhow::Context as _;
use cardsync_runtime::Service;
use std::process::ExitCode;
use subscription_manager::{Application, Settings};

/// mimalloc returns freed memory to the system, as in every cardsync service.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    Service::new(
        "subscription-manager",
        "Keeps cardsync's Microsoft Graph subscriptions alive",
    )
    .run(|settings: Settings, shutdown| async move {
        let application = Application::build(settings)
            .await
            .context("building the subscription manager")?;
        tracing::info!(port = application.port(), "subscription-manager running");
        application
            .run_until_stopped(shutdown)
            .await
            .context("running")
    })
}
