//! Progress lines and the small helpers of the printed reports.

use std::time::Instant;

/// Cores other processes may use during a phase before the figures are flagged as disturbed.
pub const NOISY_NEIGHBOUR_CORES: f64 = 0.15;

/// Prints a progress line, stamped with the seconds since `started` (a `std` or a
/// `tokio::time::Instant`, the clock of the async benchmarks).
pub fn progress(started: impl Into<Instant>, message: impl std::fmt::Display) {
    let started: Instant = started.into();
    println!("[{:>6.1} s] {message}", started.elapsed().as_secs_f64());
}

/// `value` rounded to two decimals, as figures go into the JSON summaries.
pub fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// How a report states a target: `met` or `MISSED`.
pub fn verdict(pass: bool) -> &'static str {
    if pass { "met" } else { "MISSED" }
}

/// Warns, after a table, when other processes took more than [`NOISY_NEIGHBOUR_CORES`] in
/// some phase (`busiest`: the most they took, in cores).
pub fn warn_about_neighbours(busiest: f64) {
    if busiest > NOISY_NEIGHBOUR_CORES {
        println!();
        println!(
            "warning: other processes used up to {busiest:.2} cores during a phase; rerun on a quiet machine"
        );
    }
}
