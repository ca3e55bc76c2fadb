//! `make demo` (until the sync pipeline lands): starts the real `webhook` binary against local
//! RabbitMQ and PostgreSQL, registers a subscription with the operator command, performs Graph's
//! validation handshake, posts a batch of Graph-shaped notifications (two tenants, one forged
//! item, one lifecycle event) and prints what reached the queues.

use anyhow::{Context as _, bail, ensure};
use cardsync_bus::lapin;
use cardsync_proto::{GraphChange, LifecycleEvent, Message as _};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use uuid::Uuid;

const DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/cardsync";
const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const PREFIX: &str = "demo.";

/// Stops the child webhook with SIGTERM however the demo ends.
struct Webhook(Child);

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let binary = std::env::current_exe()?
        .parent()
        .and_then(|examples| examples.parent())
        .map(|dir| dir.join("webhook"))
        .context("locating the webhook binary")?;
    ensure!(
        binary.exists(),
        "{} is missing: run `make demo`, which builds it",
        binary.display()
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let env = [
        ("CARDSYNC__HTTP__LISTEN", format!("127.0.0.1:{port}")),
        ("CARDSYNC__TOPOLOGY__PREFIX", PREFIX.to_owned()),
        ("CARDSYNC__POSTGRES__URL", DATABASE_URL.to_owned()),
        ("CARDSYNC__BUS__URL", AMQP_URL.to_owned()),
        ("CARDSYNC__TELEMETRY__LOG_FILTER", "warn".to_owned()),
    ];

    section("1. register two subscriptions with the operator command");
    let tenants = [Uuid::new_v4(), Uuid::new_v4()];
    let subscriptions = [Uuid::new_v4(), Uuid::new_v4()];
    let client_state = format!("demo-{}", Uuid::new_v4().simple());
    let expires = time::OffsetDateTime::now_utc() + time::Duration::days(2);
    let expires = expires.format(&time::format_description::well_known::Rfc3339)?;
    for (tenant, subscription) in tenants.iter().zip(&subscriptions) {
        let status = Command::new(&binary)
            .args([
                "register-subscription",
                "--id",
                &subscription.to_string(),
                "--tenant",
                &tenant.to_string(),
            ])
            .args(["--resource", "/users", "--expires-at", &expires])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("CARDSYNC_CLIENT_STATE", &client_state)
            .status()?;
        ensure!(status.success(), "register-subscription failed");
    }

    section("2. start the webhook");
    let _webhook = Webhook(
        Command::new(&binary)
            .arg("serve")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()?,
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    wait_ready(&http, &base).await?;
    println!("webhook ready on {base} (POST {base}/graph/notifications, {base}/graph/lifecycle)");

    section("3. Graph's validation handshake");
    let response = http
        .post(format!("{base}/graph/notifications?validationToken=Validation%3A+Testing+client+application+reachability"))
        .header("content-type", "text/plain; charset=utf-8")
        .send()
        .await?;
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("?").to_owned());
    println!(
        "status {} content-type {:?} body {:?}",
        response.status(),
        content_type,
        response.text().await?
    );

    section("4. post a batch: 4 changes over two tenants, 1 forged clientState, 1 lifecycle event");
    let change = |tenant: Uuid, subscription: Uuid, state: &str, user: &str| {
        serde_json::json!({
            "subscriptionId": subscription, "subscriptionExpirationDateTime": expires,
            "changeType": "updated", "resource": format!("Users/{user}"),
            "resourceData": {"@odata.type": "#Microsoft.Graph.User", "@odata.id": format!("Users/{user}"), "id": user},
            "clientState": state, "tenantId": tenant
        })
    };
    let users: Vec<String> = (0..4).map(|_| Uuid::new_v4().to_string()).collect();
    let batch = serde_json::json!({ "value": [
        change(tenants[0], subscriptions[0], &client_state, &users[0]),
        change(tenants[0], subscriptions[0], &client_state, &users[1]),
        change(tenants[1], subscriptions[1], &client_state, &users[2]),
        change(tenants[1], subscriptions[1], "forged", "attacker"),
        change(tenants[1], subscriptions[1], &client_state, &users[3]),
    ]});
    let response = http
        .post(format!("{base}/graph/notifications"))
        .json(&batch)
        .send()
        .await?;
    println!("notifications: {}", response.status());
    ensure!(response.status() == 202, "expected 202");
    let lifecycle = serde_json::json!({ "value": [{
        "subscriptionId": subscriptions[0], "subscriptionExpirationDateTime": expires,
        "tenantId": tenants[0], "clientState": client_state, "lifecycleEvent": "reauthorizationRequired"
    }]});
    let response = http
        .post(format!("{base}/graph/lifecycle"))
        .json(&lifecycle)
        .send()
        .await?;
    println!("lifecycle:     {}", response.status());

    section("5. what reached the queues");
    let connection =
        lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let changes = take_all(&channel, &format!("{PREFIX}delta-worker.changes")).await?;
    for delivery in &changes {
        let message = GraphChange::decode(delivery.data.as_slice())?;
        let envelope = message.envelope.unwrap_or_default();
        println!(
            "GraphChange    key={} tenant={} resource={} message_id={} traceparent={}",
            delivery.routing_key,
            envelope.tenant_id,
            message.resource,
            envelope.message_id,
            cardsync_bus::header_str(&delivery.properties, "traceparent").unwrap_or("-")
        );
    }
    let events = take_all(&channel, &format!("{PREFIX}subscription-manager.lifecycle")).await?;
    for delivery in &events {
        let message = LifecycleEvent::decode(delivery.data.as_slice())?;
        println!(
            "LifecycleEvent key={} subscription={} kind={:?}",
            delivery.routing_key,
            message.subscription_id,
            message.kind()
        );
    }
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("cardsync_webhook_notifications_"))
    {
        println!("{line}");
    }
    let _ = cardsync_bus::delete(&channel, &cardsync_bus::Topology::cardsync(PREFIX)).await;

    if changes.len() != 4 || events.len() != 1 {
        bail!(
            "expected 4 changes and 1 lifecycle event, got {} and {}",
            changes.len(),
            events.len()
        );
    }
    section("done: 4 changes and 1 lifecycle event queued, the forged item dropped");
    Ok(())
}

fn section(title: &str) {
    println!("\n== {title}");
}

async fn wait_ready(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    for _ in 0..200 {
        if let Ok(response) = http.get(format!("{base}/health/ready")).send().await
            && response.status() == 200
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the webhook did not become ready within 20 s")
}

async fn take_all(
    channel: &lapin::Channel,
    queue: &str,
) -> anyhow::Result<Vec<lapin::message::Delivery>> {
    let mut out = Vec::new();
    while let Some(message) = channel
        .basic_get(
            queue.into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await?
    {
        out.push(message.delivery);
    }
    Ok(out)
}
