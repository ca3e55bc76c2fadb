//! Applying card commands: one PostgreSQL transaction that locks the people, checks each
//! version, merges with the tenant's rules (`cardsync_rules`), writes the cards, their audit rows
//! and their outbox rows, and commits. Nothing here talks to RabbitMQ or Redis.
//!
//! A transaction may carry a batch of commands ([`apply_all`]): they are decided one after the
//! other exactly as alone (a later command sees what an earlier one wrote), but their reads and
//! writes are set-based. The batch first reads, under its locks, every card it may need (the
//! users' cards, the cards it could link by UID or email, their memberships); each command then
//! decides against that picture overlaid with the batch's own writes ([`Batch`]); at the end a
//! handful of statements write every card, team, membership, audit row and outbox row, and one
//! commit makes them durable. A batch costs about a dozen round trips whatever its size, which
//! is what makes thousands of commands per second possible. A batch is all or nothing; the
//! caller applies the commands of a failed batch one by one ([`apply`]), so one bad command
//! never holds back the others.
//!
//! Matching: the card of the command's user (tombstones included), else the live card with the
//! same UID, else the live card with the same email (case-insensitive), which is linked rather
//! than duplicated. A card owned by another, still active directory user is never taken over by
//! email: the command waits (transient) until that user's own change frees the email.

use crate::command::{Action, ValidCommand};
use cardsync_cards::{Entry, Journal, Source};
use cardsync_proto::card_event::Kind;
use cardsync_rules::{FieldStates, RemovalPolicy, plan_create, plan_update};
use cardsync_store::cards::{self, Card, CardRole, CardStatus};
use cardsync_store::tenants::{self, Tenant};
use cardsync_store::{StoreError, teams};
use sqlx::{PgConnection, PgPool};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use uuid::Uuid;

/// What applying a command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A new card.
    Created,
    /// An existing card (found by UID or email) now belongs to the user.
    Linked,
    /// Values, teams or role changed.
    Updated,
    /// Newer version, same visible card: only the version moved.
    Unchanged,
    /// The card was deactivated.
    Deactivated,
    /// The card was active again.
    Reactivated,
    /// The card was deleted (tombstoned) under the tenant's delete policy.
    Deleted,
    /// A deactivate or delete for a user without a card: only the version is remembered.
    Tombstoned,
    /// Older than the applied version: nothing written.
    Stale,
    /// The applied version itself (a redelivery): nothing written.
    Duplicate,
    /// A redelivery the Redis fast path recognised: PostgreSQL was not asked.
    DuplicateFast,
}

impl Outcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Linked => "linked",
            Outcome::Updated => "updated",
            Outcome::Unchanged => "unchanged",
            Outcome::Deactivated => "deactivated",
            Outcome::Reactivated => "reactivated",
            Outcome::Deleted => "deleted",
            Outcome::Tombstoned => "tombstoned",
            Outcome::Stale => "stale",
            Outcome::Duplicate => "duplicate",
            Outcome::DuplicateFast => "duplicate_fast",
        }
    }

    /// Whether anything was committed.
    pub fn wrote(self) -> bool {
        !matches!(
            self,
            Outcome::Stale | Outcome::Duplicate | Outcome::DuplicateFast
        )
    }
}

/// The result of [`apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// What happened.
    pub outcome: Outcome,
    /// The card concerned, if there is one.
    pub card_id: Option<Uuid>,
    /// Card events enqueued in the outbox.
    pub events: usize,
}

/// Why a command could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// No tenant with this id is configured.
    #[error("tenant {0} is not configured")]
    UnknownTenant(Uuid),
    /// The email belongs to the card of another, active directory user.
    #[error("email {email:?} belongs to card {card_id} of another active directory user")]
    EmailHeld {
        /// The email.
        email: String,
        /// The card holding it.
        card_id: Uuid,
    },
    /// PostgreSQL failed.
    #[error("card store failed")]
    Store(#[from] StoreError),
    /// The batch worker that was to apply the command is gone (it panicked or shut down);
    /// nothing was committed for it.
    #[error("the card command batch worker stopped")]
    WorkerStopped,
}

impl From<sqlx::Error> for ApplyError {
    fn from(error: sqlx::Error) -> Self {
        ApplyError::Store(StoreError::Query(error))
    }
}

impl ApplyError {
    /// The one place that decides whether trying again later can help.
    pub fn is_transient(&self) -> bool {
        match self {
            ApplyError::UnknownTenant(_) => false,
            // Another user's change frees the email; retries bound the wait.
            ApplyError::EmailHeld { .. } => true,
            // The store's one classification of database errors.
            ApplyError::Store(error) => error.is_transient(),
            ApplyError::WorkerStopped => true,
        }
    }
}

/// What a branch decided; journaled and put in the batch by [`finish`].
struct Change {
    outcome: Outcome,
    before: Option<Card>,
    after: Card,
    /// `after` is not stored yet (inserted rather than updated at the end of the batch).
    new: bool,
    kinds: Vec<Kind>,
    changed_fields: Vec<String>,
    audit_action: &'static str,
}

/// What a card without a user may be linked by.
#[derive(Debug, Clone, Copy)]
enum LinkKey<'a> {
    /// The tenant's UID of the person.
    Uid(&'a str),
    /// The email, compared case-insensitively.
    Email(&'a str),
}

impl LinkKey<'_> {
    /// Whether `card` holds this key.
    fn held_by(self, card: &Card) -> bool {
        match self {
            LinkKey::Uid(uid) => card.uid.as_deref() == Some(uid),
            LinkKey::Email(email) => card
                .email
                .as_deref()
                .is_some_and(|held| held.to_lowercase() == email.to_lowercase()),
        }
    }
}

/// A card the batch wrote: its state after the batch's last command for it.
#[derive(Debug)]
struct Written {
    card: Card,
    /// Not in PostgreSQL before the batch (inserted at the end rather than updated).
    new: bool,
}

/// One transaction's picture of the cards and everything it will write.
///
/// What PostgreSQL held at the start is read once, under the users' locks ([`Batch::read`]);
/// every command's writes stay here until [`Batch::write`], and every look-up checks them
/// first, so each command sees exactly what it would see alone. A card the batch wrote is
/// never taken from the start-of-batch reads again: its written state is the truth (a card
/// linked to another user, or whose email changed, no longer matches what it matched then).
#[derive(Debug)]
struct Batch {
    /// The commands' users' cards at the start, tombstones included.
    by_user: HashMap<(Uuid, String), Card>,
    /// Live cards holding a UID some command may link by, at the start.
    by_uid: HashMap<(Uuid, String), Card>,
    /// Live cards holding an email some command may link by (key: the email as the command
    /// gives it), at the start.
    by_email: HashMap<(Uuid, String), Card>,
    /// The UIDs the start-of-batch reads covered; any other is looked up alone.
    uids_read: HashSet<(Uuid, String)>,
    /// The emails the start-of-batch reads covered; any other is looked up alone.
    emails_read: HashSet<(Uuid, String)>,
    /// Cards written by the batch, in the order first written.
    written: Vec<Written>,
    /// Rows the batch removes (tombstones of people who are back), `(tenant, card)`.
    removed: Vec<(Uuid, Uuid)>,
    /// Memberships known exactly for cards the batch may touch (read at the start, kept
    /// current by its writes).
    teams: HashMap<Uuid, BTreeSet<String>>,
    /// Cards whose memberships the batch changed.
    teams_moved: BTreeSet<(Uuid, Uuid)>,
    /// Teams to make sure of, with the last known name.
    team_names: BTreeMap<(Uuid, String), Option<String>>,
    /// The audit rows and card events of the batch's changes, inserted together at the end.
    journal: Journal,
}

impl Batch {
    /// An empty batch whose card events go to `exchange` (full name).
    fn new(exchange: &str) -> Self {
        Self {
            by_user: HashMap::new(),
            by_uid: HashMap::new(),
            by_email: HashMap::new(),
            uids_read: HashSet::new(),
            emails_read: HashSet::new(),
            written: Vec::new(),
            removed: Vec::new(),
            teams: HashMap::new(),
            teams_moved: BTreeSet::new(),
            team_names: BTreeMap::new(),
            journal: Journal::new(exchange),
        }
    }

    /// Reads, under locks, what the commands of one tenant may need: their users' cards, the
    /// live cards they could link by UID or email, and the memberships of all of them.
    async fn read(
        &mut self,
        conn: &mut PgConnection,
        tenant_id: Uuid,
        commands: &[&ValidCommand],
    ) -> Result<(), ApplyError> {
        let user_ids: Vec<&str> = commands.iter().map(|c| c.user_id.as_str()).collect();
        let mut card_ids = Vec::new();
        for card in cards::lock_by_users(conn, tenant_id, &user_ids).await? {
            card_ids.push(card.card_id);
            if let Some(user_id) = card.user_id.clone() {
                self.by_user.insert((tenant_id, user_id), card);
            }
        }
        // Only a user without a live card links one (a tombstone's user comes back as new).
        let linking: Vec<&ValidCommand> = commands
            .iter()
            .copied()
            .filter(|command| matches!(command.action, Action::Upsert | Action::Reactivate))
            .filter(|command| {
                self.by_user
                    .get(&(tenant_id, command.user_id.clone()))
                    .is_none_or(|card| card.status == CardStatus::Deleted)
            })
            .collect();
        let uids: Vec<&str> = linking.iter().filter_map(|c| c.uid.as_deref()).collect();
        if !uids.is_empty() {
            for card in cards::lock_by_uids(conn, tenant_id, &uids).await? {
                card_ids.push(card.card_id);
                if let Some(uid) = card.uid.clone() {
                    self.by_uid.insert((tenant_id, uid), card);
                }
            }
            self.uids_read
                .extend(uids.iter().map(|uid| (tenant_id, (*uid).to_owned())));
        }
        let emails: Vec<&str> = linking
            .iter()
            .filter_map(|c| c.incoming.link_email.as_deref())
            .collect();
        if !emails.is_empty() {
            for (email, card) in cards::lock_by_emails(conn, tenant_id, &emails).await? {
                card_ids.push(card.card_id);
                self.by_email.insert((tenant_id, email), card);
            }
            self.emails_read
                .extend(emails.iter().map(|email| (tenant_id, (*email).to_owned())));
        }
        card_ids.sort_unstable();
        card_ids.dedup();
        let mut teams = cards::teams_of_cards(&mut *conn, tenant_id, &card_ids).await?;
        for card_id in card_ids {
            self.teams
                .insert(card_id, teams.remove(&card_id).unwrap_or_default());
        }
        Ok(())
    }

    /// The batch's current state of every card it wrote.
    fn written_cards(&self) -> impl Iterator<Item = &Card> {
        self.written.iter().map(|written| &written.card)
    }

    /// Whether a start-of-batch read of this card is out of date.
    fn superseded(&self, card: &Card) -> bool {
        self.written_cards()
            .any(|written| written.card_id == card.card_id)
            || self.removed.contains(&(card.tenant_id, card.card_id))
    }

    /// The user's card as it stands now in the batch, tombstones included.
    fn card_of_user(&self, tenant_id: Uuid, user_id: &str) -> Option<Card> {
        let written = self
            .written_cards()
            .find(|card| card.tenant_id == tenant_id && card.user_id.as_deref() == Some(user_id));
        if let Some(card) = written {
            return Some(card.clone());
        }
        self.by_user
            .get(&(tenant_id, user_id.to_owned()))
            .filter(|card| !self.superseded(card))
            .cloned()
    }

    /// The live card holding `key` as it stands now in the batch.
    async fn card_by_link(
        &mut self,
        conn: &mut PgConnection,
        tenant_id: Uuid,
        key: LinkKey<'_>,
    ) -> Result<Option<Card>, ApplyError> {
        let written = self.written_cards().find(|card| {
            card.tenant_id == tenant_id && card.status != CardStatus::Deleted && key.held_by(card)
        });
        if let Some(card) = written {
            return Ok(Some(card.clone()));
        }
        let (read, found, text) = match key {
            LinkKey::Uid(uid) => (&self.uids_read, &self.by_uid, uid),
            LinkKey::Email(email) => (&self.emails_read, &self.by_email, email),
        };
        let map_key = (tenant_id, text.to_owned());
        let stored = if read.contains(&map_key) {
            found.get(&map_key).cloned()
        } else {
            let card = match key {
                LinkKey::Uid(uid) => cards::lock_by_uid(conn, tenant_id, uid).await?,
                LinkKey::Email(email) => cards::lock_by_email(conn, tenant_id, email).await?,
            };
            self.learn_teams(conn, card.as_ref()).await?;
            card
        };
        Ok(stored.filter(|card| !self.superseded(card)))
    }

    /// Reads the memberships of a card found outside the start-of-batch reads.
    async fn learn_teams(
        &mut self,
        conn: &mut PgConnection,
        card: Option<&Card>,
    ) -> Result<(), ApplyError> {
        if let Some(card) = card
            && !self.teams.contains_key(&card.card_id)
        {
            let mut teams = cards::teams_of_cards(conn, card.tenant_id, &[card.card_id]).await?;
            self.teams.insert(
                card.card_id,
                teams.remove(&card.card_id).unwrap_or_default(),
            );
        }
        Ok(())
    }

    /// Records the card's new state (`new`: not stored before the batch).
    fn put(&mut self, card: Card, new: bool) {
        match self
            .written
            .iter_mut()
            .find(|written| written.card.card_id == card.card_id)
        {
            Some(written) => written.card = card,
            None => self.written.push(Written { card, new }),
        }
    }

    /// Removes a card for good.
    fn remove(&mut self, tenant_id: Uuid, card_id: Uuid) {
        let stored = match self
            .written
            .iter()
            .position(|written| written.card.card_id == card_id)
        {
            Some(index) => !self.written.remove(index).new,
            None => true,
        };
        // A card the batch itself made is simply never inserted.
        if stored {
            self.removed.push((tenant_id, card_id));
        }
        self.teams.remove(&card_id);
        self.teams_moved.remove(&(tenant_id, card_id));
    }

    /// Makes the card's memberships `wanted`; returns whether they moved.
    fn set_teams(&mut self, tenant_id: Uuid, card_id: Uuid, wanted: BTreeSet<String>) -> bool {
        let current = self.teams.entry(card_id).or_default();
        if *current == wanted {
            return false;
        }
        *current = wanted;
        self.teams_moved.insert((tenant_id, card_id));
        true
    }

    /// Makes sure a team exists; a known name replaces the stored one.
    fn ensure_team(&mut self, tenant_id: Uuid, group_id: &str, name: Option<&str>) {
        let entry = self
            .team_names
            .entry((tenant_id, group_id.to_owned()))
            .or_default();
        if let Some(name) = name {
            *entry = Some(name.to_owned());
        }
    }

    /// Writes everything the batch decided, one statement per kind of row. The order keeps
    /// the unique indexes satisfied: removed tombstones first (their users come back as new
    /// cards), then updated cards (emails and UIDs they let go of), then new cards; teams
    /// before the memberships that reference them.
    async fn write(self, conn: &mut PgConnection) -> Result<(), ApplyError> {
        cards::remove_all(conn, &self.removed).await?;
        let (new, stored): (Vec<&Written>, Vec<&Written>) =
            self.written.iter().partition(|written| written.new);
        let stored: Vec<&Card> = stored.iter().map(|written| &written.card).collect();
        cards::update_all(conn, &stored).await?;
        let new: Vec<&Card> = new.iter().map(|written| &written.card).collect();
        cards::insert_all(conn, &new).await?;
        let teams: Vec<(Uuid, &str, Option<&str>)> = self
            .team_names
            .iter()
            .map(|((tenant_id, group_id), name)| (*tenant_id, group_id.as_str(), name.as_deref()))
            .collect();
        teams::upsert_all(conn, &teams).await?;
        let none = BTreeSet::new();
        let memberships: Vec<cards::Memberships<'_>> = self
            .teams_moved
            .iter()
            .map(|(tenant_id, card_id)| cards::Memberships {
                tenant_id: *tenant_id,
                card_id: *card_id,
                group_ids: self.teams.get(card_id).unwrap_or(&none),
            })
            .collect();
        cards::set_teams_all(conn, &memberships).await?;
        self.journal.write(conn).await?;
        Ok(())
    }
}

/// Applies `command` in a transaction of its own; its card events go to `exchange` (full name)
/// and continue the current span's trace.
pub async fn apply(
    pool: &PgPool,
    command: &ValidCommand,
    exchange: &str,
) -> Result<Applied, ApplyError> {
    let span = tracing::Span::current();
    let mut applied = apply_all(pool, &[(command, &span)], exchange).await?;
    applied.pop().ok_or(ApplyError::WorkerStopped)
}

/// Applies `commands` in order, in one transaction: every command or none. Each command's
/// events continue the trace of the span paired with it. On `Err` nothing was committed.
pub async fn apply_all(
    pool: &PgPool,
    commands: &[(&ValidCommand, &tracing::Span)],
    exchange: &str,
) -> Result<Vec<Applied>, ApplyError> {
    let mut tx = pool.begin().await?;
    let mut tenants: HashMap<Uuid, Tenant> = HashMap::new();
    for (command, _) in commands {
        if let std::collections::hash_map::Entry::Vacant(entry) = tenants.entry(command.tenant_id) {
            let tenant = tenants::get(&mut *tx, command.tenant_id)
                .await?
                .ok_or(ApplyError::UnknownTenant(command.tenant_id))?;
            entry.insert(tenant);
        }
    }
    let users: Vec<(Uuid, &str)> = commands
        .iter()
        .map(|(command, _)| (command.tenant_id, command.user_id.as_str()))
        .collect();
    cards::lock_users(&mut tx, &users).await?;
    let mut batch = Batch::new(exchange);
    for tenant_id in tenants.keys() {
        let of_tenant: Vec<&ValidCommand> = commands
            .iter()
            .map(|(command, _)| *command)
            .filter(|command| command.tenant_id == *tenant_id)
            .collect();
        batch.read(&mut tx, *tenant_id, &of_tenant).await?;
    }

    let mut results = Vec::with_capacity(commands.len());
    for (command, span) in commands {
        let tenant = &tenants[&command.tenant_id];
        let existing = batch.card_of_user(command.tenant_id, &command.user_id);
        let applied = apply_one(&mut tx, tenant, command, existing, span, &mut batch).await?;
        results.push(applied);
    }
    batch.write(&mut tx).await?;
    tx.commit().await?;
    Ok(results)
}

/// One command inside a batch: the version check against `existing` (the user's card as the
/// batch stands), then the action; its writes, audit and outbox rows go to `batch`.
async fn apply_one(
    conn: &mut PgConnection,
    tenant: &Tenant,
    command: &ValidCommand,
    existing: Option<Card>,
    span: &tracing::Span,
    batch: &mut Batch,
) -> Result<Applied, ApplyError> {
    if let Some(card) = &existing {
        let outcome = if command.version == card.applied_version {
            Some(Outcome::Duplicate)
        } else if command.version < card.applied_version {
            Some(Outcome::Stale)
        } else {
            None
        };
        if let Some(outcome) = outcome {
            // Nothing written for this command.
            return Ok(Applied {
                outcome,
                card_id: Some(card.card_id),
                events: 0,
            });
        }
    }

    let removal = tenant.rules.removal;
    let change = match (command.action, removal) {
        (Action::Upsert | Action::Reactivate, _) => {
            upsert(conn, tenant, command, existing, batch).await?
        }
        (Action::Deactivate, _) | (Action::Delete, RemovalPolicy::Deactivate) => {
            deactivate(tenant, command, existing)
        }
        (Action::Delete, RemovalPolicy::Delete) => delete(command, existing, batch),
    };
    Ok(finish(command, change, span, batch))
}

/// Upsert and reactivate: the user is present, enabled and in scope.
async fn upsert(
    conn: &mut PgConnection,
    tenant: &Tenant,
    command: &ValidCommand,
    existing: Option<Card>,
    batch: &mut Batch,
) -> Result<Change, ApplyError> {
    let rules = &tenant.rules;
    let existing = match existing {
        Some(tombstone) if tombstone.status == CardStatus::Deleted => {
            // The person is back after a permanent delete: a new card, found or made below.
            batch.remove(tombstone.tenant_id, tombstone.card_id);
            None
        }
        other => other,
    };
    let (existing, linked) = match existing {
        Some(card) => (Some(card), false),
        None => {
            let found = find_to_link(conn, command, batch).await?;
            let linked = found.is_some();
            (found, linked)
        }
    };
    // The next state starts from the merged fields; the card as it was stays for the audit.
    let (mut card, before, mut changed_fields) = match existing {
        Some(card) => {
            let plan = plan_update(rules, &card.fields, &command.incoming);
            let changed: Vec<String> = plan.changes.iter().map(|c| c.field.to_string()).collect();
            (card.with_fields(plan.states), Some(card), changed)
        }
        None => {
            let mut card = Card::new(command.tenant_id);
            card.fields = plan_create(rules, &command.incoming);
            let changed = card.fields.filled_names();
            (card, None, changed)
        }
    };
    card.user_id = Some(command.user_id.clone());
    if command.uid.is_some() {
        card.uid = command.uid.clone();
    }
    card.email = card.fields.value("email").map(str::to_owned);
    if command.incoming.fields.contains_key("photo") {
        card.photo_etag = command.incoming.value("photo").map(str::to_owned);
    }
    let was_deactivated = card.status == CardStatus::Deactivated;
    card.status = CardStatus::Active;
    let role = next_role(tenant, command, card.role);
    if role != card.role {
        card.role = role;
        if before.is_some() {
            changed_fields.push("role".into());
        }
    }
    card.applied_version = command.version;

    for group_id in &command.team_ids {
        let name = command.team_names.get(group_id).map(String::as_str);
        batch.ensure_team(command.tenant_id, group_id, name);
    }
    for (group_id, name) in &command.team_names {
        batch.ensure_team(command.tenant_id, group_id, Some(name));
    }
    let created = before.is_none();
    let wanted: BTreeSet<String> = command.team_ids.iter().cloned().collect();
    if batch.set_teams(command.tenant_id, card.card_id, wanted) {
        changed_fields.push("teams".into());
    }

    let invite = tenant.invites_enabled;
    let (outcome, mut kinds, audit_action) = if created {
        (Outcome::Created, vec![Kind::Created], "created")
    } else if linked {
        (Outcome::Linked, vec![Kind::Linked], "linked")
    } else if was_deactivated {
        (Outcome::Reactivated, vec![Kind::Reactivated], "reactivated")
    } else if !changed_fields.is_empty() {
        (Outcome::Updated, vec![Kind::Updated], "updated")
    } else {
        (Outcome::Unchanged, vec![], "unchanged")
    };
    if invite && matches!(outcome, Outcome::Created | Outcome::Linked) {
        kinds.push(Kind::Invited);
    }
    Ok(Change {
        outcome,
        before,
        after: card,
        new: created,
        kinds,
        changed_fields,
        audit_action,
    })
}

/// The card a user without one takes over: same UID, else same email (not held by another
/// active directory user).
async fn find_to_link(
    conn: &mut PgConnection,
    command: &ValidCommand,
    batch: &mut Batch,
) -> Result<Option<Card>, ApplyError> {
    if let Some(uid) = &command.uid
        && let Some(card) = batch
            .card_by_link(conn, command.tenant_id, LinkKey::Uid(uid))
            .await?
    {
        return Ok(Some(card));
    }
    let Some(email) = &command.incoming.link_email else {
        return Ok(None);
    };
    let Some(card) = batch
        .card_by_link(conn, command.tenant_id, LinkKey::Email(email))
        .await?
    else {
        return Ok(None);
    };
    if card.user_id.is_some() && card.status == CardStatus::Active {
        return Err(ApplyError::EmailHeld {
            email: email.clone(),
            card_id: card.card_id,
        });
    }
    Ok(Some(card))
}

/// Roles follow the directory only when the tenant turns admin roles on; otherwise everyone is
/// a member.
fn next_role(tenant: &Tenant, command: &ValidCommand, current: CardRole) -> CardRole {
    if !tenant.admin_roles_enabled {
        return CardRole::Member;
    }
    command.role.unwrap_or(current)
}

/// A card without personal data that remembers the user's version.
fn tombstone(command: &ValidCommand) -> Change {
    let mut card = Card::new(command.tenant_id);
    card.user_id = Some(command.user_id.clone());
    card.status = CardStatus::Deleted;
    card.applied_version = command.version;
    Change {
        outcome: Outcome::Tombstoned,
        before: None,
        after: card,
        new: true,
        kinds: vec![],
        changed_fields: vec![],
        audit_action: "tombstoned",
    }
}

/// Moves only the version of an existing row.
fn bump_version(mut card: Card, command: &ValidCommand) -> Change {
    card.applied_version = command.version;
    Change {
        outcome: Outcome::Unchanged,
        before: None,
        after: card,
        new: false,
        kinds: vec![],
        changed_fields: vec![],
        audit_action: "unchanged",
    }
}

/// A disabled account (or a removal under the deactivate policy).
fn deactivate(tenant: &Tenant, command: &ValidCommand, existing: Option<Card>) -> Change {
    let card = match existing {
        None => return tombstone(command),
        Some(card) if card.status == CardStatus::Deleted => {
            return bump_version(card, command);
        }
        Some(card) => card,
    };
    let plan = plan_update(&tenant.rules, &card.fields, &command.incoming);
    let changed_fields: Vec<String> = plan.changes.iter().map(|c| c.field.to_string()).collect();
    let mut after = card.with_fields(plan.states);
    let before = card;
    after.email = after.fields.value("email").map(str::to_owned);
    if command.incoming.fields.contains_key("photo") {
        after.photo_etag = command.incoming.value("photo").map(str::to_owned);
    }
    after.status = CardStatus::Deactivated;
    after.applied_version = command.version;
    let (outcome, kinds, audit_action) = if before.status == CardStatus::Active {
        (Outcome::Deactivated, vec![Kind::Deactivated], "deactivated")
    } else if !changed_fields.is_empty() {
        (Outcome::Updated, vec![Kind::Updated], "updated")
    } else {
        (Outcome::Unchanged, vec![], "unchanged")
    };
    Change {
        outcome,
        before: Some(before),
        after,
        new: false,
        kinds,
        changed_fields,
        audit_action,
    }
}

/// A removal under the delete policy: the card becomes a tombstone without personal data.
fn delete(command: &ValidCommand, existing: Option<Card>, batch: &mut Batch) -> Change {
    let card = match existing {
        None => return tombstone(command),
        Some(card) if card.status == CardStatus::Deleted => {
            return bump_version(card, command);
        }
        Some(card) => card,
    };
    let mut after = card.with_fields(FieldStates::new());
    let before = card;
    after.status = CardStatus::Deleted;
    after.email = None;
    after.uid = None;
    after.photo_etag = None;
    after.role = CardRole::Member;
    after.applied_version = command.version;
    batch.set_teams(after.tenant_id, after.card_id, BTreeSet::new());
    Change {
        outcome: Outcome::Deleted,
        before: Some(before),
        after,
        new: false,
        kinds: vec![Kind::Deleted],
        changed_fields: vec![],
        audit_action: "deleted",
    }
}

/// Journals a change (its audit row, unless only the version moved, and its events) and puts
/// its card in the batch. The events are built inside `span`, so they carry the trace of the
/// delivery that caused them.
fn finish(
    command: &ValidCommand,
    change: Change,
    span: &tracing::Span,
    batch: &mut Batch,
) -> Applied {
    let Change {
        outcome,
        before,
        after,
        new,
        kinds,
        changed_fields,
        audit_action,
    } = change;
    let card_id = after.card_id;
    let action =
        (!matches!(outcome, Outcome::Unchanged | Outcome::Tombstoned)).then_some(audit_action);
    let events = span.in_scope(|| {
        batch.journal.record(&Entry {
            source: Source::Command {
                cause: command.cause,
                message_id: &command.message_id,
            },
            action,
            before: before.as_ref(),
            after: &after,
            events: &kinds,
            changed_fields: &changed_fields,
        })
    });
    // Last, so the card moves into the batch instead of being copied there.
    batch.put(after, new);
    Applied {
        outcome,
        card_id: Some(card_id),
        events,
    }
}
