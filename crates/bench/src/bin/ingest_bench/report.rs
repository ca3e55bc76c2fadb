//! What a run reports: per batch size the webhook's and the raw publisher's rates, the latency
//! phase, the targets, and the JSON summary as the last line.

use crate::load::{HttpPhase, Percentiles};
use crate::raw::RawPhase;
use crate::usage::CpuSplit;
use crate::{
    Args, NOISY_NEIGHBOUR_WRITTEN_MB, TARGET_NOTIFICATIONS_PER_S, TARGET_P99_MS, TARGET_RATIO,
};
use cardsync_bench::{describe_machine, round2, verdict, warn_about_neighbours};
use serde_json::json;
use tokio::time::Instant;

/// One batch size: the webhook, then the raw publisher.
pub(crate) struct ThroughputRow {
    pub(crate) batch: usize,
    pub(crate) http: HttpPhase,
    pub(crate) http_cpu: CpuSplit,
    pub(crate) raw: RawPhase,
    pub(crate) raw_cpu: CpuSplit,
}

impl ThroughputRow {
    pub(crate) fn webhook_rate(&self) -> f64 {
        self.http.per_second(self.http.accepted)
    }

    pub(crate) fn ratio(&self) -> f64 {
        let raw = self.raw.per_second();
        if raw > 0.0 {
            self.webhook_rate() / raw
        } else {
            0.0
        }
    }

    pub(crate) fn progress(&self) -> String {
        format!(
            "batch {:>3}: webhook {:>7.0} notifications/s, raw {:>7.0}/s",
            self.batch,
            self.webhook_rate(),
            self.raw.per_second()
        )
    }
}

pub(crate) struct Report<'a> {
    pub(crate) args: &'a Args,
    pub(crate) raw_channels: usize,
    pub(crate) load_before: Vec<f64>,
    pub(crate) load_after: Vec<f64>,
    pub(crate) rows: Vec<ThroughputRow>,
    pub(crate) latency: HttpPhase,
    pub(crate) latency_cpu: CpuSplit,
    pub(crate) started: Instant,
}

impl Report<'_> {
    pub(crate) fn print(mut self) {
        let args = self.args;
        let date = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let machine = describe_machine();
        println!();
        println!("webhook ingest benchmark, {date}, {machine}");
        println!(
            "load average before {:?}, after {:?}; cpu columns are cores used: webhook/rabbitmq/load generator/irq+steal/other processes/idle, then d = disk busy",
            self.load_before, self.load_after
        );
        println!();
        println!(
            "throughput: closed loop, {} connections, {} s per batch size; raw: {} confirm channels, windows of the batch size",
            args.concurrency, args.seconds, self.raw_channels
        );
        println!(
            "{:>5} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>34} {:>9} {:>8} {:>6} {:>34}",
            "batch",
            "req/s",
            "notif/s",
            "non-202",
            "p50 ms",
            "p99 ms",
            "max ms",
            "cpu (webhook phase)",
            "raw /s",
            "raw p99",
            "ratio",
            "cpu (raw phase)"
        );
        let mut rows_json = Vec::new();
        for row in &mut self.rows {
            let rate = row.webhook_rate();
            let ratio = row.ratio();
            let http = row.http.percentiles();
            let raw_windows = Percentiles::of(&mut row.raw.windows_us);
            let non_202 = row.http.non_202();
            let non_202_count: u64 = non_202.values().sum();
            println!(
                "{:>5} {:>8.0} {:>9.0} {:>8} {:>8.1} {:>8.1} {:>8.1} {:>34} {:>9.0} {:>8.1} {:>6.2} {:>34}",
                row.batch,
                row.http.per_second(row.http.requests()),
                rate,
                non_202_count,
                http.p50,
                http.p99,
                http.max,
                row.http_cpu.short(),
                row.raw.per_second(),
                raw_windows.p99,
                ratio,
                row.raw_cpu.short(),
            );
            rows_json.push(json!({
                "batch": row.batch,
                "concurrency": args.concurrency,
                "seconds": round2(row.http.elapsed.as_secs_f64()),
                "requests": row.http.requests(),
                "requests_per_s": round2(row.http.per_second(row.http.requests())),
                "accepted_notifications": row.http.accepted,
                "notifications_per_s": round2(rate),
                "non_202": non_202,
                "response": http.json(),
                "cpu_cores": row.http_cpu.json(),
                "raw": {
                    "channels": self.raw_channels,
                    "confirmed": row.raw.confirmed,
                    "failed": row.raw.failed,
                    "per_s": round2(row.raw.per_second()),
                    "window": raw_windows.json(),
                    "cpu_cores": row.raw_cpu.json(),
                },
                "ratio": round2(ratio),
            }));
        }

        let latency = self.latency.percentiles();
        let non_202 = self.latency.non_202();
        let achieved = self.latency.per_second(self.latency.requests());
        println!();
        println!(
            "latency: open loop, {:.0} requests/s of {} notifications for {} s",
            args.rate, args.latency_batch, args.latency_seconds
        );
        println!(
            "{:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>34}",
            "req/s", "notif/s", "non-202", "p50 ms", "p99 ms", "max ms", "cpu"
        );
        println!(
            "{:>9.0} {:>9.0} {:>8} {:>8.1} {:>8.1} {:>8.1} {:>34}",
            achieved,
            self.latency.per_second(self.latency.accepted),
            non_202.values().sum::<u64>(),
            latency.p50,
            latency.p99,
            latency.max,
            self.latency_cpu.short()
        );

        let slowest = self
            .rows
            .iter()
            .map(ThroughputRow::webhook_rate)
            .fold(f64::INFINITY, f64::min);
        let lowest_ratio = self
            .rows
            .iter()
            .map(ThroughputRow::ratio)
            .fold(f64::INFINITY, f64::min);
        let latency_ok = latency.p99 < TARGET_P99_MS && non_202.is_empty();
        let busiest_neighbour = self
            .rows
            .iter()
            .flat_map(|row| [row.http_cpu.other, row.raw_cpu.other])
            .chain([self.latency_cpu.other])
            .fold(0.0, f64::max);
        warn_about_neighbours(busiest_neighbour);
        let busiest_writer = self
            .rows
            .iter()
            .flat_map(|row| {
                [
                    row.http_cpu.other_written_mb(),
                    row.raw_cpu.other_written_mb(),
                ]
            })
            .chain([self.latency_cpu.other_written_mb()])
            .fold(0.0, f64::max);
        if busiest_writer > NOISY_NEIGHBOUR_WRITTEN_MB {
            println!();
            println!(
                "warning: other processes wrote up to {busiest_writer:.0} MB to disk during a phase; RabbitMQ's fsyncs queue behind that"
            );
        }
        println!();
        println!(
            "target >= {TARGET_NOTIFICATIONS_PER_S:.0} notifications/s (every batch size): {:.0} at worst, {}",
            slowest,
            verdict(slowest >= TARGET_NOTIFICATIONS_PER_S)
        );
        println!(
            "target p99 < {TARGET_P99_MS:.0} ms at {:.0} requests/s: {:.1} ms, {}",
            args.rate,
            latency.p99,
            verdict(latency_ok)
        );
        println!(
            "target ratio >= {TARGET_RATIO} of the raw broker rate (every batch size): {:.2} at worst, {}",
            lowest_ratio,
            verdict(lowest_ratio >= TARGET_RATIO)
        );

        let summary = json!({
            "bench": "webhook_ingest",
            "date": date,
            "machine": machine,
            "load_before": self.load_before,
            "load_after": self.load_after,
            "webhook": "child process, release binary",
            "run_seconds": round2(self.started.elapsed().as_secs_f64()),
            "max_other_processes_cores": round2(busiest_neighbour),
            "max_other_writers_mb": round2(busiest_writer),
            "throughput": rows_json,
            "latency": {
                "rate": args.rate,
                "batch": args.latency_batch,
                "seconds": round2(self.latency.elapsed.as_secs_f64()),
                "requests": self.latency.requests(),
                "achieved_requests_per_s": round2(achieved),
                "accepted_notifications": self.latency.accepted,
                "non_202": non_202,
                "response": latency.json(),
                "cpu_cores": self.latency_cpu.json(),
            },
            "targets": {
                "notifications_per_s": { "target": TARGET_NOTIFICATIONS_PER_S, "worst": round2(slowest), "met": slowest >= TARGET_NOTIFICATIONS_PER_S },
                "p99_ms_at_rate": { "target": TARGET_P99_MS, "value": round2(latency.p99), "met": latency_ok },
                "ratio_to_raw": { "target": TARGET_RATIO, "worst": round2(lowest_ratio), "met": lowest_ratio >= TARGET_RATIO },
            },
        });
        println!();
        println!("{summary}");
    }
}
