//! `make demo`: the whole of cardsync on this machine against graph-sim.
//!
//! Starts graph-sim, the webhook, the delta-worker, the card-writer and the subscription manager
//! as child processes (the real binaries, through [`cardsync_demo::Pipeline`], which the pipeline
//! tests use too), seeds a fresh tenant, waits until the subscription manager created the Graph
//! subscription (graph-sim performs the validation handshake against the webhook), runs the
//! initial sync, applies a stream of random directory changes,
//! waits for the pipeline to drain and compares every card with the directory. The last line of
//! its output is one JSON object with the figures; it exits non-zero when a card diverges.

use cardsync_demo::changes::{self, Applied, Model};
use cardsync_demo::{Database, Pipeline, PipelineConfig, check, procs, section};
use cardsync_proto as proto;
use clap::Parser;
use rand::SeedableRng as _;
use serde_json::json;
use sqlx::PgPool;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(
    name = "cardsync-demo",
    about = "cardsync end to end against graph-sim"
)]
struct Cli {
    /// Users to seed.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// How long the change stream runs, seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Directory changes per second during the stream.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Instead of the stream: one title change for each of this many distinct users, all at
    /// once (the Graph-requests-per-change benchmark).
    #[arg(long)]
    burst: Option<usize>,
    /// Seed of the directory and of the change stream.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The delta-worker's idle-tenant safety poll (shorter than production's 5m to show it).
    #[arg(long, default_value = "30s")]
    safety_poll: String,
    /// How long convergence may take after the stream stops, seconds.
    #[arg(long, default_value_t = 90)]
    settle_timeout: u64,
    /// Keep the run's exchanges and queues after it (by default they are deleted: every run
    /// has its own, and a broker collecting dozens of idle queues per run slows down).
    #[arg(long)]
    keep_topology: bool,
    /// Where the service binaries are (default: next to this one).
    #[arg(long)]
    bin_dir: Option<std::path::PathBuf>,
    /// RabbitMQ.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    /// PostgreSQL.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/cardsync")]
    postgres_url: String,
    /// Redis.
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    redis_url: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let mut pipeline: Option<Pipeline> = None;
    let outcome = tokio::select! {
        outcome = run(&cli, &mut pipeline) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    section("stopping every process the demo started");
    if let Some(pipeline) = pipeline {
        pipeline.stop().await;
    }
    match outcome {
        // The summary is the very last line, after the pipeline stopped: `| tail -1 | jq` works.
        Ok(summary) => {
            println!("{}", summary.json);
            if summary.converged {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("demo failed: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// What a finished demo run reports.
struct Summary {
    /// Every card matches the directory and none is doubled.
    converged: bool,
    /// The one-line JSON summary.
    json: serde_json::Value,
}

/// The whole demo. The started pipeline is left in `slot`, so that `main` stops it however the
/// run ends.
async fn run(cli: &Cli, slot: &mut Option<Pipeline>) -> anyhow::Result<Summary> {
    let bin_dir = match &cli.bin_dir {
        Some(dir) => dir.clone(),
        None => procs::own_dir()?,
    };
    let mut config = PipelineConfig::new("demo", bin_dir)?;
    config.users = cli.users;
    config.seed = cli.seed;
    config.amqp_url.clone_from(&cli.amqp_url);
    config.database = Database::Shared(cli.postgres_url.clone());
    config.redis_url.clone_from(&cli.redis_url);
    config.safety_poll_interval.clone_from(&cli.safety_poll);
    config.delete_topology = !cli.keep_topology;
    println!(
        "cardsync demo run {}: {} users, {} s of changes at {}/s; logs in {}",
        config.run_id,
        cli.users,
        cli.seconds,
        cli.rate,
        config.logs.display()
    );
    let pipeline = slot.insert(Pipeline::start(config).await?);
    sync_and_stream(cli, pipeline).await
}

async fn sync_and_stream(cli: &Cli, pipeline: &mut Pipeline) -> anyhow::Result<Summary> {
    let tenant = pipeline.tenant;
    let tenant_text = tenant.to_string();
    let drain_timeout = Duration::from_secs(300);

    section("5. initial sync: a full SyncRequest on the sync exchange");
    let snapshot = pipeline.control.snapshot(&tenant_text).await?;
    let expected = check::compare(&pipeline.pool, tenant, &snapshot)
        .await?
        .expected_active;
    let sync_started = Instant::now();
    pipeline
        .request_sync(proto::sync_request::Depth::Full)
        .await?;
    pipeline
        .wait_active_cards(expected, Duration::from_secs(600))
        .await?;
    let cards_after = sync_started.elapsed();
    // Let the initial round finish (its photo pass, its delta link) before counting requests.
    pipeline.wait_drained(drain_timeout).await?;
    let initial_sync = sync_started.elapsed();
    println!(
        "initial sync: {expected} cards after {:.1} s, pipeline drained after {:.1} s",
        cards_after.as_secs_f64(),
        initial_sync.as_secs_f64()
    );

    section("6. a stream of directory changes in graph-sim");
    let mut model = Model::from_snapshot(&tenant_text, &snapshot);
    let mut rng = rand::rngs::StdRng::seed_from_u64(cli.seed);
    let requests_before = pipeline.graph_requests().await?;
    let interval = Duration::from_secs_f64(1.0 / cli.rate.max(0.1));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream_started = Instant::now();
    let mut applied: Vec<Applied> = Vec::new();
    if let Some(burst) = cli.burst {
        let targets: Vec<String> = model.enabled_users().into_iter().take(burst).collect();
        applied = changes::title_burst(&pipeline.control, &tenant_text, &targets, 16).await?;
    }
    while cli.burst.is_none() && stream_started.elapsed() < Duration::from_secs(cli.seconds) {
        ticker.tick().await;
        if let Some(change) = model.apply_one(&pipeline.control, &mut rng).await? {
            applied.push(change);
        }
        pipeline.supervise()?;
    }
    let mut by_kind = std::collections::BTreeMap::<&str, usize>::new();
    for change in &applied {
        *by_kind.entry(change.kind).or_default() += 1;
    }
    println!(
        "{} changes in {:.1} s: {}",
        applied.len(),
        stream_started.elapsed().as_secs_f64(),
        by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    section("7. waiting for the pipeline to drain, then comparing every card");
    let settle_started = Instant::now();
    let deadline = settle_started + Duration::from_secs(cli.settle_timeout);
    let mut report;
    let mut rounds_asked = 0;
    let snapshot = pipeline.control.snapshot(&tenant_text).await?;
    pipeline.wait_drained(drain_timeout).await?;
    // The change phase ends when its notifications have been handled; later rounds (safety
    // poll, Sync Now for photos) are not charged to the changes.
    let requests_after = pipeline.graph_requests().await?;
    loop {
        pipeline.wait_drained(drain_timeout).await?;
        report = check::compare(&pipeline.pool, tenant, &snapshot).await?;
        if report.divergent == 0 || Instant::now() >= deadline {
            break;
        }
        // Photos are never announced (Graph sends nothing for them): the delta-worker finds them
        // with a budgeted scan in every round. Ask for a round ("Sync Now") while photos lag,
        // whatever else diverges, so that a slow photo is never mistaken for a lost change;
        // anything else must converge from the notifications (or the safety poll) alone.
        if report.photo_only > 0 {
            rounds_asked += 1;
            pipeline
                .request_sync(proto::sync_request::Depth::Info)
                .await?;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settle = settle_started.elapsed();

    section(
        "8. a full reconcile: Sync Now through the admin API (`cardsync sync`), run by the reconciler",
    );
    let reconciled = cardsync_demo::reconcile::reconcile(pipeline, tenant, drain_timeout).await?;
    println!(
        "reconcile run {} in {:.1} s: {} change(s) no notification announced, {} card(s) repaired, \
         {} command(s), {} Graph page(s){}",
        reconciled.status.as_str(),
        reconciled.elapsed.as_secs_f64(),
        reconciled.count("unannounced"),
        reconciled.count("repaired"),
        reconciled.count("commands"),
        reconciled.count("graph_pages"),
        reconciled
            .detail
            .as_deref()
            .map(|detail| format!(" ({detail})"))
            .unwrap_or_default()
    );

    let Latencies {
        measured,
        overtaken,
        unmatched,
    } = e2e_latencies(&pipeline.pool, tenant, &applied).await?;
    let mut latencies: Vec<i64> = measured.iter().map(|(_, ms)| *ms).collect();
    latencies.sort_unstable();
    let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
    let mut by_kind: std::collections::BTreeMap<&str, Vec<i64>> = std::collections::BTreeMap::new();
    for (kind, ms) in &measured {
        by_kind.entry(kind).or_default().push(*ms);
    }
    let per_change = if applied.is_empty() {
        0.0
    } else {
        (requests_after - requests_before) as f64 / applied.len() as f64
    };

    section("summary");
    println!(
        "directory users {}, expected active cards {}, cards by status {:?}",
        report.users, report.expected_active, report.statuses
    );
    println!(
        "converged {:.1} s after the stream stopped ({} Sync Now round(s) for photos)",
        settle.as_secs_f64(),
        rounds_asked
    );
    println!(
        "end to end (graph-sim change → card-writer commit, {} visible changes measured): p50 {} ms, p99 {} ms",
        latencies.len(),
        p50,
        p99
    );
    println!(
        "  not measured: {overtaken} overtaken by the user's next change before any card write, \
         {unmatched} with no card write after them"
    );
    for (kind, mut values) in by_kind {
        values.sort_unstable();
        println!(
            "  {kind}: {} changes, p50 {} ms, p99 {} ms, max {} ms",
            values.len(),
            percentile(&values, 0.50),
            percentile(&values, 0.99),
            values.last().copied().unwrap_or_default()
        );
    }
    println!(
        "Graph requests while the changes were handled: {} ({per_change:.2} per change)",
        requests_after - requests_before
    );
    println!(
        "divergent cards {} (photo only {}), duplicate cards {}",
        report.divergent, report.photo_only, report.duplicates
    );
    let memory = pipeline.peak_memory_mib();
    println!(
        "peak memory (VmHWM): {}",
        memory
            .iter()
            .map(|(name, mib)| format!("{name} {mib:.0} MiB"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for example in &report.examples {
        println!("  diverges: {example}");
    }
    let ok = report.divergent == 0
        && report.duplicates == 0
        && reconciled.status == cardsync_store::runs::RunStatus::Succeeded;
    println!(
        "{}",
        if ok {
            "every card matches the directory"
        } else {
            "CARDS DIVERGE"
        }
    );
    let json = json!({
            "users": cli.users,
            "changes": applied.len(),
            "divergent_cards": report.divergent,
            "photo_only_divergent_cards": report.photo_only,
            "restarts": pipeline.restarts(),
            "duplicate_cards": report.duplicates,
            "e2e_ms": {"p50": p50, "p99": p99},
            "graph_requests_per_change": (per_change * 1000.0).round() / 1000.0,
            "initial_sync_s": (initial_sync.as_secs_f64() * 10.0).round() / 10.0,
            "reconcile": {
                "status": reconciled.status.as_str(),
                "seconds": (reconciled.elapsed.as_secs_f64() * 10.0).round() / 10.0,
                "unannounced": reconciled.count("unannounced"),
                "repaired": reconciled.count("repaired"),
            },
            "peak_rss_mib": memory
                .iter()
                .map(|(name, mib)| (name.clone(), json!(mib.round())))
                .collect::<serde_json::Map<_, _>>(),
    });
    Ok(Summary {
        converged: ok,
        json,
    })
}

/// End-to-end latency of every visible change, with its kind: from graph-sim's `changedAtUnixMs`
/// to the first audit row of that user's card written at or after it. `audit_log.at` is the writer's
/// transaction time and one row exists per applied change, whereas `cards.updated_at` only keeps
/// the last write (and moves on no-op upserts too).
async fn e2e_latencies(
    pool: &PgPool,
    tenant: Uuid,
    applied: &[Applied],
) -> anyhow::Result<Latencies> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT c.user_id, (extract(epoch FROM a.at) * 1000)::bigint
           FROM audit_log a JOIN cards c ON c.tenant_id = a.tenant_id AND c.card_id = a.card_id
          WHERE a.tenant_id = $1 AND c.user_id IS NOT NULL
          ORDER BY a.at",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    let mut writes: HashMap<String, Vec<i64>> = HashMap::new();
    for (user, at) in rows {
        writes.entry(user).or_default().push(at);
    }
    Ok(match_latencies(&writes, applied))
}

/// What [`e2e_latencies`] found.
#[derive(Debug, Default, PartialEq, Eq)]
struct Latencies {
    /// Each measured change's kind and milliseconds to its card's commit.
    measured: Vec<(&'static str, i64)>,
    /// Visible changes the same user's next change overtook before any card write: a soft
    /// delete undone by a restore before a round saw it leaves the card as it was, so the
    /// writer's outcome is "unchanged" and no audit row marks it. Measuring it against a later
    /// write would count the wait for an unrelated change as its latency.
    overtaken: usize,
    /// Visible changes with no card write at or after them (the final check says whether the
    /// cards are right regardless).
    unmatched: usize,
}

/// Matches each visible change of `applied` with the first of its user's card `writes`
/// (commit times, ascending, in ms) at or after it; see [`Latencies`].
fn match_latencies(writes: &HashMap<String, Vec<i64>>, applied: &[Applied]) -> Latencies {
    let mut changes: HashMap<&str, Vec<i64>> = HashMap::new();
    for change in applied {
        changes
            .entry(change.user.as_str())
            .or_default()
            .push(change.changed_at_ms);
    }
    for times in changes.values_mut() {
        times.sort_unstable();
    }
    let mut latencies = Latencies::default();
    for change in applied.iter().filter(|change| change.visible) {
        let write = writes.get(&change.user).and_then(|writes| {
            writes
                .iter()
                .copied()
                .find(|at| *at >= change.changed_at_ms)
        });
        let Some(write) = write else {
            latencies.unmatched += 1;
            continue;
        };
        let next_change = changes
            .get(change.user.as_str())
            .and_then(|times| times.iter().copied().find(|at| *at > change.changed_at_ms));
        if next_change.is_some_and(|next| next < write) {
            latencies.overtaken += 1;
        } else {
            latencies
                .measured
                .push((change.kind, write - change.changed_at_ms));
        }
    }
    latencies
}

fn percentile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(kind: &'static str, user: &str, at: i64, visible: bool) -> Applied {
        Applied {
            kind,
            user: user.to_owned(),
            changed_at_ms: at,
            visible,
        }
    }

    fn writes(rows: &[(&str, &[i64])]) -> HashMap<String, Vec<i64>> {
        rows.iter()
            .map(|(user, at)| ((*user).to_owned(), at.to_vec()))
            .collect()
    }

    #[test]
    fn each_change_is_measured_to_its_users_next_card_write() {
        let applied = [
            change("title", "a", 1_000, true),
            change("title", "b", 1_010, true),
            change("title", "a", 2_000, true),
        ];
        let found = match_latencies(
            &writes(&[("a", &[900, 1_040, 2_025]), ("b", &[1_090])]),
            &applied,
        );
        assert_eq!(
            found,
            Latencies {
                measured: vec![("title", 40), ("title", 80), ("title", 25)],
                overtaken: 0,
                unmatched: 0,
            }
        );
    }

    #[test]
    fn a_change_overtaken_before_any_write_is_counted_not_measured() {
        // Soft delete at 1,000 and restore at 1,030: the card never changed, the next write is
        // the user's title change at 20,000.
        let applied = [
            change("soft_delete", "a", 1_000, true),
            change("restore", "a", 1_030, true),
            change("title", "a", 20_000, true),
        ];
        let found = match_latencies(&writes(&[("a", &[20_050])]), &applied);
        assert_eq!(found.overtaken, 2);
        assert_eq!(found.measured, vec![("title", 50)]);
        assert_eq!(found.unmatched, 0);
    }

    #[test]
    fn invisible_changes_are_skipped_and_unwritten_ones_counted() {
        let applied = [
            change("photo", "a", 1_000, false),
            change("title", "b", 1_000, true),
        ];
        let found = match_latencies(&writes(&[("a", &[1_500])]), &applied);
        assert_eq!(found.measured, Vec::<(&str, i64)>::new());
        assert_eq!(found.unmatched, 1);
        assert_eq!(found.overtaken, 0);
    }
}
