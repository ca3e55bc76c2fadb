//! Card writes outside the card-writer's command consumer, shared by every service that changes
//! a card: the journal of card changes (the audit row and the card events of a change, written
//! in the change's own transaction), local edits made on the card rather than in the directory,
//! and card events as transactional outbox rows.
//!
//! - [`journal`]: what every change to a card records and announces.
//! - [`edit`]: a local field edit and a card created before any sync.
//! - [`events`]: one card event as an outbox row.
//! - [`digest`]: a finished run's digest as an outbox row.

pub mod digest;
pub mod edit;
pub mod events;
pub mod journal;

pub use digest::DigestEvents;
pub use edit::{EditError, create_local_card, edit_field};
pub use events::{EventSpec, outbox_message};
pub use journal::{Entry, Journal, Source};
