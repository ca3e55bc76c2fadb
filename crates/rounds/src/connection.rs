//! A tenant's stored Graph connection as the Graph client takes it, credential opened: shared by
//! the rounds and by the subscription manager.

use cardsync_graph::{AssertionAlgorithm, Credential, TenantConnection};
use cardsync_store::connections::{self, ConnectionError, CredentialKind, SealingKey};
use secrecy::ExposeSecret as _;
use sqlx::PgPool;
use uuid::Uuid;

/// The tenant's connection, `None` when it has none (never connected, or disconnected).
pub async fn open(
    pool: &PgPool,
    sealing: &SealingKey,
    tenant: Uuid,
) -> Result<Option<TenantConnection>, ConnectionError> {
    let Some(stored) = connections::get(pool, sealing, tenant).await? else {
        return Ok(None);
    };
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
    Ok(Some(TenantConnection {
        tenant_id: tenant.to_string(),
        client_id: stored.client_id,
        credential,
    }))
}
