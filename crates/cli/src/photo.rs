//! `cardsync cards photo`: a card's image, written to a file as the API serves it.

use crate::client::{Client, ClientError};
use serde_json::{Value, json};
use std::io::Write as _;
use std::path::Path;

/// Fetches the image at `path` and writes it to `file` (`-`: standard output, and nothing else
/// is printed); answers what was written.
pub(crate) async fn save(client: &Client, path: &str, file: &Path) -> Result<Value, ClientError> {
    let (bytes, content_type) = client.get_bytes(path).await?;
    if file.as_os_str() == "-" {
        std::io::stdout()
            .write_all(&bytes)
            .map_err(|error| ClientError::Local(format!("cannot write the image: {error}")))?;
        return Ok(Value::Null);
    }
    std::fs::write(file, &bytes)
        .map_err(|error| ClientError::Local(format!("cannot write {}: {error}", file.display())))?;
    Ok(json!({
        "file": file.display().to_string(),
        "bytes": bytes.len(),
        "content_type": content_type,
    }))
}
