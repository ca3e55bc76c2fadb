//! Applying card commands: one PostgreSQL transaction that locks the people, checks each
//! version, merges with the tenant's rules (`cardsync_rules`), writes the cards, their audit rows
//! and their outbox rows, and commits. Nothing here talks to RabbitMQ or Redis.
//!
//! A transaction may carry a batch of commands ([`apply_all`]): they are applied one after the
//! other exactly as alone (a later command for the same user sees the earlier one's write), but
//! share the locks, the look-ups, the audit and outbox inserts and the commit, which is what
//! makes thousands of commands per second possible. A batch is all or nothing; the caller
//! applies the commands of a failed batch one by one ([`apply`]), so one bad command never
//! holds back the others.
//!
//! Matching: the card of the command's user (tombstones included), else the live card with the
//! same UID, else the live card with the same email (case-insensitive), which is linked rather
//! than duplicated. A card owned by another, still active directory user is never taken over by
//! email: the command waits (transient) until that user's own change frees the email.

use crate::command::{Action, ValidCommand, cause_name};
use crate::events::{EventSpec, outbox_message};
use cardsync_proto::card_event::Kind;
use cardsync_rules::{FieldStates, RemovalPolicy, plan_create, plan_update};
use cardsync_store::cards::{self, Card, CardRole, CardStatus};
use cardsync_store::outbox::NewMessage;
use cardsync_store::tenants::{self, Tenant};
use cardsync_store::{StoreError, audit, outbox, teams};
use sqlx::{PgConnection, PgPool};
use std::collections::{BTreeSet, HashMap, HashSet};
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
        }
    }

    /// Whether anything was committed.
    pub fn wrote(self) -> bool {
        !matches!(self, Outcome::Stale | Outcome::Duplicate)
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
            ApplyError::Store(StoreError::Query(error)) => is_transient_sql(error),
            ApplyError::Store(_) => true,
            ApplyError::WorkerStopped => true,
        }
    }
}

/// Unavailable, timed out, deadlocked or a lost race on a unique index: worth retrying.
/// Undecodable stored data or a violated check: a bug or corrupt row, retrying cannot help.
pub fn is_transient_sql(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::Encode(_)
        | sqlx::Error::Configuration(_) => false,
        sqlx::Error::Database(db) => {
            db.is_unique_violation() || !db.code().is_some_and(|code| code.starts_with("23"))
        }
        _ => true,
    }
}

/// What a branch decided; written by [`finish`].
struct Change {
    outcome: Outcome,
    before: Option<Card>,
    after: Card,
    kinds: Vec<Kind>,
    changed_fields: Vec<String>,
    audit_action: &'static str,
}

/// Audit rows and outbox rows of a transaction, inserted together just before the commit.
#[derive(Debug, Default)]
struct Journal {
    audit: Vec<audit::AuditEntry>,
    outbox: Vec<NewMessage>,
    /// Memberships known exactly for cards of the batch (read at its start, kept current by its
    /// writes), so an update whose teams did not move sends no membership statement. A card
    /// missing here is synced the long way.
    teams: HashMap<Uuid, BTreeSet<String>>,
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
    let mut journal = Journal::default();
    // Every user's card at once, read under the users' locks, and their memberships.
    let mut prefetched: HashMap<(Uuid, String), Card> = HashMap::new();
    for tenant_id in tenants.keys() {
        let user_ids: Vec<&str> = users
            .iter()
            .filter(|(tenant, _)| tenant == tenant_id)
            .map(|(_, user)| *user)
            .collect();
        let locked = cards::lock_by_users(&mut tx, *tenant_id, &user_ids).await?;
        let card_ids: Vec<Uuid> = locked.iter().map(|card| card.card_id).collect();
        let mut teams = cards::teams_of_cards(&mut *tx, *tenant_id, &card_ids).await?;
        for card in locked {
            journal.teams.insert(
                card.card_id,
                teams.remove(&card.card_id).unwrap_or_default(),
            );
            if let Some(user_id) = card.user_id.clone() {
                prefetched.insert((*tenant_id, user_id), card);
            }
        }
    }

    // What earlier commands of the batch wrote: a prefetched card they changed is read again,
    // so each command sees exactly what it would see alone.
    let mut written_users: HashSet<(Uuid, &str)> = HashSet::new();
    let mut written_cards: HashSet<Uuid> = HashSet::new();
    let mut results = Vec::with_capacity(commands.len());
    for (command, span) in commands {
        let user = (command.tenant_id, command.user_id.as_str());
        let prefetched = prefetched.remove(&(command.tenant_id, command.user_id.clone()));
        let existing = match prefetched {
            _ if written_users.contains(&user) => {
                cards::lock_by_user(&mut tx, command.tenant_id, &command.user_id).await?
            }
            Some(card) if written_cards.contains(&card.card_id) => {
                cards::lock_by_user(&mut tx, command.tenant_id, &command.user_id).await?
            }
            other => other,
        };
        let tenant = &tenants[&command.tenant_id];
        let applied = apply_one(
            &mut tx,
            tenant,
            command,
            existing,
            exchange,
            span,
            &mut journal,
        )
        .await?;
        if applied.outcome.wrote() {
            written_users.insert(user);
            written_cards.extend(applied.card_id);
        }
        results.push(applied);
    }
    audit::record_all(&mut tx, &journal.audit).await?;
    outbox::enqueue_all(&mut tx, &journal.outbox).await?;
    tx.commit().await?;
    Ok(results)
}

/// One command inside a batch's transaction: the version check against `existing` (the user's
/// card, locked), then the action; audit and outbox rows go to `journal`.
async fn apply_one(
    conn: &mut PgConnection,
    tenant: &Tenant,
    command: &ValidCommand,
    existing: Option<Card>,
    exchange: &str,
    span: &tracing::Span,
    journal: &mut Journal,
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
            upsert(conn, tenant, command, existing, &mut journal.teams).await?
        }
        (Action::Deactivate, _) | (Action::Delete, RemovalPolicy::Deactivate) => {
            deactivate(conn, tenant, command, existing).await?
        }
        (Action::Delete, RemovalPolicy::Delete) => {
            delete(conn, command, existing, &mut journal.teams).await?
        }
    };
    Ok(finish(tenant, command, change, exchange, span, journal))
}

/// Upsert and reactivate: the user is present, enabled and in scope.
async fn upsert(
    conn: &mut PgConnection,
    tenant: &Tenant,
    command: &ValidCommand,
    existing: Option<Card>,
    known_teams: &mut HashMap<Uuid, BTreeSet<String>>,
) -> Result<Change, ApplyError> {
    let rules = &tenant.rules;
    let existing = match existing {
        Some(tombstone) if tombstone.status == CardStatus::Deleted => {
            // The person is back after a permanent delete: a new card, found or made below.
            cards::remove(conn, tombstone.tenant_id, tombstone.card_id).await?;
            None
        }
        other => other,
    };
    let (mut card, before, linked, changes) = match existing {
        Some(card) => {
            let plan = plan_update(rules, &card.fields, &command.incoming);
            (card.clone(), Some(card), false, Some(plan))
        }
        None => match find_to_link(conn, command).await? {
            Some(card) => {
                let plan = plan_update(rules, &card.fields, &command.incoming);
                (card.clone(), Some(card), true, Some(plan))
            }
            None => {
                let mut card = Card::new(command.tenant_id);
                card.fields = plan_create(rules, &command.incoming);
                (card, None, false, None)
            }
        },
    };
    let mut changed_fields: Vec<String> = match &changes {
        Some(plan) => plan.changes.iter().map(|c| c.field.to_string()).collect(),
        None => card
            .fields
            .iter()
            .filter(|(_, state)| state.value.is_some())
            .map(|(name, _)| name.to_string())
            .collect(),
    };
    if let Some(plan) = changes {
        card.fields = plan.states;
    }
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

    if before.is_none() {
        cards::insert(conn, &card).await?;
    } else {
        cards::update(conn, &card).await?;
    }
    for (group_id, name) in &command.team_names {
        teams::upsert(conn, command.tenant_id, group_id, Some(name)).await?;
    }
    for group_id in &command.team_ids {
        if !command.team_names.contains_key(group_id) {
            teams::upsert(conn, command.tenant_id, group_id, None).await?;
        }
    }
    // A card inserted just now has no memberships; a card whose memberships are known and
    // equal to the command's needs no statement either.
    let wanted: BTreeSet<String> = command.team_ids.iter().cloned().collect();
    let known = if before.is_none() {
        Some(BTreeSet::new())
    } else {
        known_teams.get(&card.card_id).cloned()
    };
    if known.as_ref() != Some(&wanted)
        && cards::set_teams(conn, command.tenant_id, card.card_id, &command.team_ids).await?
    {
        changed_fields.push("teams".into());
    }
    known_teams.insert(card.card_id, wanted);

    let invite = tenant.invites_enabled;
    let (outcome, mut kinds, audit_action) = if before.is_none() {
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
) -> Result<Option<Card>, ApplyError> {
    if let Some(uid) = &command.uid
        && let Some(card) = cards::lock_by_uid(conn, command.tenant_id, uid).await?
    {
        return Ok(Some(card));
    }
    let Some(email) = &command.incoming.link_email else {
        return Ok(None);
    };
    let Some(card) = cards::lock_by_email(conn, command.tenant_id, email).await? else {
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
async fn tombstone(conn: &mut PgConnection, command: &ValidCommand) -> Result<Change, ApplyError> {
    let mut card = Card::new(command.tenant_id);
    card.user_id = Some(command.user_id.clone());
    card.status = CardStatus::Deleted;
    card.applied_version = command.version;
    cards::insert(conn, &card).await?;
    Ok(Change {
        outcome: Outcome::Tombstoned,
        before: None,
        after: card,
        kinds: vec![],
        changed_fields: vec![],
        audit_action: "tombstoned",
    })
}

/// Moves only the version of an existing row.
async fn bump_version(
    conn: &mut PgConnection,
    mut card: Card,
    command: &ValidCommand,
) -> Result<Change, ApplyError> {
    card.applied_version = command.version;
    cards::update(conn, &card).await?;
    Ok(Change {
        outcome: Outcome::Unchanged,
        before: None,
        after: card,
        kinds: vec![],
        changed_fields: vec![],
        audit_action: "unchanged",
    })
}

/// A disabled account (or a removal under the deactivate policy).
async fn deactivate(
    conn: &mut PgConnection,
    tenant: &Tenant,
    command: &ValidCommand,
    existing: Option<Card>,
) -> Result<Change, ApplyError> {
    let card = match existing {
        None => return tombstone(conn, command).await,
        Some(card) if card.status == CardStatus::Deleted => {
            return bump_version(conn, card, command).await;
        }
        Some(card) => card,
    };
    let before = card.clone();
    let mut after = card;
    let plan = plan_update(&tenant.rules, &after.fields, &command.incoming);
    let changed_fields: Vec<String> = plan.changes.iter().map(|c| c.field.to_string()).collect();
    after.fields = plan.states;
    after.email = after.fields.value("email").map(str::to_owned);
    if command.incoming.fields.contains_key("photo") {
        after.photo_etag = command.incoming.value("photo").map(str::to_owned);
    }
    after.status = CardStatus::Deactivated;
    after.applied_version = command.version;
    cards::update(conn, &after).await?;
    let (outcome, kinds, audit_action) = if before.status == CardStatus::Active {
        (Outcome::Deactivated, vec![Kind::Deactivated], "deactivated")
    } else if !changed_fields.is_empty() {
        (Outcome::Updated, vec![Kind::Updated], "updated")
    } else {
        (Outcome::Unchanged, vec![], "unchanged")
    };
    Ok(Change {
        outcome,
        before: Some(before),
        after,
        kinds,
        changed_fields,
        audit_action,
    })
}

/// A removal under the delete policy: the card becomes a tombstone without personal data.
async fn delete(
    conn: &mut PgConnection,
    command: &ValidCommand,
    existing: Option<Card>,
    known_teams: &mut HashMap<Uuid, BTreeSet<String>>,
) -> Result<Change, ApplyError> {
    let card = match existing {
        None => return tombstone(conn, command).await,
        Some(card) if card.status == CardStatus::Deleted => {
            return bump_version(conn, card, command).await;
        }
        Some(card) => card,
    };
    let before = card.clone();
    let mut after = card;
    after.status = CardStatus::Deleted;
    after.fields = FieldStates::new();
    after.email = None;
    after.uid = None;
    after.photo_etag = None;
    after.role = CardRole::Member;
    after.applied_version = command.version;
    cards::set_teams(conn, after.tenant_id, after.card_id, &[]).await?;
    known_teams.insert(after.card_id, BTreeSet::new());
    cards::update(conn, &after).await?;
    Ok(Change {
        outcome: Outcome::Deleted,
        before: Some(before),
        after,
        kinds: vec![Kind::Deleted],
        changed_fields: vec![],
        audit_action: "deleted",
    })
}

/// The audit row and the outbox rows of a change, journaled for the batch's transaction. The
/// events are built inside `span`, so they carry the trace of the delivery that caused them.
fn finish(
    tenant: &Tenant,
    command: &ValidCommand,
    change: Change,
    exchange: &str,
    span: &tracing::Span,
    journal: &mut Journal,
) -> Applied {
    let card = &change.after;
    if !matches!(change.outcome, Outcome::Unchanged | Outcome::Tombstoned) {
        journal.audit.push(audit::AuditEntry {
            tenant_id: tenant.id,
            card_id: card.card_id,
            action: change.audit_action.to_owned(),
            cause: cause_name(command.cause).to_owned(),
            message_id: Some(command.message_id.clone()),
            version: Some(command.version),
            status_before: change.before.as_ref().map(|c| c.status.as_str().to_owned()),
            status_after: Some(card.status.as_str().to_owned()),
            fields_before: change.before.as_ref().map(|c| c.fields.clone()),
            fields_after: Some(card.fields.clone()),
        });
    }
    for kind in &change.kinds {
        let message = span.in_scope(|| {
            outbox_message(
                &EventSpec {
                    tenant_id: tenant.id,
                    cause: command.cause,
                    causation_id: &command.message_id,
                    kind: *kind,
                    card_id: card.card_id,
                    user_id: &command.user_id,
                    version: command.version,
                    changed_fields: &change.changed_fields,
                },
                exchange,
            )
        });
        journal.outbox.push(message);
    }
    Applied {
        outcome: change.outcome,
        card_id: Some(card.card_id),
        events: change.kinds.len(),
    }
}
