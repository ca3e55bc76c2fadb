//! The admin API: the one way to change cardsync's configuration (tenants, Graph connections,
//! scope, field rules), to read cards and runs, to ask for syncs and to fix dead letters. Every
//! route but health, metrics and the OpenAPI document needs a bearer token (`cardsync-auth`):
//! `reader` for reads, `admin` for changes, and a tenant claim, when configured, limits a caller
//! to its own tenants. Every change is audited (`admin_audit`). The `cardsync` CLI is its client.

pub mod error;
pub mod openapi;
pub mod requests;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod state;
pub mod tenant_keys;

pub use settings::Settings;
pub use startup::Application;
