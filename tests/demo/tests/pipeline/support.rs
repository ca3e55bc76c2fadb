//! What every pipeline scenario shares: a capped number of pipelines at once, the test settings,
//! failure reports with the services' logs, small queries on the cards and the audit log, and
//! the card events the card-writer published.

use anyhow::{Context as _, ensure};
use cardsync_bus::lapin;
use cardsync_bus::lapin::options::BasicGetOptions;
use cardsync_bus::names;
use cardsync_demo::{Database, Pipeline, PipelineConfig, procs};
use cardsync_proto::{BusMessage as _, CardEvent, Message as _, RunDigest};
use serde_json::Value;
use std::time::Duration;
use tokio::sync::Semaphore;
use uuid::Uuid;

/// Pipelines running at once: each is five processes (graph-sim, three services and the test)
/// on a 2-core machine, and the delta rounds and card writes are CPU-bound in debug builds.
static SLOTS: Semaphore = Semaphore::const_new(2);

/// The test database server; each pipeline creates its own database on it.
pub const POSTGRES_SERVER: &str = "postgres://postgres@127.0.0.1:5432/cardsync_test";

/// Settings of a scenario's pipeline before it starts.
#[derive(Debug)]
pub struct Setup {
    /// Names the run (`pipe-{label}-…`).
    pub label: &'static str,
    /// Users graph-sim seeds.
    pub users: usize,
    /// Redis URL (a scenario that flushes Redis takes a database index of its own).
    pub redis_url: &'static str,
    /// The delta-worker's safety poll interval and tick. Tests that do not exercise it keep it
    /// far away, so nothing but notifications moves the cards.
    pub safety_poll: (&'static str, &'static str),
    /// Further `CARDSYNC__…` settings for every service.
    pub env: Vec<(&'static str, String)>,
}

impl Setup {
    /// A small tenant, no safety poll during the test.
    pub fn new(label: &'static str, users: usize) -> Self {
        Self {
            label,
            users,
            redis_url: "redis://127.0.0.1:6379/0",
            safety_poll: ("10m", "30s"),
            env: Vec::new(),
        }
    }
}

/// One of the pipeline slots, for a test that starts a pipeline some other way.
pub async fn slot() -> tokio::sync::SemaphorePermit<'static> {
    SLOTS
        .acquire()
        .await
        .expect("the semaphore is never closed")
}

/// Starts a pipeline as `setup` says (waiting for a free slot), runs `scenario` on it and stops
/// it. A failed scenario panics with its error, the log directory and the tail of every log; a
/// passed one removes its logs.
pub async fn run(setup: Setup, scenario: impl AsyncFnOnce(&mut Pipeline) -> anyhow::Result<()>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _slot = slot().await;
    let config = config(&setup).await.expect("pipeline settings");
    let logs = config.logs.clone();
    let mut pipeline = match Pipeline::start(config).await {
        Ok(pipeline) => pipeline,
        Err(error) => panic!(
            "the pipeline did not start: {error:#}\n{}",
            tails(&logs, 40)
        ),
    };
    let outcome = scenario(&mut pipeline).await;
    let report = outcome.as_ref().err().map(|_| pipeline.log_tails(40));
    pipeline.stop().await;
    match (outcome, report) {
        (Err(error), Some(logs)) => panic!("{} failed: {error:#}\n{logs}", setup.label),
        _ => {
            let _ = std::fs::remove_dir_all(&logs);
        }
    }
}

async fn config(setup: &Setup) -> anyhow::Result<PipelineConfig> {
    let bin_dir = tokio::task::spawn_blocking(procs::test_binary_dir).await??;
    let mut config = PipelineConfig::new(&format!("pipe-{}", setup.label), bin_dir)?;
    config.users = setup.users;
    config.database = Database::Fresh {
        server_url: POSTGRES_SERVER.to_owned(),
    };
    config.redis_url = setup.redis_url.to_owned();
    // Quorum queues' create/delete churn wedged a single RabbitMQ 3.10 node before.
    config.queue_type = cardsync_bus::QueueType::Classic;
    config.delete_topology = true;
    config.safety_poll_interval = setup.safety_poll.0.to_owned();
    config.safety_poll_tick = setup.safety_poll.1.to_owned();
    config.service_env = [
        // PostgreSQL allows 100 connections; two pipelines and their tests share them.
        ("CARDSYNC__POSTGRES__MAX_CONNECTIONS", "5"),
        ("CARDSYNC__CARD_WRITER__BULK_MAX_CONNECTIONS", "2"),
        // A killed delta-worker's lease frees itself quickly for its restarted successor.
        ("CARDSYNC__WORKER__LEASE_TTL", "3s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .chain(setup.env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())))
    .collect();
    Ok(config)
}

fn tails(logs: &std::path::Path, lines: usize) -> String {
    let mut out = format!("logs in {}", logs.display());
    for name in procs::SERVICE_BINARIES {
        let path = logs.join(format!("{name}.log"));
        out.push_str(&format!(
            "\n--- {}\n{}",
            path.display(),
            procs::log_tail(&path, lines)
        ));
    }
    out
}

/// A directory user of graph-sim's snapshot.
#[derive(Debug, Clone)]
pub struct User {
    /// Object id.
    pub id: String,
    /// `userPrincipalName`.
    pub upn: String,
}

/// The enabled, not deleted users of the tenant, by id, so scenarios pick the same ones each run.
pub async fn enabled_users(pipeline: &Pipeline) -> anyhow::Result<Vec<User>> {
    let snapshot = pipeline.control.snapshot(&pipeline.tenant_text()).await?;
    let mut users: Vec<User> = snapshot["directory"]["users"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|u| u["lifecycleState"].as_str().is_none_or(|s| s == "active"))
        .filter(|u| u["accountEnabled"] != Value::Bool(false))
        .filter_map(|u| {
            Some(User {
                id: u["id"].as_str()?.to_owned(),
                upn: u["userPrincipalName"].as_str()?.to_owned(),
            })
        })
        .collect();
    users.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(users)
}

/// The tenant's mail domain (from a user's UPN).
pub fn domain(users: &[User]) -> String {
    users
        .iter()
        .find_map(|u| u.upn.split_once('@').map(|(_, d)| d.to_owned()))
        .unwrap_or_else(|| "example.com".to_owned())
}

/// A user's card: status and one field's value.
pub async fn card_field(
    pipeline: &Pipeline,
    user: &str,
    field: &str,
) -> anyhow::Result<Option<(String, Option<String>)>> {
    let row: Option<(String, Value)> =
        sqlx::query_as("SELECT status, fields FROM cards WHERE tenant_id = $1 AND user_id = $2")
            .bind(pipeline.tenant)
            .bind(user)
            .fetch_optional(&pipeline.pool)
            .await?;
    Ok(row.map(|(status, fields)| {
        let value = fields[field]["value"].as_str().map(str::to_owned);
        (status, value)
    }))
}

/// A card's status (`None` when the user has no card).
pub async fn card_status(pipeline: &Pipeline, user: &str) -> anyhow::Result<Option<String>> {
    Ok(card_field(pipeline, user, "name").await?.map(|(s, _)| s))
}

/// The newest audit row id of the tenant (0 when none): later rows are what a step caused.
pub async fn audit_mark(pipeline: &Pipeline) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM audit_log WHERE tenant_id = $1")
            .bind(pipeline.tenant)
            .fetch_one(&pipeline.pool)
            .await?,
    )
}

/// `(user id, action)` of every audit row after `mark`, oldest first.
pub async fn audit_since(pipeline: &Pipeline, mark: i64) -> anyhow::Result<Vec<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT coalesce(c.user_id, a.card_id::text), a.action
           FROM audit_log a LEFT JOIN cards c ON c.tenant_id = a.tenant_id AND c.card_id = a.card_id
          WHERE a.tenant_id = $1 AND a.id > $2 ORDER BY a.id",
    )
    .bind(pipeline.tenant)
    .bind(mark)
    .fetch_all(&pipeline.pool)
    .await?)
}

/// Takes (gets, auto-acknowledged) every message on the run's card-events audit queue, where
/// every card event the card-writer publishes ends up and nothing consumes it, and returns the
/// tenant's card events in queue order (run digests, which share the sink, are skipped). The
/// next call sees only events published since. Fails on a message that is neither a decodable
/// `CardEvent` nor a `RunDigest`.
pub async fn take_events(pipeline: &Pipeline) -> anyhow::Result<Vec<CardEvent>> {
    Ok(take_sink(pipeline).await?.0)
}

/// Like [`take_events`], the tenant's run digests instead (card events are skipped).
pub async fn take_digests(pipeline: &Pipeline) -> anyhow::Result<Vec<RunDigest>> {
    Ok(take_sink(pipeline).await?.1)
}

async fn take_sink(pipeline: &Pipeline) -> anyhow::Result<(Vec<CardEvent>, Vec<RunDigest>)> {
    let connection = lapin::Connection::connect(
        &pipeline.config.amqp_url,
        lapin::ConnectionProperties::default(),
    )
    .await
    .context("connecting to RabbitMQ to take the card events")?;
    let taken = take_audited(&connection, pipeline).await;
    let _ = connection.close(0, "done".into()).await;
    taken
}

async fn take_audited(
    connection: &lapin::Connection,
    pipeline: &Pipeline,
) -> anyhow::Result<(Vec<CardEvent>, Vec<RunDigest>)> {
    let channel = connection.create_channel().await?;
    let queue = pipeline.topology.name(names::CARD_EVENTS_AUDIT);
    let tenant = pipeline.tenant_text();
    let ours = |envelope: Option<&cardsync_proto::Envelope>| {
        envelope.is_some_and(|e| e.tenant_id == tenant)
    };
    let (mut events, mut digests) = (Vec::new(), Vec::new());
    while let Some(message) = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .with_context(|| format!("basic.get on {queue}"))?
    {
        let delivery = message.delivery;
        let kind = delivery.properties.kind().as_ref().map(|k| k.to_string());
        if kind.as_deref() == Some(RunDigest::TYPE) {
            let digest = RunDigest::decode(delivery.data.as_slice())
                .with_context(|| format!("an undecodable run digest on {queue}"))?;
            if ours(digest.envelope.as_ref()) {
                digests.push(digest);
            }
            continue;
        }
        ensure!(
            kind.as_deref() == Some(CardEvent::TYPE),
            "a message of type {kind:?} on {queue}"
        );
        let event = CardEvent::decode(delivery.data.as_slice())
            .with_context(|| format!("an undecodable card event on {queue}"))?;
        if ours(event.envelope.as_ref()) {
            events.push(event);
        }
    }
    let _ = channel.close(0, "done".into()).await;
    Ok((events, digests))
}

/// Polls `probe` every 100 ms until it returns `Some`, failing after `timeout` with `what`.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("{what}: still not the case after {} s", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A unique value for a test edit.
pub fn unique(prefix: &str) -> String {
    format!("{prefix} {}", &Uuid::new_v4().simple().to_string()[..8])
}

/// Gives the first enabled user a new job title in the directory and waits until their card shows
/// it: one notified change through the whole pipeline.
pub async fn retitle_one(pipeline: &Pipeline, prefix: &str) -> anyhow::Result<()> {
    let tenant = pipeline.tenant_text();
    let user = enabled_users(pipeline).await?.remove(0);
    let title = unique(prefix);
    pipeline
        .control
        .update_user(&tenant, &user.id, serde_json::json!({"jobTitle": title}))
        .await?;
    eventually(
        "the change reaches the card",
        Duration::from_secs(60),
        async || {
            let field = card_field(pipeline, &user.id, "job_title").await?;
            Ok(field.filter(|(_, v)| v.as_deref() == Some(title.as_str())))
        },
    )
    .await?;
    Ok(())
}
