//! `make demo`: the whole of cardsync on this machine against graph-sim.
//!
//! Starts graph-sim, the webhook, the delta-worker and the card-writer as child processes (the
//! real binaries), seeds a fresh tenant, creates the Graph subscription (graph-sim performs the
//! validation handshake against the webhook), runs the initial sync, applies a stream of random
//! directory changes, waits for the pipeline to drain and compares every card with the directory.
//! The last line of its output is one JSON object with the figures; it exits non-zero when a
//! card diverges.

mod changes;
mod check;
mod procs;

use anyhow::{Context as _, bail, ensure};
use cardsync_bus::{BusSettings, Outgoing, Publisher, Topology, lapin, names, routing};
use cardsync_proto as proto;
use changes::{Applied, Model};
use clap::Parser;
use graph_sim::control_client::{CARDSYNC_PERMISSIONS, Control};
use procs::{Binaries, Children, free_port};
use rand::SeedableRng as _;
use serde_json::{Value, json};
use sqlx::PgPool;
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
    /// Seed of the directory and of the change stream.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The delta-worker's idle-tenant safety poll (shorter than production's 5m to show it).
    #[arg(long, default_value = "30s")]
    safety_poll: String,
    /// How long convergence may take after the stream stops, seconds.
    #[arg(long, default_value_t = 90)]
    settle_timeout: u64,
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
    let mut children = Children::default();
    let outcome = tokio::select! {
        outcome = run(&cli, &mut children) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    section("stopping every process the demo started");
    children.stop_all();
    match outcome {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(error) => {
            eprintln!("demo failed: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn section(title: &str) {
    println!("\n== {title}");
}

struct Run {
    run_id: String,
    env: Vec<(String, String)>,
    tenant: Uuid,
}

/// The whole demo; `Ok(true)` when every card converged.
async fn run(cli: &Cli, children: &mut Children) -> anyhow::Result<bool> {
    let run_id = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let dir = match &cli.bin_dir {
        Some(dir) => dir.clone(),
        None => procs::own_dir()?,
    };
    let logs = std::env::temp_dir().join(format!("cardsync-demo-{run_id}"));
    std::fs::create_dir_all(&logs)?;
    let binaries = Binaries { dir, logs };
    let prefix = format!("demo-{run_id}.");
    println!(
        "cardsync demo run {run_id}: {} users, {} s of changes at {}/s; logs in {}",
        cli.users,
        cli.seconds,
        cli.rate,
        binaries.logs.display()
    );

    section("1. graph-sim");
    let (graph_port, control_port, https_port) = (free_port()?, free_port()?, free_port()?);
    // Graph over HTTPS with graph-sim's own CA, trusted through configuration exactly as a
    // deployment behind a TLS-inspecting proxy would trust that proxy's CA.
    let ca_file = binaries.logs.join("graph-sim-ca.pem");
    children.start(
        &binaries,
        "graph-sim",
        &[
            "--graph-listen",
            &format!("127.0.0.1:{graph_port}"),
            "--control-listen",
            &format!("127.0.0.1:{control_port}"),
            "--tls",
            "--https-listen",
            &format!("127.0.0.1:{https_port}"),
            "--ca-out",
            &ca_file.display().to_string(),
            // An hour of simulated retry back-off per second: a failed delivery is retried fast.
            "--time-scale",
            "3600",
        ],
        &[],
    )?;
    let graph_url = format!("https://127.0.0.1:{https_port}");
    let control_url = format!("http://127.0.0.1:{control_port}");
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    wait_ok(&plain, &format!("{control_url}/control/health"), children).await?;
    let ca_pem = std::fs::read(&ca_file).context("graph-sim's CA certificate")?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .add_root_certificate(
            reqwest::Certificate::from_pem(&ca_pem).context("graph-sim's CA is not PEM")?,
        )
        .build()?;
    let control = Control::new(&control_url);
    let tenant_text = control.create_tenant().await?;
    let tenant = Uuid::parse_str(&tenant_text).context("graph-sim tenant id")?;
    let started = Instant::now();
    let seeded = control.seed(&tenant_text, cli.users, cli.seed).await?;
    println!(
        "graph-sim on {graph_url}; tenant {tenant} seeded with {} users in {:.1} s",
        cli.users,
        started.elapsed().as_secs_f64()
    );
    let _ = seeded;
    let app = control
        .create_secret_app(&tenant_text, CARDSYNC_PERMISSIONS)
        .await?;
    let secret = app.secret.clone().context("graph-sim returned no secret")?;
    println!("app registration {} with a client secret", app.client_id);

    let ports = (free_port()?, free_port()?, free_port()?);
    let mut env: Vec<(String, String)> = vec![
        ("CARDSYNC__TOPOLOGY__PREFIX", prefix.clone()),
        ("CARDSYNC__BUS__URL", cli.amqp_url.clone()),
        ("CARDSYNC__POSTGRES__URL", cli.postgres_url.clone()),
        ("CARDSYNC__REDIS__URL", cli.redis_url.clone()),
        ("CARDSYNC__REDIS__KEY_PREFIX", format!("demo-{run_id}:")),
        ("CARDSYNC__TELEMETRY__LOG_FILTER", "info".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let run = Run {
        run_id: run_id.clone(),
        env: env.clone(),
        tenant,
    };

    section("2. tenant connection and card tenant (operator commands)");
    println!(
        "{}",
        binaries.run(
            "delta-worker",
            &[
                "put-connection",
                "--tenant",
                &tenant_text,
                "--client-id",
                &app.client_id,
                "--kind",
                "secret"
            ],
            &run.env,
            &[("CARDSYNC_CREDENTIAL", &secret)],
        )?
    );
    println!(
        "{}",
        binaries.run(
            "card-writer",
            &[
                "tenant",
                "put",
                "--id",
                &tenant_text,
                "--name",
                &format!("demo {run_id}")
            ],
            &run.env,
            &[],
        )?
    );

    section("3. services");
    env.push(("CARDSYNC__GRAPH__AUTHORITY_URL".into(), graph_url.clone()));
    env.push(("CARDSYNC__GRAPH__GRAPH_URL".into(), graph_url.clone()));
    env.push((
        "CARDSYNC__GRAPH__EXTRA_CA_FILE".into(),
        ca_file.display().to_string(),
    ));
    env.push((
        "CARDSYNC__WORKER__SAFETY_POLL_INTERVAL".into(),
        cli.safety_poll.clone(),
    ));
    env.push(("CARDSYNC__WORKER__SAFETY_POLL_TICK".into(), "5s".into()));
    let with_port = |port: u16| {
        let mut env = env.clone();
        env.push(("CARDSYNC__HTTP__LISTEN".into(), format!("127.0.0.1:{port}")));
        env
    };
    for (name, port) in [
        ("webhook", ports.0),
        ("delta-worker", ports.1),
        ("card-writer", ports.2),
    ] {
        children.start(&binaries, name, &["serve"], &with_port(port))?;
    }
    for (name, port) in [
        ("webhook", ports.0),
        ("delta-worker", ports.1),
        ("card-writer", ports.2),
    ] {
        wait_ok(
            &http,
            &format!("http://127.0.0.1:{port}/health/ready"),
            children,
        )
        .await
        .with_context(|| format!("{name} never became ready"))?;
        println!("{name} ready on 127.0.0.1:{port}");
    }
    let webhook = format!("http://127.0.0.1:{}", ports.0);

    section("4. Graph subscription (graph-sim performs the handshake with the webhook)");
    let token = app_token(&http, &graph_url, &tenant_text, &app.client_id, &secret).await?;
    let client_state = format!("demo-{}", Uuid::new_v4().simple());
    let expires = time::OffsetDateTime::now_utc() + time::Duration::days(2);
    let expires = expires.format(&time::format_description::well_known::Rfc3339)?;
    let response = http
        .post(format!("{graph_url}/v1.0/subscriptions"))
        .bearer_auth(&token)
        .json(&json!({
            "changeType": "updated,deleted",
            "notificationUrl": format!("{webhook}/graph/notifications"),
            "lifecycleNotificationUrl": format!("{webhook}/graph/lifecycle"),
            "resource": "/users",
            "expirationDateTime": expires,
            "clientState": client_state,
        }))
        .send()
        .await?;
    let status = response.status();
    let subscription: Value = response.json().await.unwrap_or(Value::Null);
    ensure!(
        status.as_u16() == 201,
        "creating the subscription answered {status}: {subscription}"
    );
    let subscription_id = subscription["id"]
        .as_str()
        .context("subscription without id")?
        .to_owned();
    println!("subscription {subscription_id} created (handshake passed)");
    println!(
        "{}",
        binaries.run(
            "webhook",
            &[
                "register-subscription",
                "--id",
                &subscription_id,
                "--tenant",
                &tenant_text,
                "--resource",
                "/users",
                "--expires-at",
                subscription["expirationDateTime"]
                    .as_str()
                    .unwrap_or(&expires),
            ],
            &run.env,
            &[("CARDSYNC_CLIENT_STATE", &client_state)],
        )?
    );

    let pool = PgPool::connect(&cli.postgres_url)
        .await
        .context("connecting to PostgreSQL")?;
    let outcome = sync_and_stream(cli, &run, &control, &pool, children).await;
    pool.close().await;
    outcome
}

async fn sync_and_stream(
    cli: &Cli,
    run: &Run,
    control: &Control,
    pool: &PgPool,
    children: &mut Children,
) -> anyhow::Result<bool> {
    let tenant = run.tenant;
    let tenant_text = tenant.to_string();
    let prefix = format!("demo-{}.", run.run_id);
    let topology = Topology::cardsync(&prefix);
    let bus = BusSettings::new(cli.amqp_url.clone().into());

    section("5. initial sync: a full SyncRequest on the sync exchange");
    let snapshot = control.snapshot(&tenant_text).await?;
    let expected = check::compare(pool, tenant, &snapshot)
        .await?
        .expected_active;
    let publisher = Publisher::connect(&bus, topology.clone()).await?;
    let request = proto::SyncRequest {
        envelope: Some(proto::Envelope::new(&tenant_text, proto::Cause::Manual)),
        scope: proto::sync_request::Scope::Tenant as i32,
        depth: proto::sync_request::Depth::Full as i32,
        ..Default::default()
    };
    publisher
        .publish_all(vec![Outgoing::new(
            &topology.name(names::SYNC),
            &routing::sync_request(&tenant_text),
            &request,
        )])
        .await?;
    publisher.close().await;
    let started = Instant::now();
    loop {
        children.check_alive()?;
        let active: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM cards WHERE tenant_id = $1 AND status = 'active'",
        )
        .bind(tenant)
        .fetch_one(pool)
        .await?;
        if usize::try_from(active).unwrap_or_default() >= expected {
            println!(
                "{active} active cards for {expected} enabled users after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            break;
        }
        if started.elapsed() > Duration::from_secs(180) {
            bail!("initial sync: only {active} of {expected} cards after 180 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the initial round finish (its photo pass, its delta link) before counting requests.
    wait_drained(&cli.amqp_url, &topology, pool, control, tenant, children).await?;

    section("6. a stream of directory changes in graph-sim");
    let mut model = Model::from_snapshot(&tenant_text, &snapshot);
    let mut rng = rand::rngs::StdRng::seed_from_u64(cli.seed);
    let requests_before = graph_requests(control, &tenant_text).await?;
    let interval = Duration::from_secs_f64(1.0 / cli.rate.max(0.1));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream_started = Instant::now();
    let mut applied: Vec<Applied> = Vec::new();
    while stream_started.elapsed() < Duration::from_secs(cli.seconds) {
        ticker.tick().await;
        if let Some(change) = model.apply_one(control, &mut rng).await? {
            applied.push(change);
        }
        if applied.len().is_multiple_of(100) {
            children.check_alive()?;
        }
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
    let snapshot = control.snapshot(&tenant_text).await?;
    wait_drained(&cli.amqp_url, &topology, pool, control, tenant, children).await?;
    // The change phase ends when its notifications have been handled; later rounds (safety
    // poll, Sync Now for photos) are not charged to the changes.
    let requests_after = graph_requests(control, &tenant_text).await?;
    loop {
        wait_drained(&cli.amqp_url, &topology, pool, control, tenant, children).await?;
        report = check::compare(pool, tenant, &snapshot).await?;
        if report.divergent == 0 || Instant::now() >= deadline {
            break;
        }
        // Photos are never announced (Graph sends nothing for them): the delta-worker finds them
        // with a budgeted scan in every round. Ask for a round ("Sync Now") while only photos
        // lag; anything else must converge from the notifications (or the safety poll) alone.
        if report.photo_only == report.divergent {
            rounds_asked += 1;
            publish_sync_now(&bus, &topology, &tenant_text).await?;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settle = settle_started.elapsed();

    let latencies = e2e_latencies(pool, tenant, &applied).await?;
    let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
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
        "Graph requests while the changes were handled: {} ({per_change:.2} per change)",
        requests_after - requests_before
    );
    println!(
        "divergent cards {} (photo only {}), duplicate cards {}",
        report.divergent, report.photo_only, report.duplicates
    );
    for example in &report.examples {
        println!("  diverges: {example}");
    }
    let ok = report.divergent == 0 && report.duplicates == 0;
    println!(
        "{}",
        if ok {
            "every card matches the directory"
        } else {
            "CARDS DIVERGE"
        }
    );
    println!(
        "{}",
        json!({
            "users": cli.users,
            "changes": applied.len(),
            "divergent_cards": report.divergent,
            "duplicate_cards": report.duplicates,
            "e2e_ms": {"p50": p50, "p99": p99},
            "graph_requests_per_change": (per_change * 100.0).round() / 100.0,
        })
    );
    Ok(ok)
}

async fn publish_sync_now(
    bus: &BusSettings,
    topology: &Topology,
    tenant: &str,
) -> anyhow::Result<()> {
    let publisher = Publisher::connect(bus, topology.clone()).await?;
    let request = proto::SyncRequest {
        envelope: Some(proto::Envelope::new(tenant, proto::Cause::Manual)),
        scope: proto::sync_request::Scope::Tenant as i32,
        depth: proto::sync_request::Depth::Info as i32,
        ..Default::default()
    };
    publisher
        .publish_all(vec![Outgoing::new(
            &topology.name(names::SYNC),
            &routing::sync_request(tenant),
            &request,
        )])
        .await?;
    publisher.close().await;
    Ok(())
}

/// Waits until nothing is in flight: every cardsync queue of this run empty, every graph-sim
/// delivery settled and every directory version emitted, twice in a row 500 ms apart (a message
/// being handled is unacked and not in `message_count`, so one empty look is not enough).
async fn wait_drained(
    amqp_url: &str,
    topology: &Topology,
    pool: &PgPool,
    control: &Control,
    tenant: Uuid,
    children: &mut Children,
) -> anyhow::Result<()> {
    let connection =
        lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let mut queues: Vec<String> = Vec::new();
    for queue in topology.queues() {
        queues.push(queue.name.clone());
        for delay in topology.retry_tiers() {
            queues.push(queue.retry_queue(delay));
        }
    }
    let started = Instant::now();
    let mut quiet = 0;
    while quiet < 3 {
        children.check_alive()?;
        let mut busy = Vec::new();
        for queue in &queues {
            // The audit sink and dead-letter queues are nobody's work.
            if queue.contains(names::CARD_EVENTS_AUDIT) {
                continue;
            }
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
            "SELECT count(*) FROM directory_users WHERE tenant_id = $1 AND version > emitted_version",
        )
        .bind(tenant)
        .fetch_one(pool)
        .await?;
        if unemitted > 0 {
            busy.push(format!("unemitted={unemitted}"));
        }
        let deliveries = control
            .call(
                reqwest::Method::GET,
                &format!("/deliveries?tenant={tenant}"),
                None,
            )
            .await?;
        let pending = deliveries
            .as_array()
            .or_else(|| deliveries["value"].as_array())
            .map_or(0, |all| {
                all.iter()
                    .filter(|d| matches!(d["outcome"].as_str(), Some("pending" | "retrying")))
                    .count()
            });
        if pending > 0 {
            busy.push(format!("deliveries={pending}"));
        }
        if busy.is_empty() {
            quiet += 1;
        } else {
            quiet = 0;
            if started.elapsed() > Duration::from_secs(10)
                && started.elapsed().as_secs().is_multiple_of(5)
            {
                println!("  still busy: {}", busy.join(", "));
            }
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("the pipeline did not drain in 300 s: {}", busy.join(", "));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = connection.close(0, "done".into()).await;
    Ok(())
}

/// End-to-end latency of every visible change: from graph-sim's `changedAtUnixMs` to the first
/// audit row of that user's card written at or after it. `audit_log.at` is the writer's
/// transaction time and one row exists per applied change, whereas `cards.updated_at` only keeps
/// the last write (and moves on no-op upserts too).
async fn e2e_latencies(
    pool: &PgPool,
    tenant: Uuid,
    applied: &[Applied],
) -> anyhow::Result<Vec<i64>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT c.user_id, (extract(epoch FROM a.at) * 1000)::bigint
           FROM audit_log a JOIN cards c ON c.tenant_id = a.tenant_id AND c.card_id = a.card_id
          WHERE a.tenant_id = $1 AND c.user_id IS NOT NULL
          ORDER BY a.at",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    let mut by_user: std::collections::HashMap<String, Vec<i64>> = std::collections::HashMap::new();
    for (user, at) in rows {
        by_user.entry(user).or_default().push(at);
    }
    let mut latencies: Vec<i64> = applied
        .iter()
        .filter(|change| change.visible)
        .filter_map(|change| {
            by_user
                .get(&change.user)?
                .iter()
                .find(|at| **at >= change.changed_at_ms)
                .map(|at| at - change.changed_at_ms)
        })
        .collect();
    latencies.sort_unstable();
    Ok(latencies)
}

fn percentile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Graph requests graph-sim counted for the tenant (token requests included).
async fn graph_requests(control: &Control, tenant: &str) -> anyhow::Result<u64> {
    let counters = control.counters(Some(tenant)).await?;
    fn sum(value: &Value) -> u64 {
        match value {
            Value::Object(map) => map
                .get("requests")
                .and_then(Value::as_u64)
                .unwrap_or_else(|| map.values().map(sum).sum()),
            _ => 0,
        }
    }
    Ok(sum(&counters))
}

async fn app_token(
    http: &reqwest::Client,
    graph_url: &str,
    tenant: &str,
    client_id: &str,
    secret: &str,
) -> anyhow::Result<String> {
    let answer: Value = http
        .post(format!("{graph_url}/{tenant}/oauth2/v2.0/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await?
        .json()
        .await?;
    answer["access_token"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no app token: {answer}"))
}

async fn wait_ok(http: &reqwest::Client, url: &str, children: &mut Children) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        children.check_alive()?;
        if let Ok(response) = http.get(url).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("{url} not ready after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
