//! graph-sim integration tests: one binary, one module per behaviour area.

mod answers;
mod control;
mod delta;
mod delta_interleavings;
mod directory;
mod https;
mod identity;
mod notifications;
mod subscriptions;
mod support;
mod throttling;
