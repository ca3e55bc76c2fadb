//! `delta-worker`: run delta rounds (the default command), or `migrate`.

use anyhow::Context as _;
use cardsync_runtime::Service;
use delta_worker::{Application, Settings};
use std::process::ExitCode;

/// mimalloc returns freed memory to the system; glibc's allocator kept the memory of a burst of
/// connections for good (the webhook: 33 MB before 10,000 concurrent handshakes, 134 MB long
/// after they closed).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
