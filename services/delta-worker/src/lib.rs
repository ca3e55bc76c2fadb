//! The delta-worker: turns Graph change notifications and sync requests into per-tenant delta
//! rounds (coalesced, one at a time per tenant across replicas), merges what Graph reports into
//! a durable directory snapshot, maps users through the tenant's field rules and emits versioned
//! card commands; a safety poll covers the notifications Graph loses without telling.

pub mod coalesce;
pub mod handlers;
pub mod lease;
pub mod merge;
pub mod metrics;
pub mod round;
pub mod settings;
pub mod startup;

pub use settings::Settings;
pub use startup::Application;
