//! `webhook`: serve Graph's notifications (the default command), or `migrate`.

use anyhow::Context as _;
use cardsync_runtime::Service;
use std::process::ExitCode;

/// mimalloc returns freed memory to the system; glibc's allocator kept the memory of a burst of
/// connections for good (the webhook: 33 MB before 10,000 concurrent handshakes, 134 MB long
/// after they closed).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
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
