//! Opening a connection: bounded in time, named so operators (and tests) can find it, and with
//! the topology declared before anyone uses it.

use crate::error::BusError;
use crate::topology::{self, Topology};
use lapin::{Channel, Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

/// How long a polite close (channels, then the connection) may take in all. The close only
/// tells the broker what the dropped socket would tell it a moment later, so a stopping service
/// waits no longer than this for a slow or silent broker, whatever its `connect_timeout`.
pub(crate) const CLOSE_BUDGET: Duration = Duration::from_secs(2);

/// Closes `channels`, then `connection` (so lapin does not report the connection's close racing
/// with channels still open), within [`CLOSE_BUDGET`] in all; past it, what is left is dropped.
pub(crate) async fn close_politely<'a>(
    channels: impl IntoIterator<Item = &'a Channel>,
    connection: Option<&Connection>,
    reason: &str,
) {
    let polite = async {
        futures_util::future::join_all(
            channels
                .into_iter()
                .map(|channel| channel.close(200, reason.into())),
        )
        .await;
        if let Some(connection) = connection {
            let _ = connection.close(200, reason.into()).await;
        }
    };
    if tokio::time::timeout(CLOSE_BUDGET, polite).await.is_err() {
        tracing::warn!(budget = ?CLOSE_BUDGET, "the broker did not answer the close in time; dropping the connection");
    }
}

/// A `connection_name` client property unique to this process and purpose, e.g.
/// `cardsync-bus publisher 4f3a…`. It shows in the management UI and `rabbitmqctl`.
pub(crate) fn connection_name(role: &str) -> String {
    format!("cardsync-bus {role} {:016x}", rand::random::<u64>())
}

/// Connects and declares `topology` on a short-lived channel, all within `timeout`.
pub(crate) async fn connect(
    url: &SecretString,
    name: &str,
    timeout: Duration,
    topology: &Topology,
) -> Result<Connection, BusError> {
    let attempt = async {
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let connection = Connection::connect(url.expose_secret(), properties)
            .await
            .map_err(BusError::Connect)?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|source| BusError::Channel {
                operation: "channel.open",
                source,
            })?;
        topology::declare(&channel, topology).await?;
        // Best effort: the channel is dropped (and closed) either way.
        let _ = channel.close(200, "declared".into()).await;
        Ok(connection)
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| BusError::ConnectTimeout(timeout))?
}
