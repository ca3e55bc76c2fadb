//! A stored connection (credential opened) as the Graph client takes it: shared by the rounds
//! and the admin API's connection test, so both sign in exactly alike.

use cardsync_graph::{AssertionAlgorithm, Credential, TenantConnection};
use cardsync_store::connections::{Connection, CredentialKind};
use secrecy::ExposeSecret as _;

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
