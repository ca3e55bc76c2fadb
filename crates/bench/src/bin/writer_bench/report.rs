//! What a run reports: the cores each part of the machine used during a phase, and the printed
//! tables and JSON summary.

use crate::phases::{RawPhase, WriterPhase};
use crate::{Args, Lane, TARGET_COMMANDS_PER_S};
use cardsync_bench::{
    CpuProbe, CpuTimes, broker_process_ids, describe_machine, processes_named, round2, verdict,
    warn_about_neighbours,
};
use serde_json::{Value, json};
use tokio::time::Instant;

/// What a phase's CPU split accounts for, looked up at each snapshot (PostgreSQL starts a
/// backend per connection): the writer (none in the raw phases), PostgreSQL, RabbitMQ, Redis.
pub(crate) fn watched(writer: Option<u32>) -> [Vec<u32>; 4] {
    [
        writer.into_iter().collect(),
        processes_named("postgres", None),
        broker_process_ids(),
        processes_named("redis-server", None),
    ]
}

/// Cores used during a phase (each between 0 and the number of CPUs).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CpuSplit {
    pub(crate) writer: f64,
    pub(crate) postgres: f64,
    pub(crate) broker: f64,
    pub(crate) redis: f64,
    pub(crate) bench: f64,
    /// irq + softirq (mostly loopback TCP) and hypervisor steal.
    pub(crate) interrupts: f64,
    pub(crate) other: f64,
    pub(crate) idle: f64,
}

impl CpuSplit {
    /// Cores used since `before`, with the writer `writer` (the one `before` was taken with).
    pub(crate) fn since(cpu: &CpuProbe, before: &CpuTimes<4>, writer: Option<u32>) -> Self {
        let Some(cores) = cpu.cores_between(before, &cpu.snapshot(&watched(writer))) else {
            return Self::default();
        };
        let [writer, postgres, broker, redis] = cores.groups;
        Self {
            writer,
            postgres,
            broker,
            redis,
            bench: cores.bench,
            interrupts: cores.interrupts + cores.steal,
            other: cores.other,
            idle: cores.idle,
        }
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "card_writer": round2(self.writer),
            "postgres": round2(self.postgres),
            "rabbitmq": round2(self.broker),
            "redis": round2(self.redis),
            "load_generator": round2(self.bench),
            "irq_steal": round2(self.interrupts),
            "other_processes": round2(self.other),
            "idle": round2(self.idle),
        })
    }

    pub(crate) fn short(&self) -> String {
        format!(
            "{:.2}/{:.2}/{:.2}/{:.2}/{:.2}/{:.2}/{:.2}/{:.2}",
            self.writer,
            self.postgres,
            self.broker,
            self.redis,
            self.bench,
            self.interrupts,
            self.other,
            self.idle
        )
    }
}

pub(crate) struct Report {
    pub(crate) args: Args,
    pub(crate) load_before: Vec<f64>,
    pub(crate) load_after: Vec<f64>,
    pub(crate) raw: Vec<RawPhase>,
    pub(crate) writer: Vec<WriterPhase>,
    pub(crate) started: Instant,
}

impl Report {
    pub(crate) fn print(self) {
        let args = &self.args;
        let date = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let machine = describe_machine();
        println!();
        println!("card-writer throughput benchmark, {date}, {machine}");
        println!(
            "load average before {:?}, after {:?}; {} commands over {} users per phase, {} queues",
            self.load_before, self.load_after, args.commands, args.users, args.queue_type
        );
        println!(
            "cpu columns are cores used: card-writer/postgres/rabbitmq/redis/load generator/irq+steal/other processes/idle"
        );
        println!();
        println!(
            "raw PostgreSQL: card upsert (version-checked) + audit row + outbox row per command, {} connections",
            args.raw_connections
        );
        println!(
            "{:>6} {:>10} {:>8} {:>44}",
            "per tx", "commands/s", "seconds", "cpu"
        );
        let best_raw = self
            .raw
            .iter()
            .map(RawPhase::per_second)
            .fold(0.0, f64::max);
        let mut raw_json = Vec::new();
        for phase in &self.raw {
            println!(
                "{:>6} {:>10.0} {:>8.2} {:>44}",
                phase.batch,
                phase.per_second(),
                phase.elapsed.as_secs_f64(),
                phase.cpu.short()
            );
            raw_json.push(json!({
                "commands_per_transaction": phase.batch,
                "connections": args.raw_connections,
                "commands": phase.commands,
                "seconds": round2(phase.elapsed.as_secs_f64()),
                "commands_per_s": round2(phase.per_second()),
                "cpu_cores": phase.cpu.json(),
            }));
        }
        println!();
        println!(
            "card-writer (release binary, child process), queue pre-loaded, timed to the last commit"
        );
        println!(
            "{:>5} {:>10} {:>6} {:>9} {:>10} {:>10} {:>10} {:>44}",
            "queue",
            "commands/s",
            "ratio",
            "peak 1s/s",
            "applying s",
            "from start",
            "outbox s",
            "cpu"
        );
        let mut writer_json = Vec::new();
        let mut worst = f64::INFINITY;
        let mut busiest_neighbour = self.raw.iter().map(|p| p.cpu.other).fold(0.0, f64::max);
        for phase in &self.writer {
            let rate = phase.per_second();
            let ratio = if best_raw > 0.0 { rate / best_raw } else { 0.0 };
            if phase.lane == Lane::Live {
                worst = worst.min(rate);
            }
            busiest_neighbour = busiest_neighbour.max(phase.cpu.other);
            println!(
                "{:>5} {:>10.0} {:>6.2} {:>9.0} {:>10.2} {:>10.2} {:>10.2} {:>44}",
                phase.lane.label(),
                rate,
                ratio,
                phase.peak_rate,
                phase.applying.as_secs_f64(),
                phase.from_start.as_secs_f64(),
                phase.outbox_drained.as_secs_f64(),
                phase.cpu.short()
            );
            writer_json.push(json!({
                "queue": phase.lane.label(),
                "commands": phase.commands,
                "commands_per_s": round2(rate),
                "ratio_to_raw": round2(ratio),
                "peak_1s_per_s": round2(phase.peak_rate),
                "applying_seconds": round2(phase.applying.as_secs_f64()),
                "seconds_from_start": round2(phase.from_start.as_secs_f64()),
                "outbox_drained_seconds": round2(phase.outbox_drained.as_secs_f64()),
                "cpu_cores": phase.cpu.json(),
            }));
        }
        if !worst.is_finite() {
            worst = self
                .writer
                .iter()
                .map(WriterPhase::per_second)
                .fold(0.0, f64::max);
        }
        warn_about_neighbours(busiest_neighbour);
        println!();
        println!(
            "target >= {TARGET_COMMANDS_PER_S:.0} commands/s (live queue): {worst:.0}, {}",
            verdict(worst >= TARGET_COMMANDS_PER_S)
        );
        println!(
            "ratio to the best raw PostgreSQL rate ({best_raw:.0}/s): {:.2}",
            if best_raw > 0.0 {
                worst / best_raw
            } else {
                0.0
            }
        );
        let summary = json!({
            "bench": "card_writer_throughput",
            "date": date,
            "machine": machine,
            "load_before": self.load_before,
            "load_after": self.load_after,
            "queue_type": args.queue_type,
            "users": args.users,
            "commands": args.commands,
            "run_seconds": round2(self.started.elapsed().as_secs_f64()),
            "max_other_processes_cores": round2(busiest_neighbour),
            "raw": raw_json,
            "writer": writer_json,
            "targets": {
                "commands_per_s": {
                    "target": TARGET_COMMANDS_PER_S,
                    "value": round2(worst),
                    "met": worst >= TARGET_COMMANDS_PER_S,
                },
                "ratio_to_raw": round2(if best_raw > 0.0 { worst / best_raw } else { 0.0 }),
            },
        });
        println!();
        println!("{summary}");
    }
}
