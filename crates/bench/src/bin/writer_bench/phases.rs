//! The phases of a run: raw PostgreSQL at each batch size, then the card-writer on each queue,
//! each timed and checked (one card per user at its last version, one audit row and one event
//! per command).

use crate::report::{CpuSplit, Report, watched};
use crate::workload::{Workload, raw_rows, raw_transaction};
use crate::{Args, Lane, POLL, PUBLISH_CHUNK, STOP_GRACE};
use anyhow::{Context as _, bail, ensure};
use cardsync_bench::{CpuProbe, ServiceProcess, broker_process_ids, load_average, progress};
use cardsync_bus::lapin::options::QueueDeclareOptions;
use cardsync_bus::lapin::types::FieldTable;
use cardsync_bus::{Outgoing, Publisher, Topology, names};
use cardsync_proto::Cause;
use cardsync_rules::FieldRules;
use cardsync_store::tenants::{self, TenantConfig};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;
use uuid::Uuid;

/// Everything the phases share.
pub(crate) struct Bench<'a> {
    pub(crate) args: &'a Args,
    pub(crate) pool: &'a sqlx::PgPool,
    pub(crate) topology: &'a Topology,
    pub(crate) admin: &'a cardsync_bus::lapin::Channel,
    pub(crate) publisher: &'a Publisher,
    pub(crate) env: &'a [(String, String)],
    pub(crate) binary: &'a Path,
    pub(crate) log: &'a Path,
    /// The writer's `/metrics`, where the phases watch its progress.
    pub(crate) metrics_url: String,
    pub(crate) started: Instant,
}

impl<'a> Bench<'a> {
    pub(crate) async fn run(
        &self,
        load_before: Vec<f64>,
        lanes: &[Lane],
    ) -> anyhow::Result<Report> {
        let args = self.args;
        let cpu = CpuProbe::new();
        progress(
            self.started,
            format_args!(
                "{} CPUs, RabbitMQ pid(s) {:?}, load {:?}",
                cpu.cpus(),
                broker_process_ids(),
                load_before
            ),
        );
        let rules = FieldRules::default();
        let exchange = self.topology.name(names::CARD_EVENTS);

        let mut raw = Vec::new();
        for &batch in &args.raw_batches {
            self.settle().await?;
            let tenant = self.new_tenant().await?;
            let workload = Workload::new(tenant, args.users, args.commands, Cause::Notification);
            let rows = Arc::new(raw_rows(&workload, &rules, &exchange));
            let probe = cpu.snapshot(&watched(None));
            let began = Instant::now();
            let next = Arc::new(AtomicUsize::new(0));
            let mut workers = JoinSet::new();
            for _ in 0..args.raw_connections {
                let (pool, rows, next) = (self.pool.clone(), rows.clone(), next.clone());
                workers.spawn(async move {
                    loop {
                        let start = next.fetch_add(batch, Ordering::Relaxed);
                        if start >= rows.len() {
                            return Ok::<_, sqlx::Error>(());
                        }
                        let end = (start + batch).min(rows.len());
                        raw_transaction(&pool, tenant, &rows[start..end]).await?;
                    }
                });
            }
            while let Some(done) = workers.join_next().await {
                done?.context("a raw transaction failed")?;
            }
            let elapsed = began.elapsed();
            let split = CpuSplit::since(&cpu, &probe, None);
            let check = self.check(&workload).await?;
            ensure!(
                check.applied(&workload, args.users, args.commands),
                "the raw phase left the store inconsistent: {check:?}"
            );
            let phase = RawPhase {
                batch,
                commands: rows.len(),
                elapsed,
                cpu: split,
            };
            progress(
                self.started,
                format_args!(
                    "raw, {batch:>3} per transaction: {:>7.0} commands/s ({})",
                    phase.per_second(),
                    split.short()
                ),
            );
            raw.push(phase);
            // No relay publishes the raw rows; left in the outbox, the writer's relay would
            // publish them (and walk past them) during the writer phases.
            sqlx::query("DELETE FROM outbox WHERE tenant_id = $1")
                .bind(tenant)
                .execute(self.pool)
                .await
                .context("removing the raw phase's outbox rows")?;
            let _ = Command::new("sync").status();
        }

        let mut writer = Vec::new();
        for &lane in lanes {
            let phase = self.writer_phase(lane, &cpu).await?;
            writer.push(phase);
            let _ = Command::new("sync").status();
        }

        Ok(Report {
            args: args.clone(),
            load_before,
            load_after: load_average(),
            raw,
            writer,
            started: self.started,
        })
    }

    /// Before a phase: what autovacuum would have done by now (PostgreSQL may run without it;
    /// this machine's does, and earlier runs and the tests leave dead rows behind), so the
    /// planner sees the tables as they are; then a checkpoint, so every phase starts right
    /// after one (dirty pages written now, not in a burst during the phase; with the default
    /// `max_wal_size` a checkpoint otherwise fell at a different point of every run).
    pub(crate) async fn settle(&self) -> anyhow::Result<()> {
        sqlx::query("VACUUM (ANALYZE) cards, card_teams, teams, audit_log, outbox")
            .execute(self.pool)
            .await
            .context("vacuuming the card tables")?;
        sqlx::query("CHECKPOINT")
            .execute(self.pool)
            .await
            .context("checkpointing")?;
        let _ = Command::new("sync").status();
        Ok(())
    }

    pub(crate) async fn new_tenant(&self) -> anyhow::Result<Uuid> {
        let tenant = Uuid::new_v4();
        tenants::put(
            self.pool,
            &TenantConfig {
                id: tenant,
                name: format!("writer bench {tenant}"),
                rules: FieldRules::default(),
                invites_enabled: false,
                admin_roles_enabled: false,
            },
        )
        .await
        .context("storing a benchmark tenant")?;
        Ok(tenant)
    }

    /// Pre-loads the queue, starts the writer and times it until every command is applied.
    pub(crate) async fn writer_phase(
        &self,
        lane: Lane,
        cpu: &CpuProbe,
    ) -> anyhow::Result<WriterPhase> {
        let args = self.args;
        let tenant = self.new_tenant().await?;
        let workload = Workload::new(tenant, args.users, args.commands, lane.cause());
        let exchange = self.topology.name(names::CARDS);
        let routing_key = lane.routing_key(&tenant.to_string());
        let queue = self.topology.name(lane.queue());
        let loading = Instant::now();
        for chunk in workload.commands.chunks(PUBLISH_CHUNK) {
            let batch = chunk
                .iter()
                .map(|command| Outgoing::new(&exchange, &routing_key, command))
                .collect();
            self.publisher
                .publish_all(batch)
                .await
                .context("pre-loading the command queue")?;
        }
        let depth = self.depth(&queue).await?;
        ensure!(
            depth as usize == args.commands,
            "{queue} holds {depth} messages after pre-loading {}",
            args.commands
        );
        progress(
            self.started,
            format_args!(
                "{}: {} commands for {} users queued in {:.1} s; starting the writer",
                lane.label(),
                args.commands,
                args.users,
                loading.elapsed().as_secs_f64()
            ),
        );
        let events_queue = self.topology.name(names::CARD_EVENTS_AUDIT);
        let events_before = self.depth(&events_queue).await?;
        self.settle().await?;

        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let mut child = ServiceProcess::spawn(self.binary, self.env, self.log)?;
        let pid = child.pid();
        let spawned = Instant::now();
        let probe = cpu.snapshot(&watched(Some(pid)));
        let deadline = spawned + Duration::from_secs(args.timeout);
        let mut first_applied: Option<(Instant, i64)> = None;
        let mut applied_at = None;
        let mut last_report = spawned;
        let mut last_sum = 0_i64;
        let mut peak_rate = 0.0_f64;
        let mut split = None;
        let drained_at = loop {
            tokio::time::sleep(POLL).await;
            let now = Instant::now();
            ensure!(
                !child.has_exited(),
                "the card-writer exited; its log: {}",
                self.log.display()
            );
            ensure!(
                now < deadline,
                "the writer did not finish within {} s; its log: {}",
                args.timeout,
                self.log.display()
            );
            // The writer's own counters, not PostgreSQL: a query per poll would cost the
            // database it measures (a count and a sum over the tenant's cards took ~45 ms).
            let Some(progress_now) = self.progress(&client).await else {
                continue;
            };
            let (version_sum, pending) = (
                progress_now.applied as i64,
                (args.commands as u64).saturating_sub(progress_now.published),
            );
            // One command applied moves the count by one, as it moves a version sum.
            if first_applied.is_none() && version_sum > 0 {
                first_applied = Some((now, version_sum));
            }
            if now.duration_since(last_report) >= Duration::from_secs(1) {
                let rate =
                    (version_sum - last_sum) as f64 / now.duration_since(last_report).as_secs_f64();
                peak_rate = peak_rate.max(rate);
                progress(
                    self.started,
                    format_args!(
                        "{}: {version_sum:>7} applied ({rate:>6.0}/s), outbox pending {pending}",
                        lane.label()
                    ),
                );
                last_report = now;
                last_sum = version_sum;
            }
            if applied_at.is_none()
                && version_sum as usize >= args.commands
                && self.depth(&queue).await? == 0
            {
                applied_at = Some(now);
                split = Some(CpuSplit::since(cpu, &probe, Some(pid)));
            }
            if applied_at.is_some() && pending == 0 {
                break now;
            }
        };
        let Some(applied_at) = applied_at else {
            bail!("unreachable: drained before applied");
        };
        let exit = child.stop(STOP_GRACE);
        let check = self.check(&workload).await?;
        ensure!(
            check.applied(&workload, args.users, 0),
            "the writer left the store inconsistent: {check:?} (exit {exit:?}, log {})",
            self.log.display()
        );
        let dead_letters = self.depth(&format!("{queue}.dlq")).await?;
        ensure!(
            dead_letters == 0,
            "{dead_letters} commands were dead-lettered"
        );
        // The events themselves, on the queue every card event reaches.
        let events = i64::from(self.depth(&events_queue).await?) - i64::from(events_before);
        ensure!(
            events == args.commands as i64,
            "{events_queue} received {events} card events for {} commands",
            args.commands
        );
        let (first_at, first_sum) = first_applied.unwrap_or((spawned, 0));
        let phase = WriterPhase {
            lane,
            commands: args.commands,
            from_start: applied_at.duration_since(spawned),
            applying: applied_at.duration_since(first_at),
            applied_in_window: (workload.final_version_sum - first_sum).max(0) as usize,
            outbox_drained: drained_at.duration_since(spawned),
            peak_rate,
            cpu: split.unwrap_or_default(),
        };
        progress(
            self.started,
            format_args!(
                "{}: {:.0} commands/s ({}), exit {exit:?}",
                lane.label(),
                phase.per_second(),
                phase.cpu.short()
            ),
        );
        Ok(phase)
    }

    /// Commands the running writer has applied (every outcome but a failure) and events it
    /// has published, from its `/metrics`; `None` while it is not answering yet.
    pub(crate) async fn progress(&self, client: &reqwest::Client) -> Option<WriterProgress> {
        let text = client
            .get(&self.metrics_url)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let mut progress = WriterProgress::default();
        for line in text.lines() {
            let Some(value) = line
                .rsplit(' ')
                .next()
                .and_then(|value| value.parse::<f64>().ok())
            else {
                continue;
            };
            if line.starts_with("cardsync_card_writer_commands_total{")
                && !["failed", "invalid", "unknown_tenant"]
                    .iter()
                    .any(|outcome| line.contains(&format!("outcome=\"{outcome}\"")))
            {
                progress.applied += value as u64;
            } else if line.starts_with("cardsync_card_writer_outbox_published_total") {
                progress.published += value as u64;
            }
        }
        Some(progress)
    }

    pub(crate) async fn depth(&self, queue: &str) -> anyhow::Result<u32> {
        let declared = self
            .admin
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("inspecting {queue}"))?;
        Ok(declared.message_count())
    }

    /// What the store holds for a workload's tenant.
    pub(crate) async fn check(&self, workload: &Workload) -> anyhow::Result<StoreCheck> {
        let (cards, version_sum, audit, outbox): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM cards WHERE tenant_id = $1),
                    (SELECT coalesce(sum(applied_version), 0)::bigint FROM cards WHERE tenant_id = $1),
                    (SELECT count(*) FROM audit_log WHERE tenant_id = $1),
                    (SELECT count(*) FROM outbox WHERE tenant_id = $1)",
        )
        .bind(workload.tenant)
        .fetch_one(self.pool)
        .await?;
        Ok(StoreCheck {
            cards,
            version_sum,
            audit,
            outbox,
        })
    }
}

/// A running writer's counters.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct WriterProgress {
    applied: u64,
    published: u64,
}

/// Rows of one tenant after a phase.
#[derive(Debug)]
pub(crate) struct StoreCheck {
    cards: i64,
    version_sum: i64,
    audit: i64,
    outbox: i64,
}

impl StoreCheck {
    /// Exactly once: one card per user at its last version, one audit row per command, and
    /// `outbox` rows left (one per command when no relay ran, none once the relay published).
    fn applied(&self, workload: &Workload, users: usize, outbox: usize) -> bool {
        let commands = workload.commands.len() as i64;
        self.cards == users as i64
            && self.version_sum == workload.final_version_sum
            && self.audit == commands
            && self.outbox == outbox as i64
    }
}

pub(crate) struct RawPhase {
    pub(crate) batch: usize,
    pub(crate) commands: usize,
    pub(crate) elapsed: Duration,
    pub(crate) cpu: CpuSplit,
}

impl RawPhase {
    pub(crate) fn per_second(&self) -> f64 {
        self.commands as f64 / self.elapsed.as_secs_f64()
    }
}

pub(crate) struct WriterPhase {
    pub(crate) lane: Lane,
    pub(crate) commands: usize,
    /// From spawning the process to the last command applied (start-up included).
    pub(crate) from_start: Duration,
    /// From the first poll that saw an applied command to the last one.
    pub(crate) applying: Duration,
    /// Commands applied within `applying`.
    pub(crate) applied_in_window: usize,
    /// From spawning to the last event confirmed by the broker.
    pub(crate) outbox_drained: Duration,
    /// Best one-second rate seen.
    pub(crate) peak_rate: f64,
    pub(crate) cpu: CpuSplit,
}

impl WriterPhase {
    /// The sustained rate: commands applied while applying, start-up excluded.
    pub(crate) fn per_second(&self) -> f64 {
        let seconds = self.applying.as_secs_f64();
        if seconds > 0.0 {
            self.applied_in_window as f64 / seconds
        } else {
            0.0
        }
    }
}
