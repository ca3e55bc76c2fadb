//! What every handler shares.

use crate::settings::AdminSettings;
use cardsync_bus::{Publisher, Topology};
use cardsync_graph::GraphClient;
use cardsync_store::connections::Keyring;
use sqlx::PgPool;
use std::sync::Arc;

/// Shared state of the HTTP layer.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Configuration, cards, runs.
    pub pool: PgPool,
    /// Publishes sync requests.
    pub publisher: Publisher,
    /// Exchange and queue names.
    pub topology: Topology,
    /// Graph, for connection tests and group search.
    pub graph: GraphClient,
    /// Seals and opens Graph credentials.
    pub sealing: Arc<Keyring>,
    /// The API's own limits.
    pub admin: AdminSettings,
    /// Redis, for offboarding.
    pub redis: crate::tenant_keys::TenantKeys,
    /// The work queues' dead letters.
    pub dead_letters: cardsync_bus::DeadLetters,
    /// The photo images cards name (the store the rounds write).
    pub photos: cardsync_photos::PhotoStore,
}
