//! Photos end to end: what graph-sim serves for a user's photo (what the delta-worker downloads)
//! and what the admin API serves for that user's card, so a test can hold the two side by side.

use crate::pipeline::Pipeline;
use anyhow::{Context as _, ensure};
use graph_sim::control_client::{CARDSYNC_PERMISSIONS, client_credentials_token};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

/// A card's photo as the admin API answered it.
#[derive(Debug, Clone)]
pub struct ServedPhoto {
    /// The HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// `ETag`, as sent (quoted).
    pub etag: String,
    /// The body.
    pub bytes: Vec<u8>,
}

/// Lowercase hex SHA-256 of `bytes`, as cards name their images.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Pipeline {
    /// The bytes graph-sim serves at `/users/{user}/photos/{size}x{size}/$value`, read as any
    /// Graph client would, with an app registration of its own.
    pub async fn graph_photo(&self, user: &str, size: u32) -> anyhow::Result<Vec<u8>> {
        let tenant = self.tenant_text();
        let app = self
            .control
            .create_secret_app(&tenant, CARDSYNC_PERMISSIONS)
            .await?;
        let secret = app.secret.context("graph-sim returned no secret")?;
        let token = client_credentials_token(
            &self.graph_plain_url,
            &tenant,
            &app.client_id,
            &secret,
            "https://graph.microsoft.com",
        )
        .await?;
        let response = reqwest::Client::new()
            .get(format!(
                "{}/v1.0/users/{user}/photos/{size}x{size}/$value",
                self.graph_plain_url
            ))
            .bearer_auth(token)
            .send()
            .await?;
        ensure!(
            response.status().is_success(),
            "graph-sim answered {} for {user}'s photo",
            response.status()
        );
        Ok(response.bytes().await?.to_vec())
    }

    /// What the admin API answers the operator for `card`'s photo.
    pub async fn card_photo(&self, tenant: Uuid, card: Uuid) -> anyhow::Result<ServedPhoto> {
        let response = reqwest::Client::new()
            .get(format!(
                "{}/v1/tenants/{tenant}/cards/{card}/photo",
                self.admin_url
            ))
            .bearer_auth(self.operator().token()?.trim())
            .send()
            .await?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let (content_type, etag) = (header("content-type"), header("etag"));
        let status = response.status().as_u16();
        Ok(ServedPhoto {
            status,
            content_type,
            etag,
            bytes: response.bytes().await?.to_vec(),
        })
    }
}
