//! Secrets never leave (issue 19 §4): a pipeline runs with known secrets (the app's client secret,
//! the credential sealing key, the subscriptions' clientStates), is poked with bad requests, and
//! then every log line, every `/metrics` scrape and every error body it produced is searched for
//! them, and for any bearer token (a JWT starts with `eyJ`).

use crate::support::{self, Setup};
use anyhow::ensure;
use base64::Engine as _;
use cardsync_demo::Service;
use secrecy::ExposeSecret as _;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn no_secret_reaches_a_log_a_metric_or_an_error_body() {
    let key: [u8; 32] = rand::random();
    let sealing_key = base64::engine::general_purpose::STANDARD.encode(key);
    let mut setup = Setup::new("secrets", 20);
    setup
        .env
        .push(("CARDSYNC__SECRETS__CREDENTIAL_KEY", sealing_key.clone()));
    support::run(setup, async |p| {
        p.initial_sync(Duration::from_secs(90)).await?;
        let tenant = p.tenant_text();
        support::retitle_one(p, "Secret").await?;

        let mut secrets = vec![
            (
                "the client secret",
                p.client_secret.expose_secret().to_owned(),
            ),
            ("the credential sealing key", sealing_key.clone()),
        ];
        for delivery in p.deliveries().await? {
            if let Some(state) = delivery["notification"]["clientState"].as_str() {
                secrets.push(("a subscription's clientState", state.to_owned()));
            }
        }
        ensure!(
            secrets.len() > 2,
            "graph-sim delivered no notification with a clientState to look for"
        );

        // What an outsider can make the services say.
        let http = reqwest::Client::new();
        let mut said = Vec::new();
        let webhook = p.service_url(Service::Webhook)?;
        let forged = json!({"value": [{
            "subscriptionId": uuid::Uuid::new_v4(),
            "clientState": secrets[2].1,
            "changeType": "updated",
            "resource": "Users/x",
            "tenantId": tenant,
        }]});
        for body in [forged.to_string(), "{not json".to_owned(), "[]".to_owned()] {
            let response = http
                .post(format!("{webhook}/graph/notifications"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await?;
            said.push(format!(
                "webhook {}: {}",
                response.status(),
                response.text().await?
            ));
        }
        for service in Service::ALL {
            said.push(format!(
                "{} /metrics: {}",
                service.name(),
                p.metrics(service).await?
            ));
            let url = p.service_url(service)?;
            for path in ["/health/ready", "/no/such/path"] {
                let response = http.get(format!("{url}{path}")).send().await?;
                said.push(format!(
                    "{} {path} {}: {}",
                    service.name(),
                    response.status(),
                    response.text().await?
                ));
            }
        }
        // graph-sim plays Microsoft, which knows every secret; the rest is cardsync.
        for name in cardsync_demo::procs::SERVICE_BINARIES
            .into_iter()
            .filter(|name| *name != "graph-sim")
        {
            let path = p.log_path(name);
            if let Ok(log) = std::fs::read_to_string(&path) {
                ensure!(
                    name != "webhook" || log.lines().count() > 5,
                    "the webhook's log is nearly empty: nothing was searched"
                );
                said.push(format!("{} log: {log}", path.display()));
            }
        }

        for text in &said {
            let place = text.split(':').next().unwrap_or_default();
            for (what, secret) in &secrets {
                ensure!(!text.contains(secret.as_str()), "{what} appears in {place}");
            }
            ensure!(
                !text.contains("eyJ"),
                "a bearer token (JWT) appears in {place}"
            );
        }
        Ok(())
    })
    .await;
}
