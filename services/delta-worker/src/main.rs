//! `delta-worker`: run delta rounds (the default command), or `migrate`.

use anyhow::Context as _;
use cardsync_runtime::Service;
use delta_worker::{Application, Settings};
use std::process::ExitCode;

fn main() -> ExitCode {
    Service::new(
        "delta-worker",
        "Delta rounds and card commands for cardsync",
    )
    .run(|settings: Settings, shutdown| async move {
        let application = Application::build(settings)
            .await
            .context("building the delta-worker")?;
        tracing::info!(port = application.port(), "delta-worker running");
        application
            .run_until_stopped(shutdown)
            .await
            .context("running")
    })
}
