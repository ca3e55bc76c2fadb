//! The card-writer: applies `CardCommand`s from the live and bulk queues to PostgreSQL, one
//! transaction per command with the version check inside it (invariant 4), merges with the
//! tenant's field rules (`cardsync-rules`), and publishes `CardEvent`s through a transactional
//! outbox. Its HTTP server carries health and metrics only: cards are read and edited through
//! the admin API (bearer tokens), which writes local edits with `cardsync-cards`.

// Public for the integration tests (tests/api), which drive batches, commands and the relay
// directly; the rest is reached through the re-exports below.
pub mod apply;
pub mod command;
pub mod handler;
pub mod relay;

mod dedup;
mod metrics;
mod settings;
mod startup;

pub use handler::{CommandHandler, CommandQueue};
pub use settings::Settings;
pub use startup::Application;
