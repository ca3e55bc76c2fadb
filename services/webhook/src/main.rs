//! `webhook`: serve Graph's notifications (the default command), or `migrate`.

use anyhow::Context as _;
use cardsync_runtime::Service;
use std::process::ExitCode;
use webhook::{Application, Settings};

fn main() -> ExitCode {
    Service::new(
        "webhook",
        "Receives Microsoft Graph notifications for cardsync",
    )
    .run(|settings: Settings, shutdown| async move {
        let application = Application::build(&settings)
            .await
            .context("building the webhook")?;
        tracing::info!(port = application.port(), "webhook listening");
        application
            .run_until_stopped(shutdown)
            .await
            .context("serving HTTP")
    })
}
