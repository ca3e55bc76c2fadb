//! Why a round failed, and whether trying again may help.

use crate::lease::RedisError;
use cardsync_bus::{PublishError, Transience};
use cardsync_graph::GraphError;
use cardsync_store::StoreError;
use cardsync_store::connections::ConnectionError;
use uuid::Uuid;

/// Why a round failed.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    /// The tenant has no Graph connection configured.
    #[error("tenant {0} has no Graph connection")]
    NoConnection(Uuid),
    /// The connection cannot be read or opened.
    #[error("the tenant's connection is unusable")]
    Connection(#[source] ConnectionError),
    /// Another replica holds the tenant's lease for longer than we wait.
    #[error("another replica holds the tenant's lease")]
    LeaseBusy,
    /// The lease expired or a newer holder wrote; this replica stopped before writing.
    #[error("the tenant's lease was lost")]
    LeaseLost,
    /// The process is stopping: the round stopped before its next effect and released its
    /// lease; its trigger belongs back on its queue.
    #[error("the round was stopped by shutdown")]
    Interrupted,
    /// Graph failed.
    #[error("graph call failed")]
    Graph(#[from] GraphError),
    /// PostgreSQL failed.
    #[error("database failed")]
    Store(#[from] StoreError),
    /// The broker did not confirm the card commands.
    #[error("publishing card commands failed")]
    Publish(#[from] PublishError),
    /// Redis failed.
    #[error("redis failed")]
    Redis(#[from] RedisError),
    /// A downloaded photo could not be stored (retried: the store may be back soon).
    #[error("storing a photo failed")]
    PhotoStore(#[from] cardsync_photos::PhotoStoreError),
}

impl Transience for RoundError {
    fn is_transient(&self) -> bool {
        match self {
            RoundError::NoConnection(_) => false,
            RoundError::Connection(ConnectionError::Store(error)) | RoundError::Store(error) => {
                error.is_transient()
            }
            RoundError::Connection(_) => false,
            RoundError::Graph(error) => error.is_transient(),
            RoundError::LeaseBusy
            | RoundError::LeaseLost
            | RoundError::Interrupted
            | RoundError::Publish(_)
            | RoundError::Redis(_)
            | RoundError::PhotoStore(_) => true,
        }
    }

    fn is_interrupted(&self) -> bool {
        matches!(self, RoundError::Interrupted)
    }
}

impl From<sqlx::Error> for RoundError {
    fn from(error: sqlx::Error) -> Self {
        RoundError::Store(StoreError::from(error))
    }
}
