//! The delta-worker: turns Graph change notifications and sync requests into per-tenant delta
//! rounds (coalesced, one at a time per tenant across replicas) and runs them with
//! `cardsync-rounds`, which merges what Graph reports into the directory snapshot, maps users
//! through the tenant's field rules and emits versioned card commands; a safety poll covers the
//! notifications Graph loses without telling.

pub mod coalesce;
pub mod handlers;
pub mod settings;
pub mod startup;

pub use settings::Settings;
pub use startup::Application;
