//! Durations written as human strings (`"30s"`, `"250ms"`, `"5m"`) in files and environment variables.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// `#[serde(with = "cardsync_config::duration")]`-style deserializer for a `Duration` field.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(text.trim()).map_err(|e| {
        serde::de::Error::custom(format!("not a duration like \"30s\" or \"250ms\": {e}"))
    })
}
