//! The mass-change safety rail's commands: a held run's plan, approve, reject (`cardsync runs
//! …`), and a tenant's resume and thresholds (`cardsync tenant resume|safety`).

use crate::cli::RunsCommand;
use crate::client::{Client, ClientError};
use crate::commands::{Printed, enc};
use reqwest::Method;
use serde_json::{Value, json};

/// `cardsync runs plan|approve|reject`.
pub(crate) async fn runs(client: &Client, command: &RunsCommand) -> Result<Printed, ClientError> {
    let path = |run: &str, what: &str| format!("/v1/runs/{}/{what}", enc(run));
    Ok(match command {
        RunsCommand::Plan { run, limit } => (
            client
                .get(&format!("{}?limit={limit}", path(run, "plan")))
                .await?,
            &[],
        ),
        RunsCommand::Approve { run } => (
            client
                .call(Method::POST, &path(run, "approve"), Some(&json!({})))
                .await?,
            &[],
        ),
        RunsCommand::Reject { run, reason } => (
            client
                .call(
                    Method::POST,
                    &path(run, "reject"),
                    Some(&json!({ "reason": reason })),
                )
                .await?,
            &[],
        ),
    })
}

/// `cardsync tenant resume`.
pub(crate) async fn resume(client: &Client, id: &str) -> Result<Printed, ClientError> {
    Ok((
        client
            .call(
                Method::POST,
                &format!("/v1/tenants/{}/resume", enc(id)),
                Some(&json!({})),
            )
            .await?,
        &[],
    ))
}

/// `cardsync tenant safety`: shows the rail, or changes the thresholds given (the others keep
/// their values).
pub(crate) async fn safety(
    client: &Client,
    id: &str,
    removal_percent: Option<f32>,
    update_percent: Option<f32>,
    minimum: Option<i32>,
) -> Result<Printed, ClientError> {
    let path = format!("/v1/tenants/{}/safety", enc(id));
    let current = client.get(&path).await?;
    if removal_percent.is_none() && update_percent.is_none() && minimum.is_none() {
        return Ok((current, &[]));
    }
    let keep = |name: &str| current.get(name).cloned().unwrap_or(Value::Null);
    let body = json!({
        "removal_percent": removal_percent.map_or_else(|| keep("removal_percent"), |v| json!(v)),
        "update_percent": update_percent.map_or_else(|| keep("update_percent"), |v| json!(v)),
        "minimum": minimum.map_or_else(|| keep("minimum"), |v| json!(v)),
    });
    Ok((client.call(Method::PUT, &path, Some(&body)).await?, &[]))
}
