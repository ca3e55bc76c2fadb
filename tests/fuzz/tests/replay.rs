//! Replays every checked-in corpus file through its target on the stable toolchain: what the
//! coverage-guided runs found interesting stays tested in `make ci`.

use std::path::PathBuf;

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

#[test]
fn every_corpus_input_runs_through_its_target_without_a_panic() {
    for (target, run) in cardsync_fuzz::TARGETS {
        let dir = corpus(target);
        let entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
            .map(|entry| entry.expect("a directory entry").path())
            .collect();
        assert!(
            entries.len() >= 3,
            "{target} has a corpus of {} inputs: seed it from the tests",
            entries.len()
        );
        for path in entries {
            let data = std::fs::read(&path).expect("a corpus file");
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target} panicked on {}", path.display());
        }
    }
}
