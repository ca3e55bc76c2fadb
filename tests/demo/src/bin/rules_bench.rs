//! The rules benchmark (issue 15): a rule change on a synced tenant of `--users` users (100,000
//! by default), through the operator's CLI against the running services. For each change: the
//! dry run (wall time at the CLI and the API's own figure, three times: the first reads a cold
//! cache), then the save that applies it, timed until the apply run ended (every card command
//! applied); peak memory is each process's `VmHWM`. The last line is one JSON object.

use anyhow::{Context as _, bail, ensure};
use cardsync_demo::{Pipeline, PipelineConfig, pipeline, section};
use cardsync_store::runs::{self, RunStatus};
use clap::Parser;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(
    name = "rules_bench",
    about = "Rules dry run and apply over a synced tenant"
)]
struct Cli {
    /// Users to seed.
    #[arg(long, default_value_t = 100_000)]
    users: usize,
    /// Dry runs per rule change.
    #[arg(long, default_value_t = 3)]
    dry_runs: usize,
    /// How long the initial sync and each apply may take, seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Where the service binaries are (default: next to this one).
    #[arg(long)]
    bin_dir: Option<std::path::PathBuf>,
    /// Card list requests per second in the list phase (0: no list phase).
    #[arg(long, default_value_t = 200)]
    list_rate: u32,
    /// How long the list phase runs, seconds.
    #[arg(long, default_value_t = 20)]
    list_seconds: u64,
    /// PostgreSQL (a database of the run's own is made on this server and dropped after).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/cardsync")]
    postgres_url: String,
}

/// A rule change: what it is, and how it changes the rules document.
type Change = (&'static str, fn(&mut Value));

/// The rule changes measured: one the snapshot previews, one that needs an enumeration.
fn changes() -> [Change; 2] {
    [
        ("job titles upper case, business phones first", |rules| {
            rules["fields"]["job_title"]["source"] = json!("upper(jobTitle)");
            rules["phone_order"] = json!("business_first");
        }),
        (
            "a custom field from officeLocation (not selected before)",
            |rules| {
                rules["custom_fields"] =
                    json!({"office": {"expression": "coalesce(officeLocation, \"remote\")"}});
            },
        ),
    ]
}

async fn measure(pipeline: &Pipeline, cli: &Cli) -> anyhow::Result<Value> {
    let tenant = pipeline.tenant_text();
    let mut results = Vec::new();
    for (label, change) in changes() {
        section(&format!("rule change: {label}"));
        pipeline.settle().await?;
        let shown: Value = serde_json::from_str(
            &pipeline.cardsync(&["rules", "show", "--tenant", &tenant, "-o", "json"])?,
        )?;
        let mut rules = shown["rules"].clone();
        change(&mut rules);
        let file = pipeline
            .config
            .logs
            .join(format!("rules-{}.json", Uuid::new_v4()));
        std::fs::write(&file, serde_json::to_vec_pretty(&rules)?)?;
        let file = file.display().to_string();

        let mut dry_runs = Vec::new();
        let mut preview = Value::Null;
        for _ in 0..cli.dry_runs {
            let started = Instant::now();
            let text = pipeline.cardsync(&[
                "rules", "dry-run", "--tenant", &tenant, "-f", &file, "-o", "json",
            ])?;
            let wall = started.elapsed().as_secs_f64();
            preview = serde_json::from_str(&text).context("the dry run's JSON")?;
            println!(
                "dry run: {wall:.2} s at the CLI, {} ms in the API; {} users, {} cards would change, unpreviewable {}",
                preview["elapsed_ms"],
                preview["users"],
                preview["cards_changed"],
                preview["unpreviewable"]
            );
            dry_runs.push(json!({"wall_s": round(wall), "api_ms": preview["elapsed_ms"]}));
        }
        let dry_run_peak = pipeline.peak_mib_of("admin-api");

        let reconciler_before = pipeline.peak_mib_of("reconciler");
        let writer_before = pipeline.peak_mib_of("card-writer");
        let started = Instant::now();
        let saved: Value = serde_json::from_str(
            &pipeline.cardsync(&["rules", "put", "--tenant", &tenant, &file, "-o", "json"])?,
        )?;
        let run_id: Uuid = saved["apply"]["run_id"]
            .as_str()
            .context("the save started no apply")?
            .parse()?;
        let run = loop {
            let run = runs::get(&pipeline.pool, run_id)
                .await?
                .context("the run vanished")?;
            if run.status.is_final() {
                break run;
            }
            if started.elapsed() > Duration::from_secs(cli.timeout) {
                bail!(
                    "the apply is still {:?} after {} s",
                    run.status,
                    cli.timeout
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let applied = started.elapsed().as_secs_f64();
        ensure!(
            run.status == RunStatus::Succeeded,
            "the apply ended {:?}: {:?}",
            run.status,
            run.detail
        );
        println!(
            "apply: converged in {applied:.1} s; run counts {:?}",
            run.counts
        );
        results.push(json!({
            "change": label,
            "dry_run": dry_runs,
            "cards_changed": preview["cards_changed"],
            "unpreviewable": preview["unpreviewable"],
            "admin_api_peak_mib": dry_run_peak,
            "apply_converged_s": round(applied),
            "apply_counts": run.counts,
            "reconciler_peak_mib": [reconciler_before, pipeline.peak_mib_of("reconciler")],
            "card_writer_peak_mib": [writer_before, pipeline.peak_mib_of("card-writer")],
        }));
    }
    let list = if cli.list_rate > 0 {
        section(&format!(
            "card list: {} requests/s for {} s from this process",
            cli.list_rate, cli.list_seconds
        ));
        pipeline.settle().await?;
        list_load(pipeline, cli).await?
    } else {
        Value::Null
    };
    Ok(json!({"users": cli.users, "results": results, "card_list": list}))
}

/// `GET /v1/tenants/{t}/cards` at a fixed rate (open loop: each request's latency counts from
/// when it was due, so a slow answer delays no measurement), pages of 100 starting at random
/// cards, half of them filtered to active cards.
async fn list_load(pipeline: &Pipeline, cli: &Cli) -> anyhow::Result<Value> {
    let cursors: Vec<Uuid> = sqlx::query_scalar(
        "SELECT card_id FROM cards WHERE tenant_id = $1 ORDER BY random() LIMIT 1000",
    )
    .bind(pipeline.tenant)
    .fetch_all(&pipeline.pool)
    .await?;
    ensure!(!cursors.is_empty(), "no cards to list");
    let operator = pipeline.operator();
    let token = operator.token()?;
    let base = format!(
        "{}/v1/tenants/{}/cards",
        operator.server,
        pipeline.tenant_text()
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(64)
        .build()?;
    let total = u64::from(cli.list_rate) * cli.list_seconds;
    let interval = Duration::from_secs_f64(1.0 / f64::from(cli.list_rate));
    let started = tokio::time::Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    for n in 0..total {
        let due = started + interval.mul_f64(n as f64);
        tokio::time::sleep_until(due).await;
        let cursor = cursors[(n as usize * 7919) % cursors.len()];
        let url = if n % 2 == 0 {
            format!("{base}?limit=100&cursor={cursor}")
        } else {
            format!("{base}?limit=100&status=active&cursor={cursor}")
        };
        let request = http.get(url).bearer_auth(&token);
        requests.spawn(async move {
            // The whole answer, body included, counts.
            let ok = match request.send().await {
                Ok(response) if response.status().is_success() => response.bytes().await.is_ok(),
                _ => false,
            };
            (ok, due.elapsed())
        });
    }
    let mut latencies = Vec::new();
    let mut failed = 0;
    while let Some(done) = requests.join_next().await {
        let (ok, latency) = done?;
        if ok {
            latencies.push(latency);
        } else {
            failed += 1;
        }
    }
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .map_or(0.0, |latency| round(latency.as_secs_f64() * 1000.0))
    };
    let sent_for = started.elapsed().as_secs_f64();
    let summary = json!({
        "rate": cli.list_rate, "requests": total, "failed": failed,
        "p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": at(1.0),
        "seconds": round(sent_for),
        "admin_api_peak_mib": pipeline.peak_mib_of("admin-api"),
    });
    println!("card list: {summary}");
    Ok(summary)
}

fn round(seconds: f64) -> f64 {
    (seconds * 100.0).round() / 100.0
}

async fn run(cli: &Cli, slot: &mut Option<Pipeline>) -> anyhow::Result<Value> {
    // Nothing but the measured work moves the cards.
    let mut config = PipelineConfig::benchmark(
        "rules-bench",
        cli.bin_dir.as_ref(),
        cli.users,
        &cli.postgres_url,
    )?;
    // A rule change that rewrites every card is what the mass-change safety rail holds for an
    // admin; the benchmark measures the apply itself, so the rail lets it through.
    config.rail = Some((100.0, 100.0, 1_000_000));
    let pipeline = slot.insert(Pipeline::start(config).await?);
    section("initial sync");
    let started = Instant::now();
    pipeline
        .initial_sync(Duration::from_secs(cli.timeout))
        .await?;
    println!(
        "{} users synced in {:.1} s",
        cli.users,
        started.elapsed().as_secs_f64()
    );
    measure(pipeline, cli).await
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    pipeline::run_benchmark("rules_bench", async |slot| run(&cli, slot).await).await
}
