//! One delta round for one tenant, under its lease: stop at once when the safety rail paused
//! the tenant; follow the groups delta (group-scoped tenants), then the pass its mode asks for
//! (the users delta page by page, or a re-read of named users or of a group's members), admin
//! roles and photos; a reconcile then compares the snapshot with the cards. The passes save
//! the snapshot and send nothing: what they saved (with what a crashed round left unemitted)
//! is the round's plan, which the safety rail sends or holds for an admin (`rail.rs`) before
//! the delta links are stored and the round recorded. The passes live in their own files;
//! this one holds the lease, the fence, the pass order and the report.

mod cards;
mod emit;
mod error;
mod groups;
mod photos;
mod rail;
mod scoping;
mod triggers;
mod users;

pub use error::RoundError;
pub use triggers::Triggers;

use crate::keeper::HeldLease;
use crate::lease::{Collection, RedisState};
use crate::metrics::RoundMetrics;
use crate::settings::RoundSettings;
use crate::snapshot::Scope;
use cardsync_bus::Publisher;
use cardsync_cards::DigestEvents;
use cardsync_graph::{DeltaPage, GraphClient, GraphError, TenantConnection};
use cardsync_photos::PhotoStore;
use cardsync_proto as proto;
use cardsync_rules::FieldRules;
use cardsync_store::connections::Keyring;
use cardsync_store::directory;
use cardsync_store::runs::{self, RunStatus};
use cardsync_telemetry::propagation;
use sqlx::PgPool;
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

/// What a round covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// From the stored delta links (a full round when there are none).
    Incremental,
    /// Enumerate everything again, ignoring stored links.
    Full,
    /// Re-read these users now and push their state to the cards even if unchanged.
    Users(Vec<String>),
    /// Re-read every member of this group (nested groups included) like [`Mode::Users`]; the
    /// members are resolved inside the round, under the lease.
    Group(String),
    /// The full reconcile: a [`Mode::Full`] round (which renews the stored delta links), then
    /// every user of the snapshot compared with its card, and a command for each card that
    /// drifted from what the rules give (missing, edited behind cardsync's back, a command
    /// that was dead-lettered). Its commands go to the bulk queue.
    Reconcile,
    /// The rules apply: every user of the snapshot re-mapped under the rules in force and
    /// compared with its card, a command for each card the rules change (bulk queue), without
    /// a Graph call; when the rules read a property the stored users `$select` lacks, a full
    /// users enumeration with the new `$select` runs first (it renews the stored link).
    Apply,
}

impl Mode {
    /// A stable name for logs and spans.
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Incremental => "incremental",
            Mode::Full => "full",
            Mode::Users(_) => "users",
            Mode::Group(_) => "group",
            Mode::Reconcile => "reconcile",
            Mode::Apply => "apply",
        }
    }
}

/// A round to run.
#[derive(Debug, Clone)]
pub struct RoundRequest {
    /// The tenant.
    pub tenant: Uuid,
    /// Why (recorded, and carried by the card commands).
    pub cause: proto::Cause,
    /// User ids that notifications announced; changes to others are counted as unannounced.
    pub announced: HashSet<String>,
    /// What to cover.
    pub mode: Mode,
    /// The triggers the round serves: their traces and the earliest notification's arrival.
    pub triggers: Triggers,
    /// The sync run the round's commands belong to (they carry it to the card-writer, which
    /// counts their outcomes there).
    pub run_id: Option<Uuid>,
}

/// What a round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Delta pages fetched (users and groups).
    pub pages: u64,
    /// Users whose state changed.
    pub changed: u64,
    /// Card commands published and confirmed.
    pub commands: u64,
    /// Changes no notification announced (found by the safety poll or a busy round).
    pub unannounced: u64,
    /// Whether the users delta was enumerated from scratch.
    pub full: bool,
    /// Cards that differed from the snapshot and were sent a repairing command (reconcile).
    pub repaired: u64,
    /// The run the mass-change safety rail held this round's commands under (none were sent).
    pub held: Option<Uuid>,
    /// The tenant was paused by the safety rail: the round did nothing but leave what it owed
    /// for the resume.
    pub paused: bool,
}

/// What [`Rounds::new`] wires together.
#[derive(Debug)]
pub struct RoundParts {
    /// The system of record (snapshot, versions, fence, tenants, connections).
    pub pool: PgPool,
    /// Graph.
    pub graph: GraphClient,
    /// Card commands go out here.
    pub publisher: Publisher,
    /// Leases and delta links.
    pub redis: RedisState,
    /// Opens tenant credentials.
    pub sealing: Arc<Keyring>,
    /// Tuning.
    pub settings: RoundSettings,
    /// Metrics.
    pub metrics: RoundMetrics,
    /// The `cards` exchange's full name.
    pub cards_exchange: String,
    /// The `card-events` exchange's full name: the digest of a run a round ends goes there.
    pub events_exchange: String,
    /// Where downloaded photo images are stored.
    pub photos: PhotoStore,
    /// The square size photos are downloaded at (`[photos] size`).
    pub photo_size: u32,
}

/// Everything a round needs; shared by every round of the process.
#[derive(Debug)]
pub struct Rounds {
    pool: PgPool,
    graph: GraphClient,
    publisher: Publisher,
    redis: RedisState,
    sealing: Arc<Keyring>,
    settings: RoundSettings,
    metrics: RoundMetrics,
    cards_exchange: String,
    digests: DigestEvents,
    photos: PhotoStore,
    photo_size: u32,
    /// Cancelled by [`Rounds::stop`].
    stop: CancellationToken,
}

/// Per-round state.
struct Round<'a> {
    tenant: Uuid,
    tenant_text: String,
    lease: &'a HeldLease,
    stop: &'a CancellationToken,
    connection: TenantConnection,
    rules: FieldRules,
    /// Whether the tenant maps directory admin roles to card roles.
    admin_roles: bool,
    scope: Scope,
    /// Who among the scope's users is in: guests, an attribute condition.
    filter: Option<cardsync_rules::UserFilter>,
    cause: proto::Cause,
    /// The run its commands carry ("" for none).
    run_id: String,
    bulk: bool,
    announced: &'a HashSet<String>,
    /// The snapshot held no user when the round began: what it finds is the tenant's first
    /// enumeration, which no notification could have announced, so none of it is unannounced.
    first_sync: bool,
    /// Users this round sent a command for; kept by a reconcile and an apply only, whose cards
    /// pass leaves them alone (their card is about to change).
    emitted: Option<HashSet<String>>,
    /// Carried by every command as `notified_at` (the freshness SLO's start).
    notified_at: Option<OffsetDateTime>,
    /// While the passes run: saved rows wait for the safety rail instead of being sent.
    deferring: bool,
    /// Delta links the passes ended with, stored once the round's plan is settled (sent or
    /// held), so a link never runs ahead of the commands it covers.
    links: Vec<(Collection, String)>,
    report: RoundReport,
}

impl Round<'_> {
    /// The `$select` of this round's users enumeration: what the rules and the filter read.
    fn users_select(&self) -> std::collections::BTreeSet<String> {
        let mut select = crate::select::users_select(&self.rules);
        if let Some(filter) = &self.filter {
            select.extend(filter.properties());
        }
        select
    }

    /// Whether the round may go on to its next effect: the process is not stopping and the
    /// lease is still this round's. Called before every effect (a save, a publish, a delta link).
    fn check(&self) -> Result<(), RoundError> {
        if self.stop.is_cancelled() {
            Err(RoundError::Interrupted)
        } else if !self.lease.is_held() {
            Err(RoundError::LeaseLost)
        } else {
            Ok(())
        }
    }

    /// Reads from Graph unless the round must stop; a read has no effect, so it is abandoned
    /// the moment the process stops or the lease is lost (Graph may be slow or throttling).
    async fn read<T>(
        &self,
        call: impl Future<Output = Result<T, GraphError>>,
    ) -> Result<T, RoundError> {
        self.check()?;
        tokio::select! {
            biased;
            () = self.stop.cancelled() => Err(RoundError::Interrupted),
            () = self.lease.lost() => Err(RoundError::LeaseLost),
            result = call => Ok(result?),
        }
    }

    /// Reads one delta page and counts it. `Ok(None)` when Graph says the token expired or asks
    /// for a resync and `may_restart` lets the caller enumerate from scratch instead.
    async fn delta_page(
        &mut self,
        graph: &GraphClient,
        url: &str,
        minimal: bool,
        may_restart: bool,
    ) -> Result<Option<DeltaPage>, RoundError> {
        match self
            .read(graph.delta_page(&self.connection, url, minimal))
            .await
        {
            Ok(page) => {
                self.report.pages += 1;
                Ok(Some(page))
            }
            Err(RoundError::Graph(
                GraphError::DeltaTokenExpired { .. } | GraphError::ResyncRequired { .. },
            )) if may_restart => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Claims the tenant for this round's lease inside `tx`; `LeaseLost` when a newer holder
    /// has claimed it since, and the transaction must be abandoned.
    async fn fence(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    ) -> Result<(), RoundError> {
        if directory::fence(tx, self.tenant, self.lease.token()).await? {
            Ok(())
        } else {
            Err(RoundError::LeaseLost)
        }
    }
}

impl Rounds {
    /// Rounds over these parts.
    pub fn new(parts: RoundParts) -> Self {
        Self {
            pool: parts.pool,
            graph: parts.graph,
            publisher: parts.publisher,
            redis: parts.redis,
            sealing: parts.sealing,
            settings: parts.settings,
            metrics: parts.metrics,
            cards_exchange: parts.cards_exchange,
            digests: DigestEvents::new(parts.events_exchange),
            photos: parts.photos,
            photo_size: parts.photo_size,
            stop: CancellationToken::new(),
        }
    }

    /// How this deployment's run digests are encoded: what a worker that ends a run hands to
    /// `cardsync_store::runs::end`.
    pub fn digests(&self) -> &DigestEvents {
        &self.digests
    }

    /// Stops every round of this process at its next safe point (before its next effect, or
    /// at once while it waits on Graph or for the lease) and refuses new ones; each releases
    /// its lease and fails with [`RoundError::Interrupted`]. For a graceful shutdown.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// The delta link `collection` continues from; none for a full round (or when none is
    /// stored, which makes the pass enumerate from scratch).
    async fn stored_link(
        &self,
        tenant: Uuid,
        collection: Collection,
        full: bool,
    ) -> Result<Option<String>, RoundError> {
        if full {
            return Ok(None);
        }
        Ok(self.redis.delta_link(tenant, collection).await?)
    }

    /// Runs one round to completion. A failed round is recorded as an attempt, so the safety
    /// poll waits a full interval before trying a broken tenant again (an interrupted one is
    /// not: the tenant is not at fault).
    pub async fn run(&self, request: &RoundRequest) -> Result<RoundReport, RoundError> {
        let span = tracing::info_span!(
            "delta round",
            tenant = %request.tenant,
            cause = request.cause.as_str(),
            mode = request.mode.as_str(),
            triggers_linked = request.triggers.links().len(),
        );
        propagation::follow(&span, request.triggers.parent(), request.triggers.links());
        let outcome = self.run_round(request).instrument(span).await;
        if outcome
            .as_ref()
            .is_err_and(|error| !matches!(error, RoundError::Interrupted))
            && let Err(error) = directory::record_failed_attempt(&self.pool, request.tenant).await
        {
            tracing::debug!(error = %error, "failed round not recorded");
        }
        outcome
    }

    async fn run_round(&self, request: &RoundRequest) -> Result<RoundReport, RoundError> {
        let started = Instant::now();
        if !cardsync_store::connections::is_usable(&self.pool, request.tenant).await? {
            // No connection, or its disconnect requested: an unknown or offboarded tenant. Its
            // requests still queued are consumed and counted, never dead-lettered, and nothing
            // of it is written again (not even its sync state).
            tracing::warn!(tenant = %request.tenant, "tenant has no usable connection; round dropped");
            self.metrics
                .rounds
                .with_label_values(&[request.cause.as_str(), "dropped"])
                .inc();
            return Ok(RoundReport::default());
        }
        if cardsync_store::admin::is_disconnected(&self.pool, request.tenant).await? {
            // A disconnected tenant keeps its cards and is not synced: its triggers are done.
            tracing::info!(tenant = %request.tenant, "tenant disconnected; round skipped");
            return Ok(RoundReport::default());
        }
        directory::ensure_sync_state(&self.pool, request.tenant).await?;
        let run = match request.run_id {
            Some(run_id) => {
                // A run asked for (queued) is under way; a claimed one already is.
                runs::set_status(&self.pool, run_id, RunStatus::Running, None).await?;
                Some((run_id, false))
            }
            // Notification and safety-poll rounds add up into the tenant's live run of the hour.
            None if matches!(
                request.cause,
                proto::Cause::Notification | proto::Cause::SafetyPoll
            ) =>
            {
                let hour = live_hour(OffsetDateTime::now_utc());
                Some((runs::live(&self.pool, request.tenant, hour).await?, true))
            }
            None => None,
        };
        let connection = self.connection(request.tenant).await?;
        let (rules, admin_roles) = cardsync_store::tenants::get(&self.pool, request.tenant)
            .await?
            .map(|t| (t.rules, t.admin_roles_enabled))
            .unwrap_or_default();
        let scope_groups = directory::scope(&self.pool, request.tenant).await?;
        let filter = directory::user_filter(&self.pool, request.tenant).await?;

        let lease = self.take_lease(request.tenant).await?;
        let first_sync = !directory::has_users(&self.pool, request.tenant).await?;
        let mut round = Round {
            tenant: request.tenant,
            tenant_text: request.tenant.to_string(),
            lease: &lease,
            stop: &self.stop,
            connection,
            rules,
            admin_roles,
            scope: Scope::Everyone,
            filter,
            cause: request.cause,
            run_id: run.map(|(id, _)| id.to_string()).unwrap_or_default(),
            bulk: matches!(request.mode, Mode::Full | Mode::Reconcile | Mode::Apply)
                || matches!(
                    request.cause,
                    proto::Cause::Reconcile | proto::Cause::Resync
                ),
            announced: &request.announced,
            first_sync,
            emitted: matches!(request.mode, Mode::Reconcile | Mode::Apply).then(HashSet::new),
            notified_at: request.triggers.notified_at(),
            deferring: true,
            links: Vec::new(),
            report: RoundReport::default(),
        };
        let result = self
            .run_leased(&mut round, request, scope_groups, run)
            .await;
        let mut report = round.report;
        if let Err(error) = lease.release().await {
            tracing::warn!(error = %error, "lease release failed; it expires by itself");
        }
        let cause = request.cause.as_str();
        let outcome = match &result {
            Ok(_) => "ok",
            Err(RoundError::Interrupted) => "interrupted",
            Err(_) => "failed",
        };
        self.metrics
            .rounds
            .with_label_values(&[cause, outcome])
            .inc();
        self.metrics
            .round_duration
            .with_label_values(&[cause])
            .observe(started.elapsed().as_secs_f64());
        // The rail's gauges exist for every tenant that had a round, at zero until held.
        self.metrics.touch_rail(&request.tenant.to_string());
        let settled = result?;
        directory::record_round(&self.pool, request.tenant, cause).await?;
        match settled {
            Ending::Paused => {
                report.paused = true;
                return Ok(report);
            }
            Ending::Settled(rail::Settled::Held(run_id)) => report.held = Some(run_id),
            Ending::Settled(rail::Settled::Released) => {}
        }
        match run {
            // A live run goes on for the hour: this round's figures add to it.
            Some((run_id, true)) => {
                let mut counts = run_counts(&report).to_vec();
                counts.push(("commands", count(report.commands)));
                runs::add_counts(&self.pool, run_id, &counts).await?;
            }
            // Held: it waits for an admin, who sends its commands or rejects them.
            Some((_, false)) if report.held.is_some() => {}
            // Every command is out: the run ends when the card-writer has accounted for them.
            Some((run_id, false)) => {
                let mut tx = self.pool.begin().await?;
                runs::emission_done(
                    &mut tx,
                    run_id,
                    count(report.commands),
                    &run_counts(&report),
                    &self.digests,
                )
                .await?;
                tx.commit().await?;
            }
            None => {}
        }
        if report.full {
            self.metrics.full_rounds.inc();
        }
        self.metrics
            .unannounced
            .with_label_values(&[&request.tenant.to_string()])
            .inc_by(report.unannounced);
        tracing::info!(
            tenant = %request.tenant, cause, pages = report.pages, changed = report.changed, commands = report.commands,
            unannounced = report.unannounced, full = report.full, repaired = report.repaired, elapsed_ms = started.elapsed().as_millis() as u64,
            "delta round done"
        );
        Ok(report)
    }

    /// The passes, in order, then the safety rail on their plan, then the delta links.
    async fn run_leased(
        &self,
        round: &mut Round<'_>,
        request: &RoundRequest,
        scope_groups: Option<Vec<String>>,
        run: Option<(Uuid, bool)>,
    ) -> Result<Ending, RoundError> {
        // The tenant is this round's before anything else happens: from here on, every write
        // of an older holder that lost its lease (paused past its TTL, say) is refused.
        let mut tx = self.pool.begin().await?;
        round.fence(&mut tx).await?;
        tx.commit().await?;
        if self.paused(round, request).await? {
            return Ok(Ending::Paused);
        }
        // What a crashed round saved but never had confirmed is still unemitted: it joins this
        // round's plan, at the versions saved (or newer, when this round changes those users).
        self.passes(round, request, scope_groups).await?;
        let settled = self.settle(round, request, run).await?;
        round.check()?;
        for (collection, link) in std::mem::take(&mut round.links) {
            self.redis
                .set_delta_link(round.tenant, collection, &link)
                .await?;
        }
        Ok(Ending::Settled(settled))
    }

    /// The passes of `request`'s mode.
    async fn passes(
        &self,
        round: &mut Round<'_>,
        request: &RoundRequest,
        scope_groups: Option<Vec<String>>,
    ) -> Result<(), RoundError> {
        let full = matches!(request.mode, Mode::Full | Mode::Reconcile);
        if full {
            self.redis.forget_delta_links(round.tenant).await?;
        }
        self.scope_pass(round, request, scope_groups.as_deref(), full)
            .await?;
        match &request.mode {
            Mode::Users(ids) => {
                self.users_by_id(round, ids).await?;
                self.roles_pass(round, true).await?;
            }
            Mode::Group(group) => {
                let ids = self.group_members(round, group).await?;
                self.users_by_id(round, &ids).await?;
                self.roles_pass(round, true).await?;
            }
            Mode::Apply => {
                let selected = directory::users_select(&self.pool, round.tenant).await?;
                if !selected.is_some_and(|selected| crate::select::covers(&selected, &round.rules))
                {
                    // The rules read what the stored link does not track: enumerate everyone
                    // with the new `$select` first, so the snapshot has those values.
                    self.users_pass(round, true).await?;
                    // What it found is mostly the newly selected properties arriving, not
                    // changes a lost notification hid: it must not swell the loss figure.
                    round.report.unannounced = 0;
                }
                self.cards_pass(round).await?;
            }
            Mode::Incremental | Mode::Full | Mode::Reconcile => {
                let created = self.users_pass(round, full).await?;
                // Photos and roles on their own cadence per tenant, whatever caused the round.
                // A full round and a reconcile always check (photos: those not re-checked for
                // `photo_recheck_after`); an operator's request re-checks any photo.
                let due = cardsync_store::checks::due(
                    &self.pool,
                    round.tenant,
                    self.settings.photo_check_interval,
                    self.settings.roles_check_interval,
                )
                .await?;
                let asked = round.cause == proto::Cause::Manual;
                let roles_due = due.roles || full || asked;
                self.roles_pass(round, roles_due || !created.is_empty())
                    .await?;
                if roles_due && round.admin_roles {
                    cardsync_store::checks::record_roles_checked(&self.pool, round.tenant).await?;
                }
                let check = if asked {
                    Some(photos::PhotoCheck::Asked)
                } else {
                    (due.photos || full).then_some(photos::PhotoCheck::Due)
                };
                self.photos_pass(round, created, check).await?;
                if request.mode == Mode::Reconcile {
                    self.cards_pass(round).await?;
                }
            }
        }
        Ok(())
    }

    /// The tenant's Graph connection, credential opened.
    async fn connection(&self, tenant: Uuid) -> Result<TenantConnection, RoundError> {
        crate::connection::open(&self.pool, &self.sealing, tenant)
            .await
            .map_err(RoundError::Connection)?
            .ok_or(RoundError::NoConnection(tenant))
    }

    /// Takes the tenant's lease, waiting up to `lease_wait` for another replica's round, and
    /// keeps it renewed until the round releases it.
    async fn take_lease(&self, tenant: Uuid) -> Result<HeldLease, RoundError> {
        let ttl = self.settings.lease_ttl;
        let deadline = Instant::now() + self.settings.lease_wait;
        loop {
            if self.stop.is_cancelled() {
                return Err(RoundError::Interrupted);
            }
            let floor = directory::current_fence(&self.pool, tenant).await?;
            let asked = Instant::now();
            if let Some(lease) = self.redis.acquire(tenant, ttl, floor).await? {
                return Ok(HeldLease::keep(self.redis.clone(), lease, ttl, asked));
            }
            if Instant::now() >= deadline {
                return Err(RoundError::LeaseBusy);
            }
            tokio::select! {
                () = self.stop.cancelled() => return Err(RoundError::Interrupted),
                () = tokio::time::sleep(LEASE_POLL) => {}
            }
        }
    }
}

/// How a round's passes ended.
enum Ending {
    /// The plan was sent or held.
    Settled(rail::Settled),
    /// The tenant is paused: nothing was done.
    Paused,
}

/// The counts a finished round adds to its run (besides `commands`).
fn run_counts(report: &RoundReport) -> [(&'static str, i64); 3] {
    [
        ("unannounced", count(report.unannounced)),
        ("repaired", count(report.repaired)),
        ("graph_pages", count(report.pages)),
    ]
}

/// The start of the hour `now` is in (UTC): what names a tenant's live run.
fn live_hour(now: OffsetDateTime) -> OffsetDateTime {
    let now = now.to_offset(time::UtcOffset::UTC);
    now.replace_time(time::Time::from_hms(now.hour(), 0, 0).unwrap_or(time::Time::MIDNIGHT))
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// How often a round waiting for its tenant asks for the lease again.
const LEASE_POLL: Duration = Duration::from_millis(50);
