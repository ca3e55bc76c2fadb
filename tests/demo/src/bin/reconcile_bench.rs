//! The reconcile benchmark (issue 17): a full reconcile of a synced tenant of `--users` users
//! (100,000 by default) after `--drift` of them drifted with no notification announcing it.
//! The drift is a mix of what a nightly reconcile exists to catch: directory changes whose
//! notifications were lost (job titles), users disabled the same way, changed photos, and cards
//! edited in the database behind cardsync's back. The reconcile is a Sync Now through the
//! operator's CLI, timed until its run ended (every card command applied); it reports the Graph
//! requests it made (by endpoint), the commands it sent, its counts, the reconciler's peak memory
//! (`VmHWM`), and whether every card then matches the directory. The last line is one JSON object.

use anyhow::{Context as _, ensure};
use cardsync_demo::{Pipeline, PipelineConfig, Service, pipeline, reconcile, section};
use clap::Parser;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(
    name = "reconcile_bench",
    about = "A full reconcile of a synced tenant with drift"
)]
struct Cli {
    /// Users to seed.
    #[arg(long, default_value_t = 100_000)]
    users: usize,
    /// Share of the tenant's cards that drift before the reconcile.
    #[arg(long, default_value_t = 0.01)]
    drift: f64,
    /// How long the initial sync and the reconcile may take, seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Where the service binaries are (default: next to this one).
    #[arg(long)]
    bin_dir: Option<std::path::PathBuf>,
    /// PostgreSQL (a database of the run's own is made on this server and dropped after).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/cardsync")]
    postgres_url: String,
}

/// How many of the drifted users get each kind of drift, out of `total`.
#[derive(Debug, Clone, Copy)]
struct DriftPlan {
    titles: usize,
    disabled: usize,
    photos: usize,
    edited: usize,
}

impl DriftPlan {
    fn of(total: usize) -> Self {
        let disabled = total / 10;
        let photos = total / 5;
        let edited = total / 5;
        Self {
            titles: total - disabled - photos - edited,
            disabled,
            photos,
            edited,
        }
    }
}

/// Graph requests per endpoint graph-sim counted for the tenant.
async fn requests_by_endpoint(pipeline: &Pipeline) -> anyhow::Result<BTreeMap<String, u64>> {
    let counters = pipeline
        .control
        .counters(Some(&pipeline.tenant_text()))
        .await?;
    let mut by_endpoint = BTreeMap::new();
    // `{tenant: {endpoint: {requests, byStatus}}}` or, filtered, `{endpoint: {…}}`.
    let endpoints = counters
        .get(pipeline.tenant_text())
        .unwrap_or(&counters)
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (endpoint, counts) in endpoints {
        if let Some(requests) = counts["requests"].as_u64() {
            by_endpoint.insert(endpoint, requests);
        }
    }
    Ok(by_endpoint)
}

/// Makes the drift: every notification is lost from here on, so only a reconcile can find it.
async fn drift(pipeline: &Pipeline, plan: DriftPlan) -> anyhow::Result<()> {
    let tenant = pipeline.tenant_text();
    let total = plan.titles + plan.disabled + plan.photos + plan.edited;
    let users: Vec<String> = sqlx::query_scalar(
        "SELECT user_id FROM cards
          WHERE tenant_id = $1 AND status = 'active' AND user_id IS NOT NULL
          ORDER BY md5(user_id) LIMIT $2",
    )
    .bind(pipeline.tenant)
    .bind(i64::try_from(total)?)
    .fetch_all(&pipeline.pool)
    .await?;
    ensure!(
        users.len() == total,
        "only {} active cards to drift",
        users.len()
    );
    pipeline
        .control
        .set_delivery(json!({"lossProbability": 1.0}))
        .await?;
    let (titles, rest) = users.split_at(plan.titles);
    let (disabled, rest) = rest.split_at(plan.disabled);
    let (photos, edited) = rest.split_at(plan.photos);
    for (n, user) in titles.iter().enumerate() {
        pipeline
            .control
            .update_user(&tenant, user, json!({"jobTitle": format!("Drifted {n}")}))
            .await?;
    }
    for user in disabled {
        pipeline
            .control
            .update_user(&tenant, user, json!({"accountEnabled": false}))
            .await?;
    }
    for (n, user) in photos.iter().enumerate() {
        // A tiny PNG-signed body: graph-sim serves whatever bytes it was given.
        let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
        bytes.extend_from_slice(format!("drifted photo {n} of {user}").as_bytes());
        pipeline
            .control
            .set_photo(&tenant, user, bytes, "image/png")
            .await?;
    }
    let edited: Vec<String> = edited.to_vec();
    let changed = sqlx::query(
        "UPDATE cards SET fields = jsonb_set(fields::jsonb, '{name,value}', '\"Mallory\"')::json
          WHERE tenant_id = $1 AND user_id = ANY($2)",
    )
    .bind(pipeline.tenant)
    .bind(&edited)
    .execute(&pipeline.pool)
    .await?;
    ensure!(
        changed.rows_affected() == edited.len() as u64,
        "edited {} cards of {}",
        changed.rows_affected(),
        edited.len()
    );
    Ok(())
}

async fn run(cli: &Cli, slot: &mut Option<Pipeline>) -> anyhow::Result<Value> {
    // Nothing but the reconcile finds the drift.
    let config = PipelineConfig::benchmark(
        "reconcile-bench",
        cli.bin_dir.as_ref(),
        cli.users,
        &cli.postgres_url,
    )?;
    let pipeline = slot.insert(Pipeline::start(config).await?);
    section("initial sync");
    let started = Instant::now();
    pipeline
        .initial_sync(Duration::from_secs(cli.timeout))
        .await?;
    // The safety poll takes a tenant that never had a round at once, so two full rounds start
    // together; the Sync Now's waits for the tenant's lease and enumerates again after the cards
    // are in. Wait for it, or the reconcile below would wait for it too.
    let waited = Instant::now();
    while pipeline
        .metric(
            Service::DeltaWorker,
            "cardsync_delta_rounds_total",
            &[("cause", "manual"), ("outcome", "ok")],
        )
        .await?
        < 1.0
    {
        ensure!(
            waited.elapsed() < Duration::from_secs(cli.timeout),
            "the initial Sync Now's round did not end"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    pipeline
        .wait_drained(Duration::from_secs(cli.timeout))
        .await?;
    let active = pipeline.active_cards().await?;
    println!(
        "{} users synced in {:.1} s: {active} active cards",
        cli.users,
        started.elapsed().as_secs_f64()
    );

    let total = ((active as f64) * cli.drift).round() as usize;
    let plan = DriftPlan::of(total);
    section(&format!(
        "drift: {total} users ({plan:?}), notifications lost"
    ));
    drift(pipeline, plan).await?;
    let before = pipeline.compare().await?;
    println!(
        "before the reconcile: {} divergent cards ({} photo only)",
        before.divergent, before.photo_only
    );

    section("full reconcile (Sync Now)");
    pipeline.settle().await?;
    let requests_before = requests_by_endpoint(pipeline).await?;
    let reconciler_before = pipeline.peak_mib_of("reconciler");
    let reconciled =
        reconcile::reconcile(pipeline, pipeline.tenant, Duration::from_secs(cli.timeout)).await?;
    let requests_after = requests_by_endpoint(pipeline).await?;
    let graph: BTreeMap<String, u64> = requests_after
        .iter()
        .map(|(endpoint, after)| {
            let before = requests_before.get(endpoint).copied().unwrap_or_default();
            (endpoint.clone(), after - before)
        })
        .filter(|(_, requests)| *requests > 0)
        .collect();
    let graph_total: u64 = graph.values().sum();
    println!(
        "reconcile {}: {:?} in {:.1} s; counts {:?}; Graph requests {graph_total} {graph:?}",
        reconciled.run_id,
        reconciled.status,
        reconciled.elapsed.as_secs_f64(),
        reconciled.counts
    );
    ensure!(
        reconciled.status == cardsync_store::runs::RunStatus::Succeeded,
        "the reconcile ended {:?}: {:?}",
        reconciled.status,
        reconciled.detail
    );
    // The run ended when the card-writer applied its last command; the cards must now match the
    // directory, but for photos the reconcile's budgeted photo scan did not reach this night.
    pipeline
        .wait_drained(Duration::from_secs(60))
        .await
        .context("draining after the reconcile")?;
    let after = pipeline.compare().await?;
    println!(
        "after the reconcile: {} divergent cards ({} photo only), {} duplicate; e.g. {:?}",
        after.divergent, after.photo_only, after.duplicates, after.examples
    );
    ensure!(
        after.divergent == after.photo_only && after.duplicates == 0,
        "the reconcile left {} cards divergent for more than their photo, {} duplicate",
        after.divergent - after.photo_only,
        after.duplicates
    );
    Ok(json!({
        "users": cli.users,
        "active_cards": active,
        "drift": {"total": total, "titles": plan.titles, "disabled": plan.disabled,
                  "photos": plan.photos, "edited": plan.edited,
                  "divergent_before": before.divergent},
        "reconcile_s": (reconciled.elapsed.as_secs_f64() * 100.0).round() / 100.0,
        "counts": reconciled.counts,
        "graph_requests": graph_total,
        "graph_by_endpoint": graph,
        "reconciler_peak_mib": [reconciler_before, pipeline.peak_mib_of("reconciler")],
        "card_writer_peak_mib": pipeline.peak_mib_of("card-writer"),
        "divergent_after": after.divergent,
        "photo_only_after": after.photo_only,
        "duplicates_after": after.duplicates,
    }))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    pipeline::run_benchmark("reconcile_bench", async |slot| run(&cli, slot).await).await
}
