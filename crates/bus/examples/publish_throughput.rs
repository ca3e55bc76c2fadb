//! Rough publish throughput against the local broker: a minimal lapin publish-with-confirm
//! loop versus `Publisher::publish_all`, same messages, same kind of queue.
//!
//! `cargo run --release -p cardsync-bus --example publish_throughput -- [messages] [batch] [tasks]`

use cardsync_bus::lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use cardsync_bus::lapin::{BasicProperties, Connection, ConnectionProperties};
use cardsync_bus::{BusSettings, Outgoing, Publisher, Topology, routing};
use cardsync_proto::{Cause, Envelope, GraphChange, Message as _};
use secrecy::SecretString;
use std::time::{Duration, Instant};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn change() -> GraphChange {
    GraphChange {
        envelope: Some(Envelope::new(
            "00000000-0000-0000-0000-000000000001",
            Cause::Notification,
        )),
        subscription_id: "9f1c7c0e-2d7b-4d5e-9c1a-7d0c3f1e2a4b".into(),
        resource: "Users/5b3d3f4e-8a7c-4e1b-9a2d-3c4b5a6d7e8f".into(),
        resource_id: "5b3d3f4e-8a7c-4e1b-9a2d-3c4b5a6d7e8f".into(),
        ..Default::default()
    }
}

fn arg(index: usize, default: usize) -> usize {
    std::env::args()
        .nth(index)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let total = arg(1, 50_000);
    let batch = arg(2, 50).max(1);
    let tasks = arg(3, 16).max(1);
    let prefix = format!("bench-bus-{:08x}-", rand::random::<u32>());
    let mut settings = BusSettings::new(SecretString::from(URL));
    settings.confirm_timeout = Duration::from_secs(10);
    settings.retry_delays = vec![Duration::from_secs(1)];
    settings.publish_channels = std::env::var("PUBLISH_CHANNELS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(settings.publish_channels);
    // The publisher declares retry tiers from the settings; the same here, so teardown finds them.
    let topology = Topology::new(&prefix)
        .with_exchange("graph")
        .with_queue("work", &[("graph", "change.*")])
        .with_retry_delays(&settings.retry_delays);
    let exchange = topology.name("graph");
    let key = routing::change("00000000-0000-0000-0000-000000000001");

    let admin = Connection::connect(URL, ConnectionProperties::default()).await?;
    let channel = admin.create_channel().await?;
    cardsync_bus::declare(&channel, &topology).await?;

    // Raw: one connection, one confirm channel per task, publish a window of `batch`, await its confirms.
    let connection =
        std::sync::Arc::new(Connection::connect(URL, ConnectionProperties::default()).await?);
    let raw_started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let connection = connection.clone();
        let (exchange, key) = (exchange.clone(), key.clone());
        workers.spawn(async move {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            let payload = change().encode_to_vec();
            let properties = BasicProperties::default().with_delivery_mode(2);
            for _ in 0..(total / tasks / batch) {
                let mut confirms = Vec::with_capacity(batch);
                for _ in 0..batch {
                    let options = BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    };
                    confirms.push(
                        channel
                            .basic_publish(
                                exchange.as_str().into(),
                                key.as_str().into(),
                                options,
                                &payload,
                                properties.clone(),
                            )
                            .await?,
                    );
                }
                for confirm in confirms {
                    assert!(confirm.await?.is_ack());
                }
            }
            Ok::<_, cardsync_bus::lapin::Error>(())
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    let raw_rate =
        (total / tasks / batch * tasks * batch) as f64 / raw_started.elapsed().as_secs_f64();

    // publish_all: `tasks` callers sharing one Publisher, batches of `batch`.
    let publisher = Publisher::connect(&settings, topology.clone()).await?;
    let started = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (publisher, exchange, key) = (publisher.clone(), exchange.clone(), key.clone());
        callers.spawn(async move {
            for _ in 0..(total / tasks / batch) {
                let messages = (0..batch)
                    .map(|_| Outgoing::new(&exchange, &key, &change()))
                    .collect();
                publisher.publish_all(messages).await?;
            }
            Ok::<_, cardsync_bus::PublishError>(())
        });
    }
    while let Some(done) = callers.join_next().await {
        done??;
    }
    let rate = (total / tasks / batch * tasks * batch) as f64 / started.elapsed().as_secs_f64();

    println!(
        "raw lapin publish-with-confirm: {raw_rate:>9.0} msg/s ({tasks} channels, windows of {batch})"
    );
    println!(
        "Publisher::publish_all:         {rate:>9.0} msg/s ({tasks} callers, batches of {batch})"
    );
    println!("ratio:                          {:>9.2}", rate / raw_rate);

    publisher.close().await;
    let _ = connection.close(200, "done".into()).await;
    cardsync_bus::delete(&channel, &topology).await?;
    Ok(())
}
