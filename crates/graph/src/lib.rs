//! The Microsoft Graph calls cardsync needs, and nothing more: app-only tokens (client secret,
//! certificate assertion, workload identity federation) cached per tenant, delta rounds, paging,
//! photos, transitive group members, directory-role members and change-notification
//! subscriptions.
//!
//! Every call has a timeout, spends from a per-tenant resource-unit budget (so one tenant cannot
//! exhaust the app's throttling quota), honours `Retry-After` (integer, fractional or HTTP date)
//! and otherwise backs off with jitter. Errors say what failed so callers can decide: a
//! [`GraphError::DeltaTokenExpired`] or [`GraphError::ResyncRequired`] starts a full round, a
//! [`GraphError::Throttled`] waits.

mod budget;
mod client;
mod credential;
mod delta;
mod error;
mod extensions;
mod metrics;
mod retry;
mod settings;
mod subscriptions;

pub use client::{GraphClient, PhotoMeta, RequestCost};
pub use credential::{AssertionAlgorithm, Credential, TenantConnection};
pub use delta::{DeltaPage, PageLink, delta_start_url};
pub use error::{GraphError, TokenError};
pub use extensions::ExtensionProperty;
pub use metrics::GraphMetrics;
pub use retry::parse_retry_after;
pub use settings::GraphSettings;
pub use subscriptions::{GraphSubscription, NewSubscription};

/// Entra's built-in role template ids (the same in every tenant) that cards care about.
pub mod role_templates {
    /// Global Administrator: becomes a team admin when the tenant turns admin roles on.
    pub const GLOBAL_ADMINISTRATOR: &str = "62e90394-69f5-4237-9190-012177145e10";
    /// Groups Administrator: becomes a subteam admin when the tenant turns admin roles on.
    pub const GROUPS_ADMINISTRATOR: &str = "fdd7a751-b60b-444a-984c-02652fe8fa1c";
}
