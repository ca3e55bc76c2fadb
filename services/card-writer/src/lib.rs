//! The card-writer: applies `CardCommand`s from the live and bulk queues to PostgreSQL, one
//! transaction per command with the version check inside it (invariant 4), merges with the
//! tenant's field rules (`cardsync-rules`), and publishes `CardEvent`s through a transactional
//! outbox. A small HTTP API edits cards locally, so "overwrite off" can be seen at work.

pub mod apply;
pub mod command;
pub mod dedup;
pub mod handler;
pub mod metrics;
pub mod relay;
pub mod routes;
pub mod settings;
pub mod startup;

pub use handler::{CommandHandler, CommandQueue};
pub use settings::Settings;
pub use startup::Application;
