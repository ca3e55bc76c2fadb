//! The end of a soak: the final settle and comparison of every card, the nightly reconcile, the
//! dead letters, and the report (readable lines, then one JSON line) with its verdict.

use super::schedule::{Fault, Schedule};
use super::stream::{self, Shared};
use super::{Converged, SoakConfig};
use crate::check;
use crate::pipeline::{Pipeline, Service, section};
use cardsync_bus::DeadLetters;
use cardsync_bus::Publisher;
use cardsync_proto as proto;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// One injected fault and how the pipeline came back from it.
#[derive(Debug)]
pub struct Episode {
    /// Its report kind.
    pub kind: String,
    /// What it was.
    pub fault: String,
    /// When it was due and when it was injected (from the stream's start).
    pub due: Duration,
    /// When it was injected.
    pub injected: Duration,
    /// How it converged.
    pub converged: Converged,
}

impl Episode {
    /// Records `fault`'s episode.
    pub fn new(fault: &Fault, due: Duration, injected: Duration, converged: Converged) -> Self {
        Self {
            kind: fault.kind(),
            fault: fault.to_string(),
            due,
            injected,
            converged,
        }
    }
}

/// Everything the report says.
#[derive(Debug)]
pub struct Findings {
    seed: u64,
    rate: f64,
    users: usize,
    planned: usize,
    /// Faults due after the stream ended (a slow convergence pushed them out).
    pub skipped: usize,
    /// How long the stream ran.
    pub stream_ran: Duration,
    episodes: Vec<Episode>,
    /// Reconcile runs asked for just before the reconciler was killed: (tenant, run).
    pub reconcile_runs: Vec<(Uuid, Uuid)>,
    /// Whether every guarantee held.
    pub ok: bool,
    /// The final JSON line.
    pub json: Value,
}

impl Findings {
    /// Empty findings of a soak about to run `schedule`.
    pub fn new(config: &SoakConfig, schedule: &Schedule) -> Self {
        Self {
            seed: config.seed,
            rate: config.rate,
            users: config.users,
            planned: schedule.initial.len() + schedule.stream.len(),
            skipped: 0,
            stream_ran: Duration::ZERO,
            episodes: Vec::new(),
            reconcile_runs: Vec::new(),
            ok: false,
            json: Value::Null,
        }
    }

    /// Records an episode.
    pub fn episode(&mut self, episode: Episode) {
        self.episodes.push(episode);
    }
}

/// Prints the schedule (the replay's reference).
pub fn print_schedule(config: &SoakConfig, schedule: &Schedule) {
    section(&format!(
        "fault schedule of seed {} ({} s of changes at {}/s, a fault every {} s on average; faults: {})",
        config.seed,
        config.length.as_secs(),
        config.rate,
        config.mean_gap.as_secs(),
        config
            .families
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(",")
    ));
    for fault in &schedule.initial {
        println!("  initial sync  {fault}");
    }
    for planned in &schedule.stream {
        println!("  {:>9.1} s  {}", planned.at.as_secs_f64(), planned.fault);
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// The final settle, the reconcile, the dead letters, and the report.
pub async fn finish(
    pipeline: &mut Pipeline,
    config: &SoakConfig,
    changes: &Shared,
    findings: &mut Findings,
) -> anyhow::Result<()> {
    section("the stream stopped: waiting for the pipeline to drain, then comparing every card");
    let settle_started = Instant::now();
    let deadline = settle_started + config.settle_timeout;
    let drain_timeout = Duration::from_secs(300);
    let mut rounds_asked = 0;
    let mut reports;
    loop {
        pipeline.wait_drained(drain_timeout).await?;
        reports = Vec::new();
        for tenant in pipeline.tenants.clone() {
            let snapshot = pipeline.control.snapshot(&tenant.to_string()).await?;
            reports.push((
                tenant,
                check::compare(&pipeline.pool, tenant, &snapshot).await?,
            ));
        }
        let divergent: usize = reports.iter().map(|(_, r)| r.divergent).sum();
        if divergent == 0 || Instant::now() >= deadline {
            break;
        }
        // Photos are never announced: ask for a round while they lag, as `make demo` does.
        for (tenant, report) in &reports {
            if report.photo_only > 0 {
                rounds_asked += 1;
                pipeline
                    .request_sync_for(*tenant, proto::sync_request::Depth::Info)
                    .await?;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settle = settle_started.elapsed();

    section("the nightly reconcile of every tenant");
    let mut reconciles = Vec::new();
    for tenant in pipeline.tenants.clone() {
        let reconciled = crate::reconcile::reconcile(pipeline, tenant, drain_timeout).await?;
        println!(
            "tenant {}: reconcile {} in {:.1} s: {} unannounced change(s), {} card(s) repaired",
            &tenant.to_string()[..8],
            reconciled.status.as_str(),
            reconciled.elapsed.as_secs_f64(),
            reconciled.count("unannounced"),
            reconciled.count("repaired")
        );
        reconciles.push(reconciled);
    }
    let mut interrupted = Vec::new();
    for (tenant, run_id) in &findings.reconcile_runs {
        let run = cardsync_store::runs::get(&pipeline.pool, *run_id).await?;
        let status = run.map_or("missing".to_owned(), |r| r.status.as_str().to_owned());
        interrupted.push(json!({"tenant": tenant, "run": run_id, "status": status}));
    }

    let publisher = Publisher::connect(&pipeline.bus, pipeline.topology.clone()).await?;
    let dead = DeadLetters::new(&pipeline.bus, pipeline.topology.clone(), publisher);
    let mut dead_letters = Vec::new();
    for queue in dead.queues() {
        for letter in dead.list(&queue, 1_000, |_| true).await? {
            dead_letters.push(letter);
        }
    }

    section("soak report");
    let changes = stream::lock(changes);
    let mut faults: BTreeMap<&str, usize> = BTreeMap::new();
    let mut kills: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_kind: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut unconverged = Vec::new();
    for episode in &findings.episodes {
        *faults.entry(&episode.kind).or_default() += 1;
        if let Some(service) = Service::ALL
            .iter()
            .find(|s| episode.kind.starts_with(&format!("kill {}", s.name())))
        {
            *kills.entry(service.name()).or_default() += 1;
        }
        match episode.converged.after {
            Some(after) => by_kind.entry(&episode.kind).or_default().push(ms(after)),
            None => unconverged.push(json!({
                "fault": episode.fault,
                "injected_s": episode.injected.as_secs(),
                "still_divergent": episode.converged.blockers,
            })),
        }
    }
    let mut longest = (0, String::new());
    let mut converge_json = serde_json::Map::new();
    println!(
        "{} faults injected ({} planned, {} due after the stream ended), time to converge after each:",
        findings.episodes.len(),
        findings.planned,
        findings.skipped
    );
    for (kind, values) in &mut by_kind {
        values.sort_unstable();
        let max = values.last().copied().unwrap_or_default();
        if max > longest.0 {
            longest = (max, (*kind).to_owned());
        }
        println!(
            "  {kind}: {}×, p50 {:.1} s, max {:.1} s",
            faults.get(kind).copied().unwrap_or_default(),
            percentile(values, 0.5) as f64 / 1000.0,
            max as f64 / 1000.0
        );
        converge_json.insert(
            (*kind).to_owned(),
            json!({"n": values.len(), "p50_ms": percentile(values, 0.5), "max_ms": max}),
        );
    }
    for episode in findings
        .episodes
        .iter()
        .filter(|e| e.converged.after.is_none())
    {
        println!(
            "  NOT converged within {} s: {} at {:.0} s: {}",
            config.converge_cap.as_secs(),
            episode.fault,
            episode.injected.as_secs_f64(),
            episode.converged.blockers.join("; ")
        );
    }
    let look_ms = findings
        .episodes
        .iter()
        .map(|e| ms(e.converged.look))
        .sum::<u64>()
        / (findings.episodes.len().max(1) as u64);
    println!(
        "longest time to converge: {:.1} s ({}); one look at every card took {:.1} s on average \
         (the resolution of these times)",
        longest.0 as f64 / 1000.0,
        longest.1,
        look_ms as f64 / 1000.0
    );
    let restarts = pipeline.restarts();
    println!(
        "services killed and restarted by the schedule: {}",
        if kills.is_empty() {
            "none".to_owned()
        } else {
            kills
                .iter()
                .map(|(name, n)| format!("{name} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    println!(
        "services restarted after exiting on their own: {}",
        if restarts.is_empty() {
            "none".to_owned()
        } else {
            restarts
                .iter()
                .map(|(name, n)| format!("{name} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let total = changes.total();
    println!(
        "{total} changes in {:.0} s ({:.1}/s; {} failed in graph-sim): {}",
        findings.stream_ran.as_secs_f64(),
        total as f64 / findings.stream_ran.as_secs_f64().max(1.0),
        changes.failures,
        changes
            .by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let divergent: usize = reports.iter().map(|(_, r)| r.divergent).sum();
    let photo_only: usize = reports.iter().map(|(_, r)| r.photo_only).sum();
    let duplicates: usize = reports.iter().map(|(_, r)| r.duplicates).sum();
    for (tenant, report) in &reports {
        println!(
            "tenant {}: {} directory users, {} expected cards ({} users out of scope), cards {:?}, {} divergent, {} duplicate",
            &tenant.to_string()[..8],
            report.users,
            report.expected_active,
            report.out_of_scope,
            report.statuses,
            report.divergent,
            report.duplicates
        );
        for example in &report.examples {
            println!("  diverges: {example}");
        }
    }
    println!(
        "settled {:.1} s after the stream stopped ({rounds_asked} Sync Now round(s) for photos)",
        settle.as_secs_f64()
    );
    println!("dead-lettered messages: {}", dead_letters.len());
    for letter in &dead_letters {
        println!(
            "  {} {} tenant {:?}: {} ({:?} after {:?} attempts)",
            letter.queue,
            letter.message_type,
            letter.tenant,
            letter.error.as_deref().unwrap_or("no error recorded"),
            letter.reason,
            letter.attempts
        );
    }
    let reconcile_ok = reconciles
        .iter()
        .all(|r| r.status == cardsync_store::runs::RunStatus::Succeeded);
    let ok = divergent == 0
        && duplicates == 0
        && dead_letters.is_empty()
        && unconverged.is_empty()
        && reconcile_ok;
    println!(
        "{}",
        if ok {
            "SOAK PASSED: every card matches the directory, none doubled, nothing dead-lettered"
        } else {
            "SOAK FAILED"
        }
    );
    findings.ok = ok;
    findings.json = json!({
        "ok": ok,
        "seed": findings.seed,
        "rate": findings.rate,
        "users_per_tenant": findings.users,
        "tenants": reports.len(),
        "stream_s": findings.stream_ran.as_secs(),
        "changes": total,
        "changes_by_kind": changes.by_kind,
        "faults": faults,
        "faults_planned": findings.planned,
        "faults_skipped": findings.skipped,
        "killed": kills,
        "restarted_on_their_own": restarts,
        "divergent_cards": divergent,
        "photo_only_divergent_cards": photo_only,
        "duplicate_cards": duplicates,
        "longest_converge_ms": longest.0,
        "longest_converge_kind": longest.1,
        "converge_look_ms": look_ms,
        "converge_ms_by_kind": converge_json,
        "unconverged_faults": unconverged,
        "settle_s": (settle.as_secs_f64() * 10.0).round() / 10.0,
        "dead_letters": dead_letters.len(),
        "reconcile": reconciles.iter().map(|r| json!({
            "status": r.status.as_str(),
            "unannounced": r.count("unannounced"),
            "repaired": r.count("repaired"),
        })).collect::<Vec<_>>(),
        "reconcile_runs_interrupted_by_a_kill": interrupted,
    });
    Ok(())
}
