//! `card-writer`: apply card commands (the default command), or `migrate`.

use anyhow::Context as _;
use card_writer::{Application, Settings};
use cardsync_runtime::Service;
use std::process::ExitCode;

/// glibc's allocator was a fifth of the writer's CPU under load (many small, short-lived
/// allocations across the runtime's threads).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    Service::new(
        "card-writer",
        "Applies card commands to the card store and publishes card events",
    )
    .run(|settings: Settings, shutdown| async move {
        let application = Application::build(&settings)
            .await
            .context("building the card-writer")?;
        tracing::info!(port = application.port(), "card-writer listening");
        application
            .run_until_stopped(shutdown)
            .await
            .context("serving")
    })
}
