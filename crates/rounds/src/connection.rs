//! A tenant's stored Graph connection as the Graph client takes it, credential opened: shared by
//! the rounds, the subscription manager and the admin API's connection test, so all of them sign
//! in exactly alike.

use cardsync_graph::{AssertionAlgorithm, Credential, TenantConnection};
use cardsync_store::connections::{self, Connection, ConnectionError, CredentialKind, Keyring};
use secrecy::ExposeSecret as _;
use sqlx::PgPool;
use uuid::Uuid;

/// The tenant's connection, `None` when it has none (never connected, or disconnected).
pub async fn open(
    pool: &PgPool,
    sealing: &Keyring,
    tenant: Uuid,
) -> Result<Option<TenantConnection>, ConnectionError> {
    Ok(connections::get(pool, sealing, tenant)
        .await?
        .map(graph_connection))
}

/// The Graph client's form of a stored connection.
pub fn graph_connection(stored: Connection) -> TenantConnection {
    let credential = match stored.kind {
        CredentialKind::Secret => Credential::Secret(stored.credential),
        CredentialKind::Federated => Credential::Federated {
            token_file: stored.credential.expose_secret().into(),
        },
        CredentialKind::Certificate => {
            // The PEM bundle holds the certificate and the private key.
            let bundle = stored.credential.expose_secret();
            Credential::Certificate {
                certificate_pem: bundle.to_owned(),
                private_key_pem: stored.credential.clone(),
                algorithm: AssertionAlgorithm::Ps256,
            }
        }
    };
    TenantConnection {
        tenant_id: stored.tenant_id.to_string(),
        client_id: stored.client_id,
        credential,
    }
}
