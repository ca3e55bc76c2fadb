//! The subscription manager: keeps every connected tenant's Microsoft Graph change-notification
//! subscriptions alive (`/users`, and `/groups` for tenants scoped to groups). It creates them on
//! connect with a pending registration the webhook can verify before Graph's 201 returns, renews
//! them daily (four weeks before they would lapse), recreates them when Graph lost them (with a
//! catch-up delta round), acts on lifecycle notifications, and, on the one replica holding the
//! monitor lease, compares Graph's list with the registry.

pub mod clock;
pub mod lifecycle;
pub mod manager;
pub mod metrics;
pub mod monitor;

mod settings;
mod startup;

pub use clock::Clock;
pub use manager::{Manager, ManagerError, Outcome, PassReport};
pub use settings::{ManagerSettings, Settings};
pub use startup::Application;
