//! The reconciler: full reconciles of a tenant against the cards, recorded as sync runs.
//!
//! - `reconciler serve` consumes `reconciler.requests` (Sync Now, due schedules): each request
//!   is one run, claimed once, kept alive by a heartbeat, ended with its counts
//!   ([`handler`]).
//! - `reconciler due` (a CronJob) records and enqueues the runs whose schedule is due, fails
//!   runs whose reconciler died, and re-enqueues lost requests ([`due`]); then it deletes the
//!   photo images nothing names any more ([`sweep_photos`]).
//!
//! The reconcile itself is a round of `crates/rounds` ([`cardsync_rounds::Mode::Reconcile`]):
//! under the tenant's lease and fence, with versions from the delta-worker's sequence.

pub mod due;
pub mod handler;
pub mod settings;
pub mod startup;

pub use settings::Settings;
pub use startup::{Application, due as run_due, sweep_photos};
