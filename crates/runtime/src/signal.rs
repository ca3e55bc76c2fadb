//! SIGTERM (Kubernetes stopping a pod) or Ctrl-C becomes the [`CancellationToken`] the
//! service's run loop takes, so consumers stop taking messages, in-flight work drains under its
//! deadline, and the process exits cleanly.

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGTERM or Ctrl-C. The SIGTERM handler is installed before
/// this returns, so a stop that arrives right after start-up is not missed. Needs a Tokio
/// runtime.
pub fn cancel_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        if let Ok(mut term) = term {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            cancel.cancel();
            return;
        }
        // No SIGTERM handler (not Unix, or it could not be installed): Ctrl-C only.
        let _ = ctrl_c.await;
        cancel.cancel();
    });
    token
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn sigterm_cancels_the_token() {
        let token = cancel_on_signal();
        assert!(!token.is_cancelled());
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(std::process::id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(5), token.cancelled())
            .await
            .expect("cancelled after SIGTERM, and the process is still alive");
    }
}
