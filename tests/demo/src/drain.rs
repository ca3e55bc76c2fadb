//! Waiting for a pipeline to drain: nothing queued, nothing unemitted or unrelayed, no
//! notification still being delivered, for every tenant the pipeline serves.

use crate::pipeline::Pipeline;
use anyhow::bail;
use cardsync_bus::{lapin, names};
use std::time::{Duration, Instant};

impl Pipeline {
    /// Waits until nothing is in flight: every queue of this run empty, every directory version
    /// of every tenant emitted, every card event relayed and every graph-sim delivery settled, three times in a
    /// row 500 ms apart (a message being handled is unacknowledged and not in `message_count`,
    /// so one empty look is not enough). Fails after `timeout` naming what was still busy.
    pub async fn wait_drained(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let connection = lapin::Connection::connect(
            &self.config.amqp_url,
            lapin::ConnectionProperties::default(),
        )
        .await?;
        let outcome = self.poll_drained(&connection, timeout).await;
        let _ = connection.close(0, "done".into()).await;
        outcome
    }

    async fn poll_drained(
        &mut self,
        connection: &lapin::Connection,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let channel = connection.create_channel().await?;
        let mut queues: Vec<String> = Vec::new();
        for queue in self.topology.queues() {
            // The audit sink is nobody's work.
            if queue.name.ends_with(names::CARD_EVENTS_AUDIT) {
                continue;
            }
            queues.push(queue.name.clone());
            for delay in self.topology.retry_tiers() {
                queues.push(queue.retry_queue(delay));
            }
        }
        let tenants = self.tenants.clone();
        let outbox_exchange = self.topology.name(names::CARD_EVENTS);
        let started = Instant::now();
        let mut quiet = 0;
        let mut reported = 0;
        while quiet < 3 {
            self.children.supervise()?;
            let mut busy = Vec::new();
            for queue in &queues {
                let declared = channel
                    .queue_declare(
                        queue.as_str().into(),
                        lapin::options::QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        lapin::types::FieldTable::default(),
                    )
                    .await;
                match declared {
                    Ok(q) if q.message_count() > 0 => {
                        busy.push(format!("{queue}={}", q.message_count()));
                    }
                    Ok(_) => {}
                    Err(error) => bail!("queue {queue}: {error}"),
                }
            }
            let unemitted: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM directory_users
                  WHERE tenant_id = ANY($1) AND version > emitted_version",
            )
            .bind(&tenants)
            .fetch_one(&self.pool)
            .await?;
            if unemitted > 0 {
                busy.push(format!("unemitted={unemitted}"));
            }
            // The relay deletes a row once the broker confirmed it: every row left is unrelayed.
            let unrelayed: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM outbox WHERE tenant_id = ANY($1) AND exchange = $2",
            )
            .bind(&tenants)
            .bind(&outbox_exchange)
            .fetch_one(&self.pool)
            .await?;
            if unrelayed > 0 {
                busy.push(format!("outbox={unrelayed}"));
            }
            let mut pending = 0;
            for tenant in &tenants {
                pending += self
                    .deliveries_of(*tenant)
                    .await?
                    .iter()
                    .filter(|d| matches!(d["outcome"].as_str(), Some("pending" | "retrying")))
                    .count();
            }
            if pending > 0 {
                busy.push(format!("deliveries={pending}"));
            }
            if busy.is_empty() {
                quiet += 1;
            } else {
                quiet = 0;
                let elapsed = started.elapsed().as_secs();
                if elapsed >= 10 && elapsed / 5 > reported {
                    reported = elapsed / 5;
                    println!("  still busy: {}", busy.join(", "));
                }
            }
            if started.elapsed() > timeout {
                bail!(
                    "the pipeline did not drain in {} s: {}",
                    timeout.as_secs(),
                    busy.join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    }
}
