//! `make bench`: how many card commands per second the card-writer applies, next to the best
//! rate plain sqlx reaches for the same rows on the same PostgreSQL in the same run (issue 4,
//! section 7: at least 5,000 commands/s, with that ratio).
//!
//! - Raw phases first: the physical limit. Each command becomes exactly what the writer commits
//!   for it (the card row upserted with a version check, one audit row with the states of the
//!   fields that changed, before and after, one outbox row with the encoded `CardEvent`), built
//!   with the very rules merge and event encoder the writer uses, and written with multi-row
//!   statements in transactions of `--raw-batch` commands on `--raw-connections` connections.
//!   With one command per transaction it shows what per-command commits cost; the best batch
//!   size is the denominator of the ratio.
//! - Writer phases, per queue: `--commands` realistic commands across `--users` users (every
//!   user created, then updated with growing versions, round robin) are published (confirmed)
//!   to the `cards` exchange while no writer runs; then the release `card-writer` binary starts
//!   as a child process, configured as deployed apart from its port, topology prefix, database
//!   and Redis key prefix, and the clock runs until PostgreSQL holds every user at its last
//!   version and the queue is empty. The outbox drain (events confirmed by RabbitMQ) is
//!   reported beside it. Every phase checks exactly once: one card per user, one audit row per
//!   command, and one outbox row per command (raw) or one event per command on
//!   `card-events.audit` and an empty outbox (writer).
//! - CPU per phase comes from `/proc`: card-writer, PostgreSQL (every backend), RabbitMQ, Redis,
//!   this generator, irq/steal and other processes, so the ceiling is visible.
//! - Everything it created (topology, tenants and their rows, Redis keys) is removed at the end.
//!
//! `cargo run --release --locked -p card-writer --example writer_bench [-- --help]`

use anyhow::{Context as _, bail, ensure};
use card_writer::Settings;
use cardsync_bench::{
    CpuProbe, CpuTimes, ServiceProcess, broker_process_ids, describe_machine, free_port,
    load_average, load_before_run, parse_setting, processes_named, progress, round2,
    service_binary, service_env, verdict, warn_about_neighbours,
};
use cardsync_bus::lapin::options::QueueDeclareOptions;
use cardsync_bus::lapin::types::FieldTable;
use cardsync_bus::lapin::{Connection, ConnectionProperties};
use cardsync_bus::{Outgoing, Publisher, QueueType, Topology, names, routing};
use cardsync_cards::{EventSpec, outbox_message};
use cardsync_config::Sources;
use cardsync_proto::card_event::Kind;
use cardsync_proto::{CardCommand, Cause, Envelope, FieldValue, card_command::Action};
use cardsync_rules::{FieldName, FieldRules, FieldStates, MappedCard, plan_create, plan_update};
use cardsync_store::tenants::{self, TenantConfig};
use clap::Parser;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;
use uuid::Uuid;

/// The raw phases and the writer reach PostgreSQL the same way: its local socket, as a
/// co-located database would be reached. (Over loopback TCP, sqlx negotiates TLS with Debian's
/// default server and the writer measured ~45% slower on this machine; the ratio stays fair
/// either way because both sides use the same URL.)
/// The benchmark's own database (`{}`: its name), made fresh for the run and dropped after it.
fn database_url(name: &str) -> String {
    format!("postgres://postgres@localhost/{name}?host=/var/run/postgresql")
}
const ADMIN_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const REDIS_URL: &str = "redis://127.0.0.1:6379/0";
/// Commands per confirmed publish while pre-loading a queue.
const PUBLISH_CHUNK: usize = 1_000;
/// How often the writer phase looks at PostgreSQL.
const POLL: Duration = Duration::from_millis(100);
/// How long the writer may take to drain and exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(30);

// Target from issue 4, section 7.
const TARGET_COMMANDS_PER_S: f64 = 5_000.0;

#[derive(Debug, Clone, Parser)]
#[command(about = "Card-writer throughput benchmark: raw PostgreSQL rate, writer rate, ratio")]
struct Args {
    /// Commands per writer phase (and per raw phase).
    #[arg(long, default_value_t = 50_000)]
    commands: usize,
    /// Distinct directory users the commands are spread over.
    #[arg(long, default_value_t = 5_000)]
    users: usize,
    /// Command queues to measure (`live`, `bulk`).
    #[arg(long, value_delimiter = ',', default_value = "live,bulk")]
    queues: Vec<String>,
    /// Commands per raw transaction, one raw phase each; the best one is the ratio's base.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    raw_batches: Vec<usize>,
    /// Connections of the raw phases, each committing transactions back to back.
    #[arg(long, default_value_t = 8)]
    raw_connections: usize,
    /// Queue type of the benchmark topology (`quorum`, as deployed, or `classic`).
    #[arg(long, default_value = "quorum")]
    queue_type: String,
    /// Give up on a writer phase after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Extra `CARDSYNC__…=value` settings for the writer, e.g. `CARDSYNC__CARD_WRITER__LIVE_PREFETCH=128`.
    #[arg(long = "set", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
}

/// Which command queue a writer phase loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Live,
    Bulk,
}

impl Lane {
    fn parse(text: &str) -> anyhow::Result<Self> {
        match text {
            "live" => Ok(Lane::Live),
            "bulk" => Ok(Lane::Bulk),
            other => bail!("unknown queue {other:?}: expected live or bulk"),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Lane::Live => "live",
            Lane::Bulk => "bulk",
        }
    }

    fn queue(self) -> &'static str {
        match self {
            Lane::Live => names::CARD_WRITER_LIVE,
            Lane::Bulk => names::CARD_WRITER_BULK,
        }
    }

    fn routing_key(self, tenant: &str) -> String {
        match self {
            Lane::Live => routing::live_command(tenant),
            Lane::Bulk => routing::bulk_command(tenant),
        }
    }

    fn cause(self) -> Cause {
        match self {
            Lane::Live => Cause::Notification,
            Lane::Bulk => Cause::Reconcile,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let args = Args::parse();
    ensure!(
        args.users > 0 && args.commands >= args.users,
        "--commands must be at least --users > 0"
    );
    ensure!(
        !args.raw_batches.is_empty() && args.raw_batches.iter().all(|b| *b > 0 && *b <= args.users),
        "--raw-batches needs sizes between 1 and --users (a batch never holds one user twice)"
    );
    ensure!(args.raw_connections > 0);
    let lanes = args
        .queues
        .iter()
        .map(|q| Lane::parse(q))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let queue_type = match args.queue_type.as_str() {
        "quorum" => QueueType::Quorum,
        "classic" => QueueType::Classic,
        other => bail!("unknown queue type {other:?}: expected quorum or classic"),
    };
    let _ = rustls::crypto::ring::default_provider().install_default();

    let load_before = load_before_run();

    let id = Uuid::new_v4().simple().to_string();
    let prefix = format!("bench.{}.", &id[..8]);
    let redis_prefix = format!("bench-cw-{}", &id[..8]);
    // A database of its own: a shared one carries the dead rows of every earlier run and test
    // (PostgreSQL may run without autovacuum), and the figures would drift with its history.
    let database = format!("cardsync_bench_{}", &id[..8]);
    let port = free_port()?;
    let mut env = service_env(port, &prefix, &database_url(&database), AMQP_URL);
    env.extend([
        (
            "CARDSYNC__BUS__QUEUE_TYPE".to_owned(),
            args.queue_type.clone(),
        ),
        ("CARDSYNC__REDIS__URL".to_owned(), REDIS_URL.to_owned()),
        (
            "CARDSYNC__REDIS__KEY_PREFIX".to_owned(),
            redis_prefix.clone(),
        ),
    ]);
    env.extend(args.settings.iter().cloned());
    let settings = Settings::load(&Sources {
        file: None,
        env: Some(env.clone()),
    })
    .context("the card-writer settings of the benchmark are invalid")?;
    let topology = Topology::cardsync(&prefix)
        .with_retry_delays(&settings.bus.retry_delays)
        .with_queue_type(queue_type);

    // Nothing is created until every prerequisite is there.
    let admin = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .context("RabbitMQ must run on 127.0.0.1:5672: run `make services`")?;
    let admin_channel = admin.create_channel().await?;
    let binary = service_binary("card-writer", "writer_bench")?;
    let pool = bench_database(&database).await?;
    let redis = redis::Client::open(REDIS_URL)?
        .get_multiplexed_async_connection()
        .await
        .context("Redis must run on 127.0.0.1:6379: run `make services`")?;

    let log = std::env::temp_dir().join(format!("writer_bench-{prefix}log"));
    let outcome = async {
        cardsync_bus::declare(&admin_channel, &topology)
            .await
            .context("declaring the benchmark topology")?;
        let publisher = Publisher::connect(&settings.bus, topology.clone())
            .await
            .context("connecting the benchmark publisher")?;
        let bench = Bench {
            args: &args,
            pool: &pool,
            topology: &topology,
            admin: &admin_channel,
            publisher: &publisher,
            env: &env,
            binary: &binary,
            log: &log,
            metrics_url: format!("http://127.0.0.1:{port}/metrics"),
            started,
        };
        let result = bench.run(load_before, &lanes).await;
        publisher.close().await;
        result
    }
    .await;

    progress(started, "cleaning up");
    let deleted = cardsync_bus::delete(&admin_channel, &topology).await;
    pool.close().await;
    let removed = drop_database(&database).await;
    let flushed = flush_redis(redis, &redis_prefix).await;
    let _ = admin.close(200, "bench done".into()).await;
    let report = outcome?;
    deleted.context("deleting the benchmark topology")?;
    removed.context("dropping the benchmark database")?;
    flushed.context("deleting the benchmark's Redis keys")?;
    let _ = std::fs::remove_file(&log);
    report.print();
    Ok(())
}

/// A new database for the run, migrated.
async fn bench_database(name: &str) -> anyhow::Result<sqlx::PgPool> {
    let admin = sqlx::PgPool::connect(ADMIN_DATABASE_URL)
        .await
        .context("PostgreSQL must run on 127.0.0.1:5432: run `make services`")?;
    // The name is ours (hex digits), so it can be spliced into the statement.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .with_context(|| format!("creating {name}"))?;
    admin.close().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(32)
        .connect(&database_url(name))
        .await
        .with_context(|| format!("connecting to {name}"))?;
    cardsync_store::migrate(&pool)
        .await
        .with_context(|| format!("migrating {name}"))?;
    Ok(pool)
}

/// Drops the run's database (and whatever the writer left connected to it).
async fn drop_database(name: &str) -> anyhow::Result<()> {
    let admin = sqlx::PgPool::connect(ADMIN_DATABASE_URL).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await?;
    admin.close().await;
    Ok(())
}

async fn flush_redis(
    mut redis: redis::aio::MultiplexedConnection,
    prefix: &str,
) -> anyhow::Result<()> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut redis)
        .await?;
    for chunk in keys.chunks(1_000) {
        let _: usize = redis::cmd("DEL").arg(chunk).query_async(&mut redis).await?;
    }
    Ok(())
}

/// A command stream for one tenant: every user created at version 1, then updated round robin
/// with growing versions, each update changing a visible field (so each command writes one
/// audit row and one event, as a real change does).
struct Workload {
    tenant: Uuid,
    commands: Vec<CardCommand>,
    /// Sum over users of their last version: what `sum(applied_version)` reaches when done.
    final_version_sum: i64,
}

impl Workload {
    fn new(tenant: Uuid, users: usize, count: usize, cause: Cause) -> Self {
        let mut commands = Vec::with_capacity(count);
        let mut versions = vec![0_u64; users];
        for index in 0..count {
            let user = index % users;
            versions[user] += 1;
            commands.push(card_command(tenant, user, versions[user], cause));
        }
        let final_version_sum = versions.iter().map(|v| *v as i64).sum();
        Self {
            tenant,
            commands,
            final_version_sum,
        }
    }
}

/// A realistic command: the default mapping's fields with plausible values.
fn card_command(tenant: Uuid, user: usize, version: u64, cause: Cause) -> CardCommand {
    const TITLES: [&str; 6] = [
        "Account Manager",
        "Software Engineer",
        "Sales Director",
        "Product Owner",
        "Support Specialist",
        "Chief Financial Officer",
    ];
    const CITIES: [&str; 4] = [
        "1 Microsoft Way, Redmond, WA, 98052, United States",
        "Friedrichstrasse 68, Berlin, BE, 10117, Germany",
        "20 Bishopsgate, London, ENG, EC2N 4AG, United Kingdom",
        "3-4-1 Shibaura, Minato, Tokyo, 108-0023, Japan",
    ];
    let user_id = Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0000 | user as u128);
    let title = format!(
        "{} (v{version})",
        TITLES[(user + version as usize) % TITLES.len()]
    );
    let fields = [
        ("name", format!("Bench User {user:05}")),
        ("email", format!("bench.user{user:05}@contoso.example")),
        ("job_title", title),
        ("company", "Contoso Ltd".to_owned()),
        ("phone", format!("+1 425 555 {:04}", user % 10_000)),
        ("location", CITIES[user % CITIES.len()].to_owned()),
        ("department", format!("Department {}", user % 40)),
    ];
    CardCommand {
        envelope: Some(Envelope::new(tenant.to_string(), cause)),
        action: Action::Upsert as i32,
        user_id: user_id.to_string(),
        uid: user_id.to_string(),
        version,
        fields: fields
            .into_iter()
            .map(|(name, value)| FieldValue {
                name: name.to_owned(),
                value: Some(value),
            })
            .collect(),
        observed_at: Some(cardsync_proto::timestamp(time::OffsetDateTime::now_utc())),
        ..Default::default()
    }
}

/// What the writer would commit for each command, precomputed so a raw phase spends its time in
/// PostgreSQL only.
struct RawRow {
    card_id: Uuid,
    user_id: String,
    email: String,
    version: i64,
    fields_before: Option<String>,
    fields_after: String,
    action: &'static str,
    message_id: String,
    event_id: Uuid,
    exchange: String,
    routing_key: String,
    message_type: String,
    payload: Vec<u8>,
    headers: String,
}

fn raw_rows(workload: &Workload, rules: &FieldRules, exchange: &str) -> Vec<RawRow> {
    let mut cards: HashMap<String, (Uuid, FieldStates)> = HashMap::new();
    let mut rows = Vec::with_capacity(workload.commands.len());
    for command in &workload.commands {
        let fields: BTreeMap<FieldName, Option<String>> = command
            .fields
            .iter()
            .map(|f| (FieldName::new(f.name.clone()), f.value.clone()))
            .collect();
        let incoming = MappedCard::from_parts(command.user_id.clone(), command.uid.clone(), fields);
        let (card_id, before, after, kind, changed) = match cards.get(&command.user_id) {
            None => {
                let states = plan_create(rules, &incoming);
                let changed = states.filled_names();
                (Uuid::now_v7(), None, states, Kind::Created, changed)
            }
            Some((card_id, current)) => {
                let plan = plan_update(rules, current, &incoming);
                let changed: Vec<String> =
                    plan.changes.iter().map(|c| c.field.to_string()).collect();
                (
                    *card_id,
                    Some(current.clone()),
                    plan.states,
                    Kind::Updated,
                    changed,
                )
            }
        };
        let (changes_before, changes_after) = FieldStates::audited(before.as_ref(), &after);
        let envelope = command.envelope.as_ref().expect("built with an envelope");
        let message = outbox_message(
            &EventSpec {
                tenant_id: workload.tenant,
                cause: Cause::Notification,
                causation_id: &envelope.message_id,
                kind,
                card_id,
                user_id: &command.user_id,
                version: command.version as i64,
                changed_fields: &changed,
            },
            exchange,
        );
        rows.push(RawRow {
            card_id,
            user_id: command.user_id.clone(),
            email: after.value("email").unwrap_or_default().to_owned(),
            version: command.version as i64,
            // The audit row holds the fields that changed, as the writer's does.
            fields_before: changes_before.map(|b| serde_json::to_string(&b).unwrap_or_default()),
            fields_after: serde_json::to_string(&changes_after).unwrap_or_default(),
            action: if before.is_some() {
                "updated"
            } else {
                "created"
            },
            message_id: envelope.message_id.clone(),
            event_id: message.message_id,
            exchange: message.exchange,
            routing_key: message.routing_key,
            message_type: message.message_type,
            payload: message.payload,
            headers: serde_json::to_string(&message.headers).unwrap_or_default(),
        });
        cards.insert(command.user_id.clone(), (card_id, after));
    }
    rows
}

/// One raw transaction: the card rows upserted only where the version is newer (the writer's
/// check, atomically), then the audit and outbox rows, then the commit (synchronous_commit on).
async fn raw_transaction(
    pool: &sqlx::PgPool,
    tenant: Uuid,
    rows: &[RawRow],
) -> Result<(), sqlx::Error> {
    let column = |f: &dyn Fn(&RawRow) -> String| rows.iter().map(f).collect::<Vec<String>>();
    let card_ids: Vec<Uuid> = rows.iter().map(|r| r.card_id).collect();
    let versions: Vec<i64> = rows.iter().map(|r| r.version).collect();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO cards (tenant_id, card_id, user_id, uid, email, status, fields,
                            applied_version, role, created_at, updated_at)
         SELECT $1, c, u, u, e, 'active', f::json, v, 'member', now(), now()
           FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::bigint[])
                AS t(c, u, e, f, v)
         ON CONFLICT (tenant_id, user_id) WHERE user_id IS NOT NULL DO UPDATE
            SET email = EXCLUDED.email, fields = EXCLUDED.fields,
                applied_version = EXCLUDED.applied_version, updated_at = now()
          WHERE cards.applied_version < EXCLUDED.applied_version",
    )
    .bind(tenant)
    .bind(&card_ids)
    .bind(column(&|r| r.user_id.clone()))
    .bind(column(&|r| r.email.clone()))
    .bind(column(&|r| r.fields_after.clone()))
    .bind(&versions)
    .execute(&mut *tx)
    .await?;
    let befores: Vec<Option<String>> = rows.iter().map(|r| r.fields_before.clone()).collect();
    sqlx::query(
        "INSERT INTO audit_log (tenant_id, card_id, action, cause, message_id, version,
                                status_before, status_after, fields_before, fields_after)
         SELECT $1, c, a, $2, m, v, CASE WHEN fb IS NULL THEN NULL ELSE 'active' END, 'active',
                fb::json, fa::json
           FROM unnest($3::uuid[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::text[])
                AS t(c, a, m, v, fb, fa)",
    )
    .bind(tenant)
    .bind(Cause::Notification.as_str())
    .bind(&card_ids)
    .bind(column(&|r| r.action.to_owned()))
    .bind(column(&|r| r.message_id.clone()))
    .bind(&versions)
    .bind(&befores)
    .bind(column(&|r| r.fields_after.clone()))
    .execute(&mut *tx)
    .await?;
    let event_ids: Vec<Uuid> = rows.iter().map(|r| r.event_id).collect();
    let payloads: Vec<Vec<u8>> = rows.iter().map(|r| r.payload.clone()).collect();
    sqlx::query(
        "INSERT INTO outbox (tenant_id, message_id, exchange, routing_key, message_type, payload,
                             headers)
         SELECT $1, m, x, k, t, p, h::json
           FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::text[])
                AS r(m, x, k, t, p, h)",
    )
    .bind(tenant)
    .bind(&event_ids)
    .bind(column(&|r| r.exchange.clone()))
    .bind(column(&|r| r.routing_key.clone()))
    .bind(column(&|r| r.message_type.clone()))
    .bind(&payloads)
    .bind(column(&|r| r.headers.clone()))
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Everything the phases share.
struct Bench<'a> {
    args: &'a Args,
    pool: &'a sqlx::PgPool,
    topology: &'a Topology,
    admin: &'a cardsync_bus::lapin::Channel,
    publisher: &'a Publisher,
    env: &'a [(String, String)],
    binary: &'a Path,
    log: &'a Path,
    /// The writer's `/metrics`, where the phases watch its progress.
    metrics_url: String,
    started: Instant,
}

impl<'a> Bench<'a> {
    async fn run(&self, load_before: Vec<f64>, lanes: &[Lane]) -> anyhow::Result<Report> {
        let args = self.args;
        let cpu = CpuProbe::new();
        progress(
            self.started,
            format_args!(
                "{} CPUs, RabbitMQ pid(s) {:?}, load {:?}",
                cpu.cpus(),
                broker_process_ids(),
                load_before
            ),
        );
        let rules = FieldRules::default();
        let exchange = self.topology.name(names::CARD_EVENTS);

        let mut raw = Vec::new();
        for &batch in &args.raw_batches {
            self.settle().await?;
            let tenant = self.new_tenant().await?;
            let workload = Workload::new(tenant, args.users, args.commands, Cause::Notification);
            let rows = Arc::new(raw_rows(&workload, &rules, &exchange));
            let probe = cpu.snapshot(&watched(None));
            let began = Instant::now();
            let next = Arc::new(AtomicUsize::new(0));
            let mut workers = JoinSet::new();
            for _ in 0..args.raw_connections {
                let (pool, rows, next) = (self.pool.clone(), rows.clone(), next.clone());
                workers.spawn(async move {
                    loop {
                        let start = next.fetch_add(batch, Ordering::Relaxed);
                        if start >= rows.len() {
                            return Ok::<_, sqlx::Error>(());
                        }
                        let end = (start + batch).min(rows.len());
                        raw_transaction(&pool, tenant, &rows[start..end]).await?;
                    }
                });
            }
            while let Some(done) = workers.join_next().await {
                done?.context("a raw transaction failed")?;
            }
            let elapsed = began.elapsed();
            let split = CpuSplit::since(&cpu, &probe, None);
            let check = self.check(&workload).await?;
            ensure!(
                check.applied(&workload, args.users, args.commands),
                "the raw phase left the store inconsistent: {check:?}"
            );
            let phase = RawPhase {
                batch,
                commands: rows.len(),
                elapsed,
                cpu: split,
            };
            progress(
                self.started,
                format_args!(
                    "raw, {batch:>3} per transaction: {:>7.0} commands/s ({})",
                    phase.per_second(),
                    split.short()
                ),
            );
            raw.push(phase);
            // No relay publishes the raw rows; left in the outbox, the writer's relay would
            // publish them (and walk past them) during the writer phases.
            sqlx::query("DELETE FROM outbox WHERE tenant_id = $1")
                .bind(tenant)
                .execute(self.pool)
                .await
                .context("removing the raw phase's outbox rows")?;
            let _ = Command::new("sync").status();
        }

        let mut writer = Vec::new();
        for &lane in lanes {
            let phase = self.writer_phase(lane, &cpu).await?;
            writer.push(phase);
            let _ = Command::new("sync").status();
        }

        Ok(Report {
            args: args.clone(),
            load_before,
            load_after: load_average(),
            raw,
            writer,
            started: self.started,
        })
    }

    /// Before a phase: what autovacuum would have done by now (PostgreSQL may run without it;
    /// this machine's does, and earlier runs and the tests leave dead rows behind), so the
    /// planner sees the tables as they are; then a checkpoint, so every phase starts right
    /// after one (dirty pages written now, not in a burst during the phase; with the default
    /// `max_wal_size` a checkpoint otherwise fell at a different point of every run).
    async fn settle(&self) -> anyhow::Result<()> {
        sqlx::query("VACUUM (ANALYZE) cards, card_teams, teams, audit_log, outbox")
            .execute(self.pool)
            .await
            .context("vacuuming the card tables")?;
        sqlx::query("CHECKPOINT")
            .execute(self.pool)
            .await
            .context("checkpointing")?;
        let _ = Command::new("sync").status();
        Ok(())
    }

    async fn new_tenant(&self) -> anyhow::Result<Uuid> {
        let tenant = Uuid::new_v4();
        tenants::put(
            self.pool,
            &TenantConfig {
                id: tenant,
                name: format!("writer bench {tenant}"),
                rules: FieldRules::default(),
                invites_enabled: false,
                admin_roles_enabled: false,
            },
        )
        .await
        .context("storing a benchmark tenant")?;
        Ok(tenant)
    }

    /// Pre-loads the queue, starts the writer and times it until every command is applied.
    async fn writer_phase(&self, lane: Lane, cpu: &CpuProbe) -> anyhow::Result<WriterPhase> {
        let args = self.args;
        let tenant = self.new_tenant().await?;
        let workload = Workload::new(tenant, args.users, args.commands, lane.cause());
        let exchange = self.topology.name(names::CARDS);
        let routing_key = lane.routing_key(&tenant.to_string());
        let queue = self.topology.name(lane.queue());
        let loading = Instant::now();
        for chunk in workload.commands.chunks(PUBLISH_CHUNK) {
            let batch = chunk
                .iter()
                .map(|command| Outgoing::new(&exchange, &routing_key, command))
                .collect();
            self.publisher
                .publish_all(batch)
                .await
                .context("pre-loading the command queue")?;
        }
        let depth = self.depth(&queue).await?;
        ensure!(
            depth as usize == args.commands,
            "{queue} holds {depth} messages after pre-loading {}",
            args.commands
        );
        progress(
            self.started,
            format_args!(
                "{}: {} commands for {} users queued in {:.1} s; starting the writer",
                lane.label(),
                args.commands,
                args.users,
                loading.elapsed().as_secs_f64()
            ),
        );
        let events_queue = self.topology.name(names::CARD_EVENTS_AUDIT);
        let events_before = self.depth(&events_queue).await?;
        self.settle().await?;

        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let mut child = ServiceProcess::spawn(self.binary, self.env, self.log)?;
        let pid = child.pid();
        let spawned = Instant::now();
        let probe = cpu.snapshot(&watched(Some(pid)));
        let deadline = spawned + Duration::from_secs(args.timeout);
        let mut first_applied: Option<(Instant, i64)> = None;
        let mut applied_at = None;
        let mut last_report = spawned;
        let mut last_sum = 0_i64;
        let mut peak_rate = 0.0_f64;
        let mut split = None;
        let drained_at = loop {
            tokio::time::sleep(POLL).await;
            let now = Instant::now();
            ensure!(
                !child.has_exited(),
                "the card-writer exited; its log: {}",
                self.log.display()
            );
            ensure!(
                now < deadline,
                "the writer did not finish within {} s; its log: {}",
                args.timeout,
                self.log.display()
            );
            // The writer's own counters, not PostgreSQL: a query per poll would cost the
            // database it measures (a count and a sum over the tenant's cards took ~45 ms).
            let Some(progress_now) = self.progress(&client).await else {
                continue;
            };
            let (version_sum, pending) = (
                progress_now.applied as i64,
                (args.commands as u64).saturating_sub(progress_now.published),
            );
            // One command applied moves the count by one, as it moves a version sum.
            if first_applied.is_none() && version_sum > 0 {
                first_applied = Some((now, version_sum));
            }
            if now.duration_since(last_report) >= Duration::from_secs(1) {
                let rate =
                    (version_sum - last_sum) as f64 / now.duration_since(last_report).as_secs_f64();
                peak_rate = peak_rate.max(rate);
                progress(
                    self.started,
                    format_args!(
                        "{}: {version_sum:>7} applied ({rate:>6.0}/s), outbox pending {pending}",
                        lane.label()
                    ),
                );
                last_report = now;
                last_sum = version_sum;
            }
            if applied_at.is_none()
                && version_sum as usize >= args.commands
                && self.depth(&queue).await? == 0
            {
                applied_at = Some(now);
                split = Some(CpuSplit::since(cpu, &probe, Some(pid)));
            }
            if applied_at.is_some() && pending == 0 {
                break now;
            }
        };
        let Some(applied_at) = applied_at else {
            bail!("unreachable: drained before applied");
        };
        let exit = child.stop(STOP_GRACE);
        let check = self.check(&workload).await?;
        ensure!(
            check.applied(&workload, args.users, 0),
            "the writer left the store inconsistent: {check:?} (exit {exit:?}, log {})",
            self.log.display()
        );
        let dead_letters = self.depth(&format!("{queue}.dlq")).await?;
        ensure!(
            dead_letters == 0,
            "{dead_letters} commands were dead-lettered"
        );
        // The events themselves, on the queue every card event reaches.
        let events = i64::from(self.depth(&events_queue).await?) - i64::from(events_before);
        ensure!(
            events == args.commands as i64,
            "{events_queue} received {events} card events for {} commands",
            args.commands
        );
        let (first_at, first_sum) = first_applied.unwrap_or((spawned, 0));
        let phase = WriterPhase {
            lane,
            commands: args.commands,
            from_start: applied_at.duration_since(spawned),
            applying: applied_at.duration_since(first_at),
            applied_in_window: (workload.final_version_sum - first_sum).max(0) as usize,
            outbox_drained: drained_at.duration_since(spawned),
            peak_rate,
            cpu: split.unwrap_or_default(),
        };
        progress(
            self.started,
            format_args!(
                "{}: {:.0} commands/s ({}), exit {exit:?}",
                lane.label(),
                phase.per_second(),
                phase.cpu.short()
            ),
        );
        Ok(phase)
    }

    /// Commands the running writer has applied (every outcome but a failure) and events it
    /// has published, from its `/metrics`; `None` while it is not answering yet.
    async fn progress(&self, client: &reqwest::Client) -> Option<WriterProgress> {
        let text = client
            .get(&self.metrics_url)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let mut progress = WriterProgress::default();
        for line in text.lines() {
            let Some(value) = line
                .rsplit(' ')
                .next()
                .and_then(|value| value.parse::<f64>().ok())
            else {
                continue;
            };
            if line.starts_with("cardsync_card_writer_commands_total{")
                && !["failed", "invalid", "unknown_tenant"]
                    .iter()
                    .any(|outcome| line.contains(&format!("outcome=\"{outcome}\"")))
            {
                progress.applied += value as u64;
            } else if line.starts_with("cardsync_card_writer_outbox_published_total") {
                progress.published += value as u64;
            }
        }
        Some(progress)
    }

    async fn depth(&self, queue: &str) -> anyhow::Result<u32> {
        let declared = self
            .admin
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("inspecting {queue}"))?;
        Ok(declared.message_count())
    }

    /// What the store holds for a workload's tenant.
    async fn check(&self, workload: &Workload) -> anyhow::Result<StoreCheck> {
        let (cards, version_sum, audit, outbox): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM cards WHERE tenant_id = $1),
                    (SELECT coalesce(sum(applied_version), 0)::bigint FROM cards WHERE tenant_id = $1),
                    (SELECT count(*) FROM audit_log WHERE tenant_id = $1),
                    (SELECT count(*) FROM outbox WHERE tenant_id = $1)",
        )
        .bind(workload.tenant)
        .fetch_one(self.pool)
        .await?;
        Ok(StoreCheck {
            cards,
            version_sum,
            audit,
            outbox,
        })
    }
}

/// A running writer's counters.
#[derive(Debug, Default, Clone, Copy)]
struct WriterProgress {
    applied: u64,
    published: u64,
}

/// Rows of one tenant after a phase.
#[derive(Debug)]
struct StoreCheck {
    cards: i64,
    version_sum: i64,
    audit: i64,
    outbox: i64,
}

impl StoreCheck {
    /// Exactly once: one card per user at its last version, one audit row per command, and
    /// `outbox` rows left (one per command when no relay ran, none once the relay published).
    fn applied(&self, workload: &Workload, users: usize, outbox: usize) -> bool {
        let commands = workload.commands.len() as i64;
        self.cards == users as i64
            && self.version_sum == workload.final_version_sum
            && self.audit == commands
            && self.outbox == outbox as i64
    }
}

struct RawPhase {
    batch: usize,
    commands: usize,
    elapsed: Duration,
    cpu: CpuSplit,
}

impl RawPhase {
    fn per_second(&self) -> f64 {
        self.commands as f64 / self.elapsed.as_secs_f64()
    }
}

struct WriterPhase {
    lane: Lane,
    commands: usize,
    /// From spawning the process to the last command applied (start-up included).
    from_start: Duration,
    /// From the first poll that saw an applied command to the last one.
    applying: Duration,
    /// Commands applied within `applying`.
    applied_in_window: usize,
    /// From spawning to the last event confirmed by the broker.
    outbox_drained: Duration,
    /// Best one-second rate seen.
    peak_rate: f64,
    cpu: CpuSplit,
}

impl WriterPhase {
    /// The sustained rate: commands applied while applying, start-up excluded.
    fn per_second(&self) -> f64 {
        let seconds = self.applying.as_secs_f64();
        if seconds > 0.0 {
            self.applied_in_window as f64 / seconds
        } else {
            0.0
        }
    }
}

/// What a phase's CPU split accounts for, looked up at each snapshot (PostgreSQL starts a
/// backend per connection): the writer (none in the raw phases), PostgreSQL, RabbitMQ, Redis.
fn watched(writer: Option<u32>) -> [Vec<u32>; 4] {
    [
        writer.into_iter().collect(),
        processes_named("postgres", None),
        broker_process_ids(),
        processes_named("redis-server", None),
    ]
}

/// Cores used during a phase (each between 0 and the number of CPUs).
#[derive(Debug, Clone, Copy, Default)]
struct CpuSplit {
    writer: f64,
    postgres: f64,
    broker: f64,
    redis: f64,
    bench: f64,
    /// irq + softirq (mostly loopback TCP) and hypervisor steal.
    interrupts: f64,
    other: f64,
    idle: f64,
}

impl CpuSplit {
    /// Cores used since `before`, with the writer `writer` (the one `before` was taken with).
    fn since(cpu: &CpuProbe, before: &CpuTimes<4>, writer: Option<u32>) -> Self {
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

    fn json(&self) -> Value {
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

    fn short(&self) -> String {
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

struct Report {
    args: Args,
    load_before: Vec<f64>,
    load_after: Vec<f64>,
    raw: Vec<RawPhase>,
    writer: Vec<WriterPhase>,
    started: Instant,
}

impl Report {
    fn print(self) {
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
