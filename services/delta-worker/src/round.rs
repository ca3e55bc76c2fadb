//! One delta round for one tenant, under its lease: flush what a crashed round left unemitted,
//! follow the groups delta (group-scoped tenants), follow the users delta page by page (merge,
//! save with new versions, emit card commands, wait for every confirm), then advance the delta
//! links, check a budgeted slice of photos and record the round.

use crate::lease::{Collection, Lease, RedisError, RedisState};
use crate::merge::{self, Scope, Skip};
use crate::metrics::Metrics;
use crate::settings::WorkerSettings;
use cardsync_bus::{Outgoing, PublishError, Publisher, routing};
use cardsync_graph::{Credential, GraphClient, GraphError, PageLink, TenantConnection};
use cardsync_proto as proto;
use cardsync_rules::FieldRules;
use cardsync_store::StoreError;
use cardsync_store::connections::{self, ConnectionError, CredentialKind, SealingKey};
use cardsync_store::directory::{self, GroupRow, Presence, UserRow};
use secrecy::ExposeSecret as _;
use serde_json::Value;
use sqlx::PgPool;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
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
}

/// Why a round failed.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    /// The tenant has no Graph connection configured.
    #[error("tenant {0} has no Graph connection")]
    NoConnection(Uuid),
    /// The connection cannot be read or opened.
    #[error("the tenant's connection is unusable")]
    Connection(#[source] ConnectionError),
    /// Another replica holds the tenant's lease for longer than we wait.
    #[error("another replica holds the tenant's lease")]
    LeaseBusy,
    /// The lease expired or a newer holder wrote; this replica stopped before writing.
    #[error("the tenant's lease was lost")]
    LeaseLost,
    /// Graph failed.
    #[error("graph call failed")]
    Graph(#[from] GraphError),
    /// PostgreSQL failed.
    #[error("database failed")]
    Store(#[from] StoreError),
    /// The broker did not confirm the card commands.
    #[error("publishing card commands failed")]
    Publish(#[from] PublishError),
    /// Redis failed.
    #[error("redis failed")]
    Redis(#[from] RedisError),
}

impl RoundError {
    /// Whether trying again later may succeed (retry) or not (dead-letter the trigger).
    pub fn is_transient(&self) -> bool {
        match self {
            RoundError::NoConnection(_) => false,
            RoundError::Connection(ConnectionError::Store(_)) => true,
            RoundError::Connection(_) => false,
            RoundError::Graph(error) => error.is_transient(),
            _ => true,
        }
    }
}

impl From<sqlx::Error> for RoundError {
    fn from(error: sqlx::Error) -> Self {
        RoundError::Store(StoreError::from(error))
    }
}

/// Everything a round needs; shared by every round of the process.
#[derive(Debug)]
pub struct Rounds {
    /// System of record.
    pub pool: PgPool,
    /// Graph.
    pub graph: GraphClient,
    /// Card commands go out here.
    pub publisher: Publisher,
    /// Leases and delta links.
    pub redis: RedisState,
    /// Opens tenant credentials.
    pub sealing: Arc<SealingKey>,
    /// Tuning.
    pub settings: WorkerSettings,
    /// Metrics.
    pub metrics: Metrics,
    /// The `cards` exchange's full name.
    pub cards_exchange: String,
}

/// Per-round state.
struct Round<'a> {
    tenant: Uuid,
    tenant_text: String,
    lease: &'a Lease,
    lost: &'a AtomicBool,
    connection: TenantConnection,
    rules: FieldRules,
    /// Whether the tenant maps directory admin roles to card roles.
    admin_roles: bool,
    scope: Scope,
    cause: proto::Cause,
    bulk: bool,
    announced: &'a HashSet<String>,
    report: RoundReport,
}

impl Rounds {
    /// Runs one round to completion. A failed round is recorded as an attempt, so the safety
    /// poll waits a full interval before trying a broken tenant again.
    pub async fn run(&self, request: &RoundRequest) -> Result<RoundReport, RoundError> {
        let outcome = self.run_round(request).await;
        if outcome.is_err()
            && let Err(error) = directory::record_failed_attempt(&self.pool, request.tenant).await
        {
            tracing::debug!(error = %error, "failed round not recorded");
        }
        outcome
    }

    async fn run_round(&self, request: &RoundRequest) -> Result<RoundReport, RoundError> {
        let started = Instant::now();
        directory::ensure_sync_state(&self.pool, request.tenant).await?;
        let connection = self.connection(request.tenant).await?;
        let (rules, admin_roles) = cardsync_store::tenants::get(&self.pool, request.tenant)
            .await?
            .map(|t| (t.rules, t.admin_roles_enabled))
            .unwrap_or_default();
        let scope_groups = directory::scope(&self.pool, request.tenant).await?;

        let lease = self.take_lease(request.tenant).await?;
        let lost = Arc::new(AtomicBool::new(false));
        let keeper = self.keep_lease(lease.clone(), lost.clone());
        let mut round = Round {
            tenant: request.tenant,
            tenant_text: request.tenant.to_string(),
            lease: &lease,
            lost: &lost,
            connection,
            rules,
            admin_roles,
            scope: Scope::Everyone,
            cause: request.cause,
            bulk: matches!(request.mode, Mode::Full)
                || matches!(
                    request.cause,
                    proto::Cause::Reconcile | proto::Cause::Resync
                ),
            announced: &request.announced,
            report: RoundReport::default(),
        };
        let result = self.run_leased(&mut round, request, scope_groups).await;
        keeper.abort();
        if let Err(error) = self.redis.release(&lease).await {
            tracing::warn!(error = %error, "lease release failed; it expires by itself");
        }
        let cause = request.cause.as_str();
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        self.metrics
            .rounds
            .with_label_values(&[cause, outcome])
            .inc();
        self.metrics
            .round_duration
            .with_label_values(&[cause])
            .observe(started.elapsed().as_secs_f64());
        result?;
        let report = round.report;
        directory::record_round(&self.pool, request.tenant, cause).await?;
        if report.full {
            self.metrics.full_rounds.inc();
        }
        self.metrics
            .unannounced
            .with_label_values(&[&round.tenant_text])
            .inc_by(report.unannounced);
        tracing::info!(
            tenant = %request.tenant, cause, pages = report.pages, changed = report.changed, commands = report.commands,
            unannounced = report.unannounced, full = report.full, elapsed_ms = started.elapsed().as_millis() as u64,
            "delta round done"
        );
        Ok(report)
    }

    async fn run_leased(
        &self,
        round: &mut Round<'_>,
        request: &RoundRequest,
        scope_groups: Option<Vec<String>>,
    ) -> Result<(), RoundError> {
        // A crashed round may have saved versions whose commands were never confirmed.
        self.emit_unemitted(round).await?;
        let full = request.mode == Mode::Full;
        if full {
            self.redis.forget_delta_links(round.tenant).await?;
        }
        if let Some(groups) = scope_groups {
            self.groups_pass(round, full).await?;
            round.scope =
                Scope::resolve(&groups, &directory::groups(&self.pool, round.tenant).await?);
            let now = OffsetDateTime::now_utc();
            let moved: Vec<UserRow> = directory::all_users(&self.pool, round.tenant)
                .await?
                .iter()
                .filter_map(|row| merge::rescope(row, &round.scope, now))
                .collect();
            round.report.changed += moved.len() as u64;
            self.save_and_emit(round, moved).await?;
        }
        match &request.mode {
            Mode::Users(ids) => {
                self.users_by_id(round, ids).await?;
                self.roles_pass(round, true).await?;
            }
            Mode::Incremental | Mode::Full => {
                let created = self.users_pass(round, full).await?;
                let scheduled = round.cause != proto::Cause::Notification;
                self.roles_pass(round, scheduled || !created.is_empty())
                    .await?;
                self.photos_pass(round, created).await?;
            }
        }
        Ok(())
    }

    /// The tenant's Graph connection, credential opened.
    pub async fn tenant_connection(&self, tenant: Uuid) -> Result<TenantConnection, RoundError> {
        self.connection(tenant).await
    }

    async fn connection(&self, tenant: Uuid) -> Result<TenantConnection, RoundError> {
        let stored = connections::get(&self.pool, &self.sealing, tenant)
            .await
            .map_err(RoundError::Connection)?
            .ok_or(RoundError::NoConnection(tenant))?;
        let credential = match stored.kind {
            CredentialKind::Secret => Credential::Secret(stored.credential),
            CredentialKind::Federated => Credential::Federated {
                token_file: stored.credential.expose_secret().into(),
            },
            CredentialKind::Certificate => {
                // The PEM bundle holds the certificate and the private key.
                let bundle = stored.credential.expose_secret();
                Credential::Certificate {
                    certificate_pem: bundle.to_owned(),
                    private_key_pem: stored.credential.clone(),
                    algorithm: cardsync_graph::AssertionAlgorithm::Ps256,
                }
            }
        };
        Ok(TenantConnection {
            tenant_id: tenant.to_string(),
            client_id: stored.client_id,
            credential,
        })
    }

    async fn take_lease(&self, tenant: Uuid) -> Result<Lease, RoundError> {
        let deadline = Instant::now() + self.settings.lease_wait;
        loop {
            let floor = directory::current_fence(&self.pool, tenant).await?;
            if let Some(lease) = self
                .redis
                .acquire(tenant, self.settings.lease_ttl, floor)
                .await?
            {
                return Ok(lease);
            }
            if Instant::now() >= deadline {
                return Err(RoundError::LeaseBusy);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Renews the lease every third of its lifetime; marks it lost if a renewal fails.
    fn keep_lease(&self, lease: Lease, lost: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
        let redis = self.redis.clone();
        let ttl = self.settings.lease_ttl;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                match redis.renew(&lease, ttl).await {
                    Ok(true) => {}
                    Ok(false) | Err(_) => {
                        lost.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            }
        })
    }

    fn check_lease(round: &Round<'_>) -> Result<(), RoundError> {
        if round.lost.load(Ordering::SeqCst) {
            Err(RoundError::LeaseLost)
        } else {
            Ok(())
        }
    }

    async fn users_pass(
        &self,
        round: &mut Round<'_>,
        full: bool,
    ) -> Result<Vec<String>, RoundError> {
        let stored = if full {
            None
        } else {
            self.redis
                .delta_link(round.tenant, Collection::Users)
                .await?
        };
        let start = self.users_start_url(&round.rules);
        round.report.full = stored.is_none();
        // An initial enumeration is bulk work: it must not delay other tenants' live updates.
        round.bulk |= round.report.full;
        let mut minimal = stored.is_some();
        let mut url = stored.unwrap_or_else(|| start.clone());
        let mut seen = BTreeSet::new();
        let mut restarted = false;
        let mut created = Vec::new();
        let final_link = loop {
            Self::check_lease(round)?;
            let page = match self
                .graph
                .delta_page(&round.connection, &url, minimal)
                .await
            {
                Ok(page) => page,
                Err(GraphError::DeltaTokenExpired { .. } | GraphError::ResyncRequired { .. })
                    if !restarted =>
                {
                    // The token expired or Graph asks for a resync: enumerate everything again.
                    restarted = true;
                    round.report.full = true;
                    round.bulk = true;
                    minimal = false;
                    seen.clear();
                    url = start.clone();
                    self.metrics.resyncs.inc();
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            round.report.pages += 1;
            if round.report.full {
                seen.extend(
                    page.items
                        .iter()
                        .filter(|item| item.get("@removed").is_none())
                        .filter_map(|item| {
                            item.get("id").and_then(Value::as_str).map(str::to_owned)
                        }),
                );
            }
            created.extend(self.apply_users_page(round, &page.items, false).await?);
            match page.link {
                PageLink::Next(next) => url = next,
                PageLink::Done(done) => break done,
            }
        };
        if round.report.full {
            let now = OffsetDateTime::now_utc();
            let missing = merge::vanished(
                directory::present_user_ids(&self.pool, round.tenant).await?,
                &seen,
            );
            let gone: Vec<UserRow> = if missing.is_empty() {
                Vec::new()
            } else {
                let mut tx = self.pool.begin().await?;
                let rows = directory::users(&mut tx, round.tenant, &missing).await?;
                tx.commit().await?;
                rows.into_values()
                    .map(|row| UserRow {
                        presence: Presence::Deleted,
                        observed_at: now,
                        ..row
                    })
                    .collect()
            };
            round.report.changed += gone.len() as u64;
            self.save_and_emit(round, gone).await?;
        }
        Self::check_lease(round)?;
        self.redis
            .set_delta_link(round.tenant, Collection::Users, &final_link)
            .await?;
        // A full round creates every user: photos come from the budgeted scan instead.
        Ok(if round.report.full {
            Vec::new()
        } else {
            created
        })
    }

    /// Re-reads `ids` through a filtered delta query (50 per request, Graph's limit) and pushes
    /// their state to the cards even when nothing changed.
    async fn users_by_id(&self, round: &mut Round<'_>, ids: &[String]) -> Result<(), RoundError> {
        for chunk in ids.chunks(50) {
            let filter = chunk
                .iter()
                .map(|id| format!("id eq '{}'", id.replace('\'', "''")))
                .collect::<Vec<_>>()
                .join(" or ");
            let mut url = url::Url::parse(&self.users_start_url(&round.rules))
                .map_err(|e| GraphError::BadResponse(e.to_string()))?;
            url.query_pairs_mut().append_pair("$filter", &filter);
            let mut next = url.to_string();
            loop {
                Self::check_lease(round)?;
                let page = self
                    .graph
                    .delta_page(&round.connection, &next, false)
                    .await?;
                round.report.pages += 1;
                self.apply_users_page(round, &page.items, true).await?;
                match page.link {
                    PageLink::Next(link) => next = link,
                    PageLink::Done(_) => break,
                }
            }
        }
        Ok(())
    }

    /// Merges one page into the snapshot and emits its changes; returns ids of users first seen.
    async fn apply_users_page(
        &self,
        round: &mut Round<'_>,
        items: &[Value],
        force: bool,
    ) -> Result<Vec<String>, RoundError> {
        let ids: Vec<String> = items
            .iter()
            .filter_map(|i| i.get("id").and_then(Value::as_str).map(str::to_owned))
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let now = OffsetDateTime::now_utc();
        let mut tx = self.pool.begin().await?;
        if !directory::fence(&mut tx, round.tenant, round.lease.token).await? {
            return Err(RoundError::LeaseLost);
        }
        let mut current = directory::users(&mut tx, round.tenant, &ids).await?;
        let mut changed: Vec<UserRow> = Vec::new();
        let mut created = Vec::new();
        // Items apply in page order; a replayed object merges into the result of the first.
        for item in items {
            let Some(id) = item.get("id").and_then(Value::as_str) else {
                continue;
            };
            let existing = current.get(id);
            if let Some(row) = merge::merge_user(existing, item, &round.scope, now, force) {
                if existing.is_none() {
                    created.push(id.to_owned());
                }
                current.insert(id.to_owned(), row.clone());
                changed.retain(|c| c.user_id != id);
                changed.push(row);
            }
        }
        if changed.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let versions = directory::save_users(&mut tx, round.tenant, &changed).await?;
        tx.commit().await?;
        round.report.changed += changed.len() as u64;
        if round.cause != proto::Cause::Notification || !round.announced.is_empty() {
            round.report.unannounced += changed
                .iter()
                .filter(|row| !round.announced.contains(&row.user_id))
                .count() as u64;
        }
        let rows: Vec<(UserRow, i64)> = changed
            .into_iter()
            .map(|row| {
                let version = versions.get(&row.user_id).copied().unwrap_or(row.version);
                (row, version)
            })
            .collect();
        self.emit(round, &rows).await?;
        Ok(created)
    }

    async fn groups_pass(&self, round: &mut Round<'_>, full: bool) -> Result<(), RoundError> {
        let stored = if full {
            None
        } else {
            self.redis
                .delta_link(round.tenant, Collection::Groups)
                .await?
        };
        let start = format!(
            "{}?$select=displayName,members",
            self.graph.url("/groups/delta")
        );
        let rebuild = stored.is_none();
        let mut groups: HashMap<String, GroupRow> = if rebuild {
            HashMap::new()
        } else {
            directory::groups(&self.pool, round.tenant)
                .await?
                .into_iter()
                .map(|g| (g.group_id.clone(), g))
                .collect()
        };
        let mut url = stored.unwrap_or_else(|| start.clone());
        let mut restarted = false;
        let link = loop {
            Self::check_lease(round)?;
            let page = match self.graph.delta_page(&round.connection, &url, false).await {
                Ok(page) => page,
                Err(GraphError::DeltaTokenExpired { .. } | GraphError::ResyncRequired { .. })
                    if !restarted =>
                {
                    restarted = true;
                    groups.clear();
                    url = start.clone();
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            round.report.pages += 1;
            for item in &page.items {
                merge_group(&mut groups, item);
            }
            match page.link {
                PageLink::Next(next) => url = next,
                PageLink::Done(done) => break done,
            }
        };
        let mut rows: Vec<GroupRow> = groups.into_values().collect();
        if rebuild || restarted {
            // Groups stored earlier but absent from a full enumeration are gone.
            let known: HashSet<String> = rows.iter().map(|g| g.group_id.clone()).collect();
            for mut old in directory::groups(&self.pool, round.tenant).await? {
                if !known.contains(&old.group_id) {
                    old.present = false;
                    rows.push(old);
                }
            }
        }
        let mut tx = self.pool.begin().await?;
        if !directory::fence(&mut tx, round.tenant, round.lease.token).await? {
            return Err(RoundError::LeaseLost);
        }
        directory::save_groups(&mut tx, round.tenant, &rows).await?;
        tx.commit().await?;
        Self::check_lease(round)?;
        self.redis
            .set_delta_link(round.tenant, Collection::Groups, &link)
            .await?;
        Ok(())
    }

    /// Reads who holds the two admin roles and emits a command for every user whose role moved.
    /// Delta never reports role assignments, so, like photos, they are read on scheduled rounds
    /// (and when a round met new users), two light requests per round, and only for tenants
    /// that map roles to cards at all.
    async fn roles_pass(&self, round: &mut Round<'_>, due: bool) -> Result<(), RoundError> {
        if !round.admin_roles || !due {
            return Ok(());
        }
        Self::check_lease(round)?;
        let team_admins = self
            .graph
            .role_member_ids(
                &round.connection,
                cardsync_graph::role_templates::GLOBAL_ADMINISTRATOR,
            )
            .await?;
        let subteam_admins = self
            .graph
            .role_member_ids(
                &round.connection,
                cardsync_graph::role_templates::GROUPS_ADMINISTRATOR,
            )
            .await?;
        let now = OffsetDateTime::now_utc();
        let moved: Vec<UserRow> =
            directory::admin_role_changes(&self.pool, round.tenant, &team_admins, &subteam_admins)
                .await?
                .into_iter()
                .map(|row| UserRow {
                    observed_at: now,
                    ..row
                })
                .collect();
        round.report.changed += moved.len() as u64;
        round.report.unannounced += moved.len() as u64;
        self.save_and_emit(round, moved).await
    }

    /// Checks photos of users created this round and, on scheduled rounds only, a budgeted slice
    /// of everyone else, since delta never reports photo changes. Rounds triggered by
    /// notifications skip the slice, so a burst of changes does not cost photo calls.
    async fn photos_pass(
        &self,
        round: &mut Round<'_>,
        created: Vec<String>,
    ) -> Result<(), RoundError> {
        let scheduled = round.cause != proto::Cause::Notification;
        let budget = if scheduled {
            i64::from(self.settings.photo_checks_per_round)
        } else {
            0
        };
        let mut candidates = if budget > 0 {
            directory::photo_scan_candidates(&self.pool, round.tenant, budget).await?
        } else {
            Vec::new()
        };
        if !created.is_empty() {
            let mut tx = self.pool.begin().await?;
            let fresh = directory::users(&mut tx, round.tenant, &created).await?;
            tx.commit().await?;
            candidates.extend(fresh.into_values());
        }
        let mut checked: Vec<(String, Option<String>)> = Vec::new();
        let mut changed = Vec::new();
        let now = OffsetDateTime::now_utc();
        for row in candidates {
            if checked.iter().any(|(id, _)| *id == row.user_id) {
                continue;
            }
            // Some("") = checked and no photo; None = never checked (the card's photo is left alone).
            let meta = self
                .graph
                .photo_meta(&round.connection, &row.user_id)
                .await?;
            let etag = Some(
                meta.map(|meta| meta.etag.unwrap_or_else(|| "present".into()))
                    .unwrap_or_default(),
            );
            // Learning that a user never had a photo changes nothing on the card.
            let news = etag != row.photo_etag
                && !(row.photo_etag.is_none() && etag.as_deref() == Some(""));
            if news {
                checked.push((row.user_id.clone(), None));
                changed.push(UserRow {
                    photo_etag: etag,
                    observed_at: now,
                    ..row
                });
            } else {
                checked.push((row.user_id.clone(), etag));
            }
        }
        round.report.changed += changed.len() as u64;
        round.report.unannounced += changed.len() as u64;
        self.save_and_emit(round, changed).await?;
        directory::mark_photos_checked(&self.pool, round.tenant, &checked).await?;
        Ok(())
    }

    async fn save_and_emit(
        &self,
        round: &mut Round<'_>,
        rows: Vec<UserRow>,
    ) -> Result<(), RoundError> {
        if rows.is_empty() {
            return Ok(());
        }
        Self::check_lease(round)?;
        let mut tx = self.pool.begin().await?;
        if !directory::fence(&mut tx, round.tenant, round.lease.token).await? {
            return Err(RoundError::LeaseLost);
        }
        let versions = directory::save_users(&mut tx, round.tenant, &rows).await?;
        tx.commit().await?;
        let rows: Vec<(UserRow, i64)> = rows
            .into_iter()
            .map(|row| {
                let version = versions.get(&row.user_id).copied().unwrap_or(row.version);
                (row, version)
            })
            .collect();
        self.emit(round, &rows).await
    }

    async fn emit_unemitted(&self, round: &mut Round<'_>) -> Result<(), RoundError> {
        loop {
            let rows = directory::unemitted(
                &self.pool,
                round.tenant,
                i64::from(self.settings.emit_batch),
            )
            .await?;
            if rows.is_empty() {
                return Ok(());
            }
            let rows: Vec<(UserRow, i64)> = rows
                .into_iter()
                .map(|row| {
                    let version = row.version;
                    (row, version)
                })
                .collect();
            self.emit(round, &rows).await?;
        }
    }

    /// Publishes the commands for `rows` and records them as emitted once confirmed.
    async fn emit(&self, round: &mut Round<'_>, rows: &[(UserRow, i64)]) -> Result<(), RoundError> {
        let routing_key = if round.bulk {
            routing::bulk_command(&round.tenant_text)
        } else {
            routing::live_command(&round.tenant_text)
        };
        for chunk in rows.chunks(self.settings.emit_batch as usize) {
            Self::check_lease(round)?;
            let mut outgoing = Vec::with_capacity(chunk.len());
            let mut emitted = Vec::with_capacity(chunk.len());
            for (row, version) in chunk {
                match merge::command_for(
                    &round.tenant_text,
                    row,
                    *version,
                    &round.rules,
                    &round.scope,
                    round.cause,
                ) {
                    Ok((command, action)) => {
                        self.metrics
                            .commands
                            .with_label_values(&[action.as_str()])
                            .inc();
                        outgoing.push(Outgoing::new(&self.cards_exchange, &routing_key, &command));
                        emitted.push((row.user_id.clone(), *version, Some(action.as_str())));
                    }
                    Err(Skip::Nothing) => emitted.push((row.user_id.clone(), *version, None)),
                    Err(Skip::Unmappable(reason)) => {
                        self.metrics.unmappable.inc();
                        tracing::warn!(tenant = %round.tenant, user_id = %row.user_id, reason, "user cannot be mapped; no card");
                        emitted.push((row.user_id.clone(), *version, None));
                    }
                }
            }
            round.report.commands += outgoing.len() as u64;
            self.publisher.publish_all(outgoing).await?;
            directory::mark_emitted(&self.pool, round.tenant, &emitted).await?;
        }
        Ok(())
    }

    fn users_start_url(&self, rules: &FieldRules) -> String {
        let mut select: BTreeSet<String> = rules.graph_select();
        for always in [
            "id",
            "accountEnabled",
            "displayName",
            "mail",
            "userPrincipalName",
            "employeeId",
        ] {
            select.insert(always.to_owned());
        }
        let select: Vec<&str> = select.iter().map(String::as_str).collect();
        cardsync_graph::delta_start_url(&self.graph.settings().graph_url, "users", &select)
    }
}

/// Merges one groups-delta item (possibly one slice of a large group's members).
fn merge_group(groups: &mut HashMap<String, GroupRow>, item: &Value) {
    let Some(id) = item.get("id").and_then(Value::as_str) else {
        return;
    };
    let group = groups.entry(id.to_owned()).or_insert_with(|| GroupRow {
        group_id: id.to_owned(),
        display_name: None,
        members: HashMap::new(),
        present: true,
    });
    if item.get("@removed").is_some() {
        group.present = false;
        group.members.clear();
        return;
    }
    group.present = true;
    if let Some(name) = item.get("displayName").and_then(Value::as_str) {
        group.display_name = Some(name.to_owned());
    }
    for member in item
        .get("members@delta")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(member_id) = member.get("id").and_then(Value::as_str) else {
            continue;
        };
        if member.get("@removed").is_some() {
            group.members.remove(member_id);
            continue;
        }
        let kind = match member
            .get("@odata.type")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("#microsoft.graph.user") => "user",
            Some("#microsoft.graph.group") => "group",
            _ => "other",
        };
        group.members.insert(member_id.to_owned(), kind.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn group_members_merge_across_pages_and_removals_apply() {
        let mut groups = HashMap::new();
        merge_group(
            &mut groups,
            &json!({"id": "g", "displayName": "Sales", "members@delta": [{"@odata.type": "#microsoft.graph.user", "id": "a"}]}),
        );
        merge_group(
            &mut groups,
            &json!({"id": "g", "members@delta": [{"@odata.type": "#microsoft.graph.group", "id": "inner"}]}),
        );
        merge_group(
            &mut groups,
            &json!({"id": "g", "members@delta": [{"id": "a", "@removed": {"reason": "deleted"}}]}),
        );
        let g = &groups["g"];
        assert_eq!(g.display_name.as_deref(), Some("Sales"));
        assert_eq!(g.members.get("inner").map(String::as_str), Some("group"));
        assert!(!g.members.contains_key("a"));
        merge_group(
            &mut groups,
            &json!({"id": "g", "@removed": {"reason": "deleted"}}),
        );
        assert!(!groups["g"].present);
    }
}
