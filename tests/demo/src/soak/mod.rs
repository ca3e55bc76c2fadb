//! `make soak`: the whole pipeline, two tenants sharing object ids and email addresses (the
//! second one group-scoped), a long stream of directory changes, and a schedule of faults drawn
//! from a seed ([`schedule`]) injected one after the other ([`faults`]). After each fault heals
//! the soak measures how long the cards take to converge again; at the end every card of both
//! tenants is compared with the directory, and the report ([`report`]) says what was done and
//! whether anything was lost or doubled.
//!
//! "Converged" after a fault: every card that still disagrees with the directory belongs to a
//! user changed after the fault healed (a change in flight, not one the fault lost). Photos are
//! left out of that look (Graph announces no photo change; the delta-worker's budgeted scan
//! finds them in its rounds) and checked at the end, with Sync Now rounds as `make demo` asks.

pub mod faults;
pub mod report;
pub mod schedule;
pub mod stream;

use crate::changes::Model;
use crate::check;
use crate::pipeline::{Database, Pipeline, PipelineConfig, section};
use crate::tenants::NewTenant;
use faults::Injector;
use report::{Episode, Findings};
use schedule::{Family, Fault, Moment, Plan, Schedule};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use stream::{Shared, Stream};

/// How a soak runs.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// Seed of the schedule, the directories and the change stream.
    pub seed: u64,
    /// How long the change stream runs.
    pub length: Duration,
    /// Changes per second.
    pub rate: f64,
    /// Mean time between faults.
    pub mean_gap: Duration,
    /// Fault families to draw from.
    pub families: Vec<Family>,
    /// Longest a fault lasts.
    pub max_fault: Duration,
    /// Users of each tenant.
    pub users: usize,
    /// Longest wait for convergence after one fault before the soak moves on (and counts it).
    pub converge_cap: Duration,
    /// Longest wait for convergence after the stream stopped.
    pub settle_timeout: Duration,
    /// The delta-worker's idle-tenant safety poll (what repairs a lost notification).
    pub safety_poll: String,
    /// Where the binaries are.
    pub bin_dir: PathBuf,
    /// RabbitMQ.
    pub amqp_url: String,
    /// PostgreSQL server (the soak creates a database of its own on it).
    pub postgres_server: String,
    /// Redis: a database index of the soak's own, since it is flushed.
    pub redis_url: String,
}

impl SoakConfig {
    /// The schedule this configuration draws.
    pub fn schedule(&self) -> Schedule {
        Schedule::draw(&Plan {
            seed: self.seed,
            length: self.length,
            mean_gap: self.mean_gap,
            families: self.families.clone(),
            tenants: 2,
            max_fault: self.max_fault,
        })
    }
}

/// The groups the second tenant is scoped to: membership moves between departments take users
/// in and out of scope.
pub const SCOPE_GROUPS: [&str; 2] = ["Dept Sales", "Dept Engineering"];

/// How a convergence wait ended.
#[derive(Debug)]
pub struct Converged {
    /// How long it took; `None` when it did not within the cap.
    pub after: Option<Duration>,
    /// What still diverged at the last look (a few examples).
    pub blockers: Vec<String>,
    /// How long one look (every tenant's snapshot and comparison) took on average: the
    /// granularity of `after`.
    pub look: Duration,
}

/// Waits until every divergent card (photos aside) of every tenant belongs to a user changed
/// at or after `since_ms`, at most `cap`.
pub async fn converge(
    pipeline: &mut Pipeline,
    changes: &Shared,
    since_ms: i64,
    cap: Duration,
) -> anyhow::Result<Converged> {
    let started = Instant::now();
    let mut looks = 0u32;
    loop {
        pipeline.supervise()?;
        looks += 1;
        let mut blockers = Vec::new();
        let mut examples = Vec::new();
        // Every tenant's snapshot at once: a large one takes seconds on a busy machine.
        let mut snapshots = tokio::task::JoinSet::new();
        for (index, tenant) in pipeline.tenants.iter().enumerate() {
            let (control, tenant) = (pipeline.control.clone(), *tenant);
            snapshots
                .spawn(async move { (index, tenant, control.snapshot(&tenant.to_string()).await) });
        }
        let mut taken = Vec::new();
        while let Some(done) = snapshots.join_next().await {
            let (index, tenant, snapshot) = done?;
            taken.push((index, tenant, snapshot?));
        }
        taken.sort_by_key(|(index, _, _)| *index);
        for (_, tenant, snapshot) in taken {
            let report = check::compare(&pipeline.pool, tenant, &snapshot).await?;
            let changes = stream::lock(changes);
            for user in &report.divergent_users {
                if changes
                    .last_change(tenant, user)
                    .is_none_or(|at| at < since_ms)
                {
                    blockers.push(user.clone());
                    examples.extend(
                        report
                            .examples
                            .iter()
                            .filter(|e| e.starts_with(user.as_str()))
                            .map(|e| format!("tenant {}: {e}", &tenant.to_string()[..8])),
                    );
                }
            }
        }
        let look = started.elapsed() / looks;
        if blockers.is_empty() {
            return Ok(Converged {
                after: Some(started.elapsed()),
                blockers,
                look,
            });
        }
        if started.elapsed() >= cap {
            if examples.is_empty() {
                examples = blockers.iter().take(5).cloned().collect();
            }
            examples.insert(0, format!("{} card(s) still divergent", blockers.len()));
            examples.truncate(6);
            return Ok(Converged {
                after: None,
                blockers: examples,
                look,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Change streams per tenant, each over its own share of the users: one stream waits for each
/// change graph-sim makes, and one per tenant falls short of 50 changes/s in a debug build.
pub const STREAMS_PER_TENANT: usize = 8;

/// `snapshot` split into `parts` snapshots with the same groups and a disjoint share of the
/// users each, so that models built from them never change the same user at once.
fn split_users(snapshot: &serde_json::Value, parts: usize) -> Vec<serde_json::Value> {
    let users = snapshot["directory"]["users"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    (0..parts.max(1))
        .map(|part| {
            let mut share = snapshot.clone();
            share["directory"]["users"] = users
                .iter()
                .enumerate()
                .filter(|(index, _)| index % parts.max(1) == part)
                .map(|(_, user)| user.clone())
                .collect();
            share
        })
        .collect()
}

/// Starts the pipeline (left in `slot` so that the caller stops it however the soak ends) and
/// runs the soak; `injector` is the caller's too, so that it can heal what is still broken.
pub async fn run(
    config: &SoakConfig,
    slot: &mut Option<Pipeline>,
    injector: &mut Injector,
) -> anyhow::Result<Findings> {
    let schedule = config.schedule();
    report::print_schedule(config, &schedule);
    let mut pipeline_config = PipelineConfig::new("soak", config.bin_dir.clone())?;
    pipeline_config.users = config.users;
    pipeline_config.seed = config.seed;
    pipeline_config.amqp_url.clone_from(&config.amqp_url);
    pipeline_config.database = Database::Fresh {
        server_url: config.postgres_server.clone(),
    };
    pipeline_config.redis_url.clone_from(&config.redis_url);
    pipeline_config
        .safety_poll_interval
        .clone_from(&config.safety_poll);
    pipeline_config.safety_poll_tick = "2s".to_owned();
    // The soak measures convergence under faults at tens of changes a second on tenants of a
    // few dozen cards: one round there may well update half a tenant's cards, which the
    // mass-change safety rail would hold for an admin. It is tested on its own
    // (tests/demo/tests/pipeline/safety_rail.rs); here it lets everything through.
    pipeline_config.rail = Some((100.0, 100.0, 1_000_000));
    pipeline_config.delete_topology = true;
    // A service restarted while the machine is busy (a 2-core host running the soak and
    // more) needs more than the default second to connect and declare its topology.
    pipeline_config.service_env = vec![(
        "CARDSYNC__BUS__CONNECT_TIMEOUT".to_owned(),
        "10s".to_owned(),
    )];
    println!("logs in {}", pipeline_config.logs.display());
    let pipeline = slot.insert(Pipeline::start(pipeline_config).await?);
    pipeline
        .add_tenant(&NewTenant {
            users: config.users,
            seed: config.seed,
            scope_groups: SCOPE_GROUPS.map(str::to_owned).to_vec(),
        })
        .await?;
    let mut findings = Findings::new(config, &schedule);

    section("initial syncs, with the schedule's kills in them");
    let changes = Shared::default();
    for (index, tenant) in pipeline.tenants.clone().into_iter().enumerate() {
        let snapshot = pipeline.control.snapshot(&tenant.to_string()).await?;
        let expected = check::compare(&pipeline.pool, tenant, &snapshot)
            .await?
            .expected_active;
        let kill = schedule
            .initial
            .iter()
            .find(|fault| matches!(fault, Fault::Kill { tenant: t, .. } if *t == index));
        let started = Instant::now();
        pipeline
            .request_sync_for(tenant, cardsync_proto::sync_request::Depth::Full)
            .await?;
        let mut since_ms = crate::changes::now_ms();
        if let Some(
            fault @ Fault::Kill {
                moment: Moment::InitialSync { percent, after },
                ..
            },
        ) = kill
        {
            let threshold = expected * usize::from(*percent) / 100;
            while started.elapsed() < *after && pipeline.active_cards_of(tenant).await? < threshold
            {
                pipeline.supervise()?;
                anyhow::ensure!(
                    started.elapsed() < Duration::from_secs(300),
                    "tenant {}: fewer than {threshold} cards after 300 s",
                    index + 1
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let cards = pipeline.active_cards_of(tenant).await?;
            println!(
                "tenant {} ({expected} cards expected): {fault} ({cards} written at the kill)",
                index + 1
            );
            let injected = injector.inject(pipeline, fault, &changes).await?;
            since_ms = injected.healed_ms;
            let converged = converge(pipeline, &changes, since_ms, config.converge_cap).await?;
            findings.episode(Episode::new(
                fault,
                Duration::ZERO,
                Duration::ZERO,
                converged,
            ));
        } else {
            let converged = converge(pipeline, &changes, since_ms, config.converge_cap).await?;
            anyhow::ensure!(
                converged.after.is_some(),
                "tenant {}: the initial sync did not converge: {:?}",
                index + 1,
                converged.blockers
            );
        }
        println!(
            "tenant {}: {expected} cards, initial sync converged after {:.1} s",
            index + 1,
            started.elapsed().as_secs_f64()
        );
    }

    section("the change stream under the fault schedule");
    let mut models = Vec::new();
    for tenant in &pipeline.tenants {
        let text = tenant.to_string();
        let snapshot = pipeline.control.snapshot(&text).await?;
        for part in split_users(&snapshot, STREAMS_PER_TENANT) {
            models.push((*tenant, Model::from_snapshot(&text, &part).with_arrivals()));
        }
    }
    let stream = Stream::start(
        pipeline.control.clone(),
        models,
        config.rate,
        config.seed ^ 0x5eed,
    );
    let changes = stream.changes.clone();
    let started = Instant::now();
    for planned in &schedule.stream {
        while started.elapsed() < planned.at {
            pipeline.supervise()?;
            stream.check()?;
            tokio::time::sleep(Duration::from_millis(200).min(planned.at - started.elapsed()))
                .await;
        }
        if started.elapsed() >= config.length {
            findings.skipped += 1;
            continue;
        }
        let injected_at = started.elapsed();
        println!(
            "[{:>7.1} s] {} (due at {:.1} s)",
            injected_at.as_secs_f64(),
            planned.fault,
            planned.at.as_secs_f64()
        );
        let injected = injector.inject(pipeline, &planned.fault, &changes).await?;
        if let Some(run) = injected.reconcile_run {
            findings.reconcile_runs.push(run);
        }
        let converged =
            converge(pipeline, &changes, injected.healed_ms, config.converge_cap).await?;
        match converged.after {
            Some(after) => println!(
                "            converged {:.1} s after it healed",
                after.as_secs_f64()
            ),
            None => println!(
                "            NOT converged {} s after it healed: {}",
                config.converge_cap.as_secs(),
                converged.blockers.join("; ")
            ),
        }
        findings.episode(Episode::new(
            &planned.fault,
            planned.at,
            injected_at,
            converged,
        ));
    }
    while started.elapsed() < config.length {
        pipeline.supervise()?;
        stream.check()?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stream_ran = started.elapsed();
    let changes = stream.stop().await?;
    findings.stream_ran = stream_ran;
    injector.heal_all(Some(pipeline)).await;

    report::finish(pipeline, config, &changes, &mut findings).await?;
    Ok(findings)
}
