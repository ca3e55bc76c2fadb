//! The run against the webhook: warm-up, the latency phase from an empty queue, then per batch
//! size the webhook's throughput and the raw publisher's, the queue purged between phases.

use crate::load::{Target, closed_loop, open_loop};
use crate::raw::{RawTemplate, raw_publish};
use crate::report::{Report, ThroughputRow};
use crate::usage::UsageProbe;
use crate::{AMQP_URL, Args, BODIES_PER_BATCH, NOTIFICATIONS_PATH};
use anyhow::{Context as _, bail, ensure};
use bytes::Bytes;
use cardsync_bench::{ServiceProcess, load_average, progress};
use cardsync_bus::lapin::options::{BasicGetOptions, QueuePurgeOptions};
use cardsync_bus::lapin::{Connection, ConnectionProperties};
use cardsync_testkit::notifications::user_change;
use serde_json::{Value, json};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// Everything the phases share.
pub(crate) struct Bench<'a> {
    pub(crate) args: &'a Args,
    pub(crate) base: String,
    pub(crate) subscription: Uuid,
    pub(crate) tenant: Uuid,
    pub(crate) client_state: String,
    pub(crate) webhook_pid: u32,
    pub(crate) queue: String,
    pub(crate) exchange: String,
    pub(crate) raw_channels: usize,
    pub(crate) admin: &'a cardsync_bus::lapin::Channel,
    /// When the process started, for the run time in the report.
    pub(crate) started: Instant,
}

impl<'a> Bench<'a> {
    pub(crate) async fn run(
        &self,
        load_before: Vec<f64>,
        webhook: &mut ServiceProcess,
    ) -> anyhow::Result<Report<'a>> {
        let args = self.args;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .http1_only()
            .build()?;
        self.wait_ready(&client, webhook).await?;
        let cpu = UsageProbe::new(self.webhook_pid);
        progress(
            self.started,
            format_args!(
                "webhook ready (pid {}), RabbitMQ pid(s) {:?}, {} CPUs, load {:?}",
                self.webhook_pid,
                cpu.broker(),
                cpu.cpu.cpus(),
                load_before
            ),
        );

        // Warm-up: connections, publisher channels, registry cache. Then take one message the
        // webhook published, as the raw publisher's template.
        let warm = self.target(&client, 50);
        closed_loop(&warm, args.concurrency, Duration::from_secs(2)).await;
        let template = self
            .admin
            .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await?
            .context("the warm-up published nothing: is the subscription registered?")?
            .delivery;
        self.purge().await?;
        let raw_connection = Connection::connect(AMQP_URL, ConnectionProperties::default()).await?;
        let raw = RawTemplate {
            exchange: self.exchange.clone(),
            routing_key: template.routing_key.to_string(),
            payload: template.data.clone(),
            properties: template.properties.clone(),
        };

        // Whatever other processes left dirty in the page cache (a build's artefacts, say) is
        // written now rather than in bursts during a phase, where RabbitMQ's fsyncs wait for it.
        let _ = Command::new("sync").status();

        // Latency first, from an empty queue, before the throughput phases leave the broker
        // busy compacting the logs of the hundreds of thousands of messages they purge.
        let target = self.target(&client, args.latency_batch);
        let probe = cpu.snapshot();
        let latency = open_loop(
            &target,
            args.rate,
            Duration::from_secs(args.latency_seconds),
        )
        .await;
        let latency_cpu = cpu.since(&probe);
        self.purge().await?;
        progress(
            self.started,
            format_args!(
                "latency: {:.0} requests/s of {} done",
                args.rate, args.latency_batch
            ),
        );

        let seconds = Duration::from_secs(args.seconds);
        let mut rows = Vec::new();
        for &batch in &args.batches {
            let target = self.target(&client, batch);
            let probe = cpu.snapshot();
            let http = closed_loop(&target, args.concurrency, seconds).await;
            let http_cpu = cpu.since(&probe);
            self.purge().await?;
            progress(self.started, format_args!("batch {batch:>3}: webhook done"));
            let probe = cpu.snapshot();
            let broker =
                raw_publish(&raw_connection, &raw, batch, self.raw_channels, seconds).await?;
            let raw_cpu = cpu.since(&probe);
            self.purge().await?;
            let row = ThroughputRow {
                batch,
                http,
                http_cpu,
                raw: broker,
                raw_cpu,
            };
            progress(self.started, row.progress());
            rows.push(row);
        }
        let _ = raw_connection.close(200, "bench done".into()).await;

        let report = Report {
            args,
            raw_channels: self.raw_channels,
            load_before,
            load_after: load_average(),
            rows,
            latency,
            latency_cpu,
            started: self.started,
        };
        Ok(report)
    }

    pub(crate) fn target(&self, client: &reqwest::Client, batch: usize) -> Target {
        let bodies = (0..BODIES_PER_BATCH)
            .map(|_| {
                let value: Vec<Value> = (0..batch)
                    .map(|_| {
                        user_change(
                            self.subscription,
                            self.tenant,
                            &self.client_state,
                            &Uuid::new_v4().to_string(),
                        )
                    })
                    .collect();
                Bytes::from(json!({ "value": value }).to_string())
            })
            .collect();
        Target {
            client: client.clone(),
            url: format!("{}{NOTIFICATIONS_PATH}", self.base),
            bodies: Arc::new(bodies),
            batch,
        }
    }

    pub(crate) async fn wait_ready(
        &self,
        client: &reqwest::Client,
        webhook: &mut ServiceProcess,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(response) = client
                .get(format!("{}/health/ready", self.base))
                .send()
                .await
                && response.status() == 200
            {
                return Ok(());
            }
            ensure!(!webhook.has_exited(), "the webhook exited during start-up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("the webhook did not become ready within 30 s: run `make services`")
    }

    pub(crate) async fn purge(&self) -> anyhow::Result<()> {
        self.admin
            .queue_purge(self.queue.as_str().into(), QueuePurgeOptions::default())
            .await
            .context("purging the benchmark queue")?;
        Ok(())
    }
}
