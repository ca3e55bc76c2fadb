//! `make bench`: 1,000 tenants connected at once, and how long the subscription manager takes to
//! subscribe them all, how many Graph requests that costs, its peak memory, and how its renewals
//! spread over the day.
//!
//! - graph-sim runs in this process (its Graph over plain HTTP on loopback); the webhook and the
//!   subscription manager run as child processes of this build profile (built here if needed),
//!   on a database created for the run and dropped at the end.
//! - Every tenant has its own app registration and connection, all stored before the manager
//!   starts: the manager finds them at its first pass, as after a bulk onboarding.
//! - Subscribed: every tenant's `/users` slot `active` (graph-sim created the subscription after
//!   its two validation handshakes with the webhook, and the registry row is written).
//! - Graph requests: graph-sim's request counters (tokens, creates) for the run's tenants.
//! - Renewal spread: the next renewal time of every subscription, counted per minute.
//!
//! `cargo run --release --locked -p cardsync-bench --bin subscribe_bench [-- --tenants 1000]`

use anyhow::{Context as _, ensure};
use cardsync_bench::{
    ServiceProcess, create_database, database_url, drop_database, free_port, progress,
    service_binary, service_env,
};
use cardsync_store::connections::{self, Connection, CredentialKind};
use cardsync_store::sealing::SecretsSettings;
use clap::Parser;
use graph_sim::control_client::{CARDSYNC_PERMISSIONS, Control};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Parser)]
#[command(about = "Subscription manager benchmark: many tenants connected at once")]
struct Args {
    /// Tenants connected at once.
    #[arg(long, default_value_t = 1000)]
    tenants: usize,
    /// Longest wait for every tenant to be subscribed.
    #[arg(long, default_value = "600")]
    timeout_seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let started = Instant::now();
    let run = Uuid::new_v4().simple().to_string();
    let database = format!("subs_bench_{}", &run[..12]);
    let pool = create_database(&database, 8).await?;
    let outcome = bench(&args, &pool, &database, &run, started).await;
    pool.close().await;
    let dropped = drop_database(&database).await;
    let report = outcome?;
    dropped.context("dropping the benchmark database")?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

async fn bench(
    args: &Args,
    pool: &sqlx::PgPool,
    database: &str,
    run: &str,
    started: Instant,
) -> anyhow::Result<Value> {
    let sim = graph_sim::spawn(graph_sim::SimConfig {
        workers: 2,
        ..graph_sim::SimConfig::default()
    })
    .await
    .context("starting graph-sim")?;
    let control = Control::new(sim.control_url());
    let key = SecretsSettings::development()
        .keyring()
        .context("the development key")?;
    let mut tenants = Vec::with_capacity(args.tenants);
    for _ in 0..args.tenants {
        let tenant = control.create_tenant().await?;
        let app = control
            .create_secret_app(&tenant, CARDSYNC_PERMISSIONS)
            .await?;
        let id = Uuid::parse_str(&tenant)?;
        connections::put(
            pool,
            &key,
            &Connection {
                tenant_id: id,
                client_id: app.client_id,
                kind: CredentialKind::Secret,
                credential: SecretString::from(app.secret.context("no secret")?),
            },
        )
        .await?;
        tenants.push(tenant);
    }
    progress(started, format!("{} tenants connected", args.tenants));

    let prefix = format!("subs-bench-{}.", &run[..8]);
    let logs = std::env::temp_dir();
    let webhook_port = free_port()?;
    let webhook_url = format!("http://127.0.0.1:{webhook_port}");
    let webhook_env = service_env(webhook_port, &prefix, &database_url(database), AMQP_URL);
    let webhook_log = logs.join(format!("subs-bench-webhook-{run}.log"));
    let webhook = ServiceProcess::spawn(&service_binary("webhook")?, &webhook_env, &webhook_log)?;
    // Live is enough: the webhook answers Graph's handshakes before it reads a body, without the
    // broker; the benchmark measures the manager.
    wait_ready(&format!("{webhook_url}/health/live")).await?;

    let manager_port = free_port()?;
    let mut manager_env = service_env(manager_port, &prefix, &database_url(database), AMQP_URL);
    manager_env.extend(
        [
            ("CARDSYNC__GRAPH__AUTHORITY_URL", sim.graph_url().to_owned()),
            ("CARDSYNC__GRAPH__GRAPH_URL", sim.graph_url().to_owned()),
            (
                "CARDSYNC__SUBSCRIPTIONS__PUBLIC_BASE_URL",
                webhook_url.clone(),
            ),
            ("CARDSYNC__SUBSCRIPTIONS__TICK", "1s".to_owned()),
            ("CARDSYNC__TELEMETRY__LOG_FILTER", "warn".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let manager_log = logs.join(format!("subs-bench-manager-{run}.log"));
    let binary = service_binary("subscription-manager")?;
    let subscribing = Instant::now();
    let manager = ServiceProcess::spawn(&binary, &manager_env, &manager_log)?;
    let pid = manager.pid();
    let deadline = subscribing + Duration::from_secs(args.timeout_seconds);
    let mut peak_kib = 0u64;
    let subscribed = loop {
        peak_kib = peak_kib.max(vm_hwm_kib(pid).unwrap_or(0));
        let active: i64 =
            sqlx::query_scalar("SELECT count(*) FROM subscription_slots WHERE state = 'active'")
                .fetch_one(pool)
                .await?;
        if usize::try_from(active).unwrap_or(0) >= args.tenants {
            break subscribing.elapsed();
        }
        ensure!(
            Instant::now() < deadline,
            "only {active} of {} tenants subscribed after {} s (see {})",
            args.tenants,
            args.timeout_seconds,
            manager_log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    peak_kib = peak_kib.max(vm_hwm_kib(pid).unwrap_or(0));
    progress(
        started,
        format!(
            "{} tenants subscribed in {:.1} s",
            args.tenants,
            subscribed.as_secs_f64()
        ),
    );
    let counters = control.counters(None).await?;
    let mut by_endpoint = std::collections::BTreeMap::<String, u64>::new();
    for tenant in &tenants {
        if let Some(endpoints) = counters[tenant].as_object() {
            for (endpoint, counter) in endpoints {
                *by_endpoint.entry(endpoint.clone()).or_default() +=
                    counter["requests"].as_u64().unwrap_or(0);
            }
        }
    }
    let spread: Vec<(i64,)> = sqlx::query_as(
        "SELECT count(*) FROM subscription_slots WHERE next_attempt_at IS NOT NULL
          GROUP BY date_trunc('minute', next_attempt_at) ORDER BY 1 DESC",
    )
    .fetch_all(pool)
    .await?;
    let span: (Option<time::OffsetDateTime>, Option<time::OffsetDateTime>) =
        sqlx::query_as("SELECT min(next_attempt_at), max(next_attempt_at) FROM subscription_slots")
            .fetch_one(pool)
            .await?;
    let span_minutes = match span {
        (Some(first), Some(last)) => (last - first).whole_minutes(),
        _ => 0,
    };
    let _ = manager.stop(STOP_GRACE);
    let _ = webhook.stop(STOP_GRACE);
    sim.shutdown().await;
    let _ = std::fs::remove_file(&webhook_log);
    let _ = std::fs::remove_file(&manager_log);
    let requests: u64 = by_endpoint.values().sum();
    Ok(json!({
        "tenants": args.tenants,
        "all_subscribed_s": (subscribed.as_secs_f64() * 10.0).round() / 10.0,
        "graph_requests": requests,
        "graph_requests_per_tenant": (requests as f64 / args.tenants as f64 * 100.0).round() / 100.0,
        "graph_requests_by_endpoint": by_endpoint,
        "manager_peak_rss_mib": (peak_kib as f64 / 1024.0 * 10.0).round() / 10.0,
        "renewals_in_busiest_minute": spread.first().map_or(0, |(n,)| *n),
        "renewal_minutes_used": spread.len(),
        "renewal_span_minutes": span_minutes,
    }))
}

/// The peak resident memory of a process (`VmHWM`), in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

async fn wait_ready(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "{url} not ready after 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
