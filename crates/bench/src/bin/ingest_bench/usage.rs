//! CPU and disk use per phase, from `/proc`: the webhook, RabbitMQ, this load generator,
//! interrupts and steal, every other process, and what the disks wrote.

use cardsync_bench::{CpuCores, CpuProbe, CpuTimes, broker_process_ids, round2};
use serde_json::{Value, json};
use std::path::Path;
use tokio::time::Instant;

/// CPU and disk use per phase: the webhook, RabbitMQ, this load generator and the rest.
pub(crate) struct UsageProbe {
    pub(crate) cpu: CpuProbe,
    /// The webhook, then RabbitMQ's VM(s): looked up once, as neither restarts during a run.
    pub(crate) watched: [Vec<u32>; 2],
}

/// Counters at one moment.
#[derive(Debug, Clone)]
pub(crate) struct Usage {
    at: Instant,
    disk: DiskCounters,
    broker_write_bytes: u64,
    cpu: CpuTimes<2>,
}

/// Cores used during a phase (each between 0 and the number of CPUs), and disk writes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CpuSplit {
    pub(crate) webhook: f64,
    pub(crate) broker: f64,
    pub(crate) bench: f64,
    /// irq + softirq: mostly loopback TCP, which no process is charged for.
    pub(crate) interrupts: f64,
    /// Taken by the hypervisor.
    pub(crate) steal: f64,
    /// Every other process on the machine.
    pub(crate) other: f64,
    pub(crate) idle: f64,
    /// MB the machine wrote to its disks.
    pub(crate) disk_written_mb: f64,
    /// Of which RabbitMQ (its WAL and segment files).
    pub(crate) broker_written_mb: f64,
    /// Share of the phase the busiest disk had I/O in flight.
    pub(crate) disk_busy: f64,
}

impl UsageProbe {
    pub(crate) fn new(webhook: u32) -> Self {
        Self {
            cpu: CpuProbe::new(),
            watched: [vec![webhook], broker_process_ids()],
        }
    }

    pub(crate) fn broker(&self) -> &[u32] {
        &self.watched[1]
    }

    pub(crate) fn snapshot(&self) -> Usage {
        Usage {
            at: Instant::now(),
            disk: disk_counters(),
            broker_write_bytes: self
                .broker()
                .iter()
                .map(|pid| process_write_bytes(*pid))
                .sum(),
            cpu: self.cpu.snapshot(&self.watched),
        }
    }

    /// Use since `before`.
    pub(crate) fn since(&self, before: &Usage) -> CpuSplit {
        let now = self.snapshot();
        let Some(CpuCores {
            groups: [webhook, broker],
            bench,
            interrupts,
            steal,
            other,
            idle,
        }) = self.cpu.cores_between(&before.cpu, &now.cpu)
        else {
            return CpuSplit::default();
        };
        let wall_ms = now.at.duration_since(before.at).as_secs_f64() * 1000.0;
        let megabytes = |bytes: u64| bytes as f64 / 1_000_000.0;
        CpuSplit {
            disk_written_mb: megabytes(
                now.disk
                    .sectors_written
                    .saturating_sub(before.disk.sectors_written)
                    * 512,
            ),
            broker_written_mb: megabytes(
                now.broker_write_bytes
                    .saturating_sub(before.broker_write_bytes),
            ),
            disk_busy: if wall_ms > 0.0 {
                (now.disk.busy_ms.saturating_sub(before.disk.busy_ms) as f64 / wall_ms).min(1.0)
            } else {
                0.0
            },
            webhook,
            broker,
            bench,
            interrupts,
            steal,
            other,
            idle,
        }
    }
}

impl CpuSplit {
    /// What the machine wrote apart from RabbitMQ (filesystem journal included).
    pub(crate) fn other_written_mb(&self) -> f64 {
        (self.disk_written_mb - self.broker_written_mb).max(0.0)
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "webhook": round2(self.webhook),
            "rabbitmq": round2(self.broker),
            "load_generator": round2(self.bench),
            "irq_softirq": round2(self.interrupts),
            "steal": round2(self.steal),
            "other_processes": round2(self.other),
            "idle": round2(self.idle),
            "disk": {
                "written_mb": round2(self.disk_written_mb),
                "rabbitmq_written_mb": round2(self.broker_written_mb),
                "busy_pct": round2(self.disk_busy * 100.0),
            },
        })
    }

    pub(crate) fn short(&self) -> String {
        format!(
            "{:.2}/{:.2}/{:.2}/{:.2}/{:.2}/{:.2} d{:.0}%",
            self.webhook,
            self.broker,
            self.bench,
            self.interrupts + self.steal,
            self.other,
            self.idle,
            self.disk_busy * 100.0
        )
    }
}

/// Whole-disk I/O counters from `/proc/diskstats`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DiskCounters {
    /// Sectors (512 bytes) written, summed over disks.
    sectors_written: u64,
    /// Milliseconds with I/O in flight, of the busiest disk.
    busy_ms: u64,
}

pub(crate) fn disk_counters() -> DiskCounters {
    let stats = std::fs::read_to_string("/proc/diskstats").unwrap_or_default();
    let mut counters = DiskCounters::default();
    for line in stats.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(name) = fields.get(2) else { continue };
        // Whole disks only (partitions would count twice); no RAM-backed devices.
        let virtual_device = ["loop", "ram", "zram"].iter().any(|p| name.starts_with(p));
        if virtual_device || !Path::new(&format!("/sys/block/{name}")).exists() {
            continue;
        }
        let field = |index: usize| {
            fields
                .get(index)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        counters.sectors_written += field(9);
        counters.busy_ms = counters.busy_ms.max(field(12));
    }
    counters
}

/// Bytes `pid` caused to be written to storage (0 if unreadable).
pub(crate) fn process_write_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|line| line.strip_prefix("write_bytes:"))
                .and_then(|value| value.trim().parse().ok())
        })
        .unwrap_or(0)
}
