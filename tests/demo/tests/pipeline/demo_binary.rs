//! `make demo` as a user runs it: the `cardsync-demo` binary, whose last line of output is its
//! JSON summary (the README promises `make demo | tail -1 | jq` works).

use crate::support;
use std::process::Command;

#[tokio::test]
async fn the_demos_last_line_is_its_json_summary() {
    let _slot = support::slot().await;
    let bin_dir = cardsync_demo::procs::test_binary_dir().expect("the service binaries");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_cardsync-demo"))
            .args([
                "--users",
                "40",
                "--seconds",
                "2",
                "--rate",
                "5",
                "--postgres-url",
                support::POSTGRES_SERVER,
                "--bin-dir",
            ])
            .arg(bin_dir)
            .output()
            .expect("the demo runs")
    })
    .await
    .expect("joins");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the demo failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().expect("the demo printed something");
    let summary: serde_json::Value = serde_json::from_str(last)
        .unwrap_or_else(|error| panic!("the last line is not JSON ({error}): {last}"));
    assert_eq!(summary["users"], 40, "{summary}");
    assert_eq!(summary["divergent_cards"], 0, "{summary}");
    assert_eq!(summary["duplicate_cards"], 0, "{summary}");
}
