//! Applying card commands: one PostgreSQL transaction that locks the people, checks each
//! version, merges with the tenant's rules (`cardsync_rules`), writes the cards, their audit rows
//! and their outbox rows, and commits. Nothing here talks to RabbitMQ or Redis.
//!
//! A transaction may carry a batch of commands ([`apply_all`]): they are decided one after the
//! other exactly as alone (a later command sees what an earlier one wrote), but their reads and
//! writes are set-based. The batch first reads, under its locks, every card it may need (the
//! users' cards, the cards it could link by UID or email, their memberships); each command then
//! decides against that picture overlaid with the batch's own writes (the unit of work,
//! [`batch::Batch`]); at the end a handful of statements write every card, team, membership and
//! the journal (audit and outbox rows, `cardsync_cards::Journal`), and one commit makes them
//! durable. A batch costs about a dozen round trips whatever its size, which
//! is what makes thousands of commands per second possible. A batch is all or nothing; the
//! caller applies the commands of a failed batch one by one ([`apply`]), so one bad command
//! never holds back the others.
//!
//! Matching: the card of the command's user (tombstones included), else the live card with the
//! same UID, else the live card with the same email (case-insensitive), which is linked rather
//! than duplicated. A card owned by another, still active directory user is never taken over by
//! email: the command waits (transient) until that user's own change frees the email.
//!
//! What each command does to its card is decided by the pure functions of [`decide`]; this
//! module only finds the cards those decisions need and hands their results to the batch.

mod batch;
mod decide;

use crate::command::{InvalidCommand, ValidCommand};
use batch::{Batch, LinkKey};
use cardsync_bus::Transience;
use cardsync_cards::{DigestEvents, Entry, Source};
use cardsync_store::StoreError;
use cardsync_store::cards::{self, Card, CardStatus};
use cardsync_store::runs::{self, NewPerson};
use cardsync_store::tenants::{self, Tenant};
use cardsync_telemetry::propagation::{self, SpanRef};
use decide::{Change, Step};
use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;
use tracing::Instrument as _;
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
    /// The metric label, and the audit row's action of a change that has one.
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

    /// The run count this outcome adds to, once per command: a redelivery of a command already
    /// applied (a duplicate) was counted when it was applied; a version an even newer one had
    /// overtaken counts as `superseded`.
    pub fn run_count(self) -> Option<&'static str> {
        match self {
            Outcome::Duplicate | Outcome::DuplicateFast => None,
            Outcome::Stale => Some("superseded"),
            outcome => Some(outcome.as_str()),
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
    /// The card's name and email when the command added or removed a person (created,
    /// reactivated, deactivated, deleted): what the run's digest names them by.
    pub person: Option<Box<Named>>,
}

/// How a run digest names a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// The card's name field.
    pub name: Option<String>,
    /// The card's email.
    pub email: Option<String>,
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

impl Transience for ApplyError {
    /// The one place that decides whether trying again later can help.
    fn is_transient(&self) -> bool {
        match self {
            ApplyError::UnknownTenant(_) => false,
            // Another user's change frees the email; retries bound the wait.
            ApplyError::EmailHeld { .. } => true,
            ApplyError::Store(error) => error.is_transient(),
            ApplyError::WorkerStopped => true,
        }
    }
}

/// A command that failed its checks can never work: it is dead-lettered at once.
impl Transience for InvalidCommand {
    fn is_transient(&self) -> bool {
        false
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
    // The transaction's span continues the first command's trace and links the others', so
    // a change's trace reaches the commit that made it durable.
    let span = tracing::info_span!(
        "card batch",
        otel.kind = "client",
        db.system = "postgresql",
        commands = commands.len(),
    );
    propagation::follow_all(&span, commands.iter().filter_map(|(_, s)| SpanRef::of(s)));
    apply_all_in(pool, commands, exchange)
        .instrument(span)
        .await
}

async fn apply_all_in(
    pool: &PgPool,
    commands: &[(&ValidCommand, &tracing::Span)],
    exchange: &str,
) -> Result<Vec<Applied>, ApplyError> {
    let mut tx = pool.begin().await?;
    let mut tenants: HashMap<Uuid, Tenant> = HashMap::new();
    for (command, _) in commands {
        if let std::collections::hash_map::Entry::Vacant(entry) = tenants.entry(command.tenant_id) {
            // Held until the commit: an offboarding of the tenant cannot delete it half-way.
            let tenant = tenants::get_for_write(&mut tx, command.tenant_id)
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
        results.push(apply_one(&mut tx, tenant, command, span, &mut batch).await?);
    }
    batch.write(&mut tx).await?;
    record_in_runs(&mut tx, commands, &results, exchange).await?;
    tx.commit().await?;
    Ok(results)
}

/// Adds the outcomes of the commands that belong to a sync run to that run's counts, and the
/// people they added or removed to its digest, in the transaction that applied them, so a count
/// is there exactly when its change is; a run they end has its digest put in the outbox for
/// `exchange`. Runs are visited in id order, so concurrent batches never lock two runs in
/// opposite orders.
async fn record_in_runs(
    conn: &mut PgConnection,
    commands: &[(&ValidCommand, &tracing::Span)],
    results: &[Applied],
    exchange: &str,
) -> Result<(), ApplyError> {
    type OfRun = (HashMap<&'static str, i64>, Vec<NewPerson>);
    let mut by_run: std::collections::BTreeMap<Uuid, OfRun> = std::collections::BTreeMap::new();
    for ((command, _), applied) in commands.iter().zip(results) {
        let (Some(run_id), Some(name)) = (command.run_id, applied.outcome.run_count()) else {
            continue;
        };
        let (counts, people) = by_run.entry(run_id).or_default();
        *counts.entry(name).or_default() += 1;
        if let (Some(named), Some(card_id)) = (&applied.person, applied.card_id) {
            people.push(NewPerson {
                user_id: command.user_id.clone(),
                card_id,
                name: named.name.clone(),
                email: named.email.clone(),
                change: applied.outcome.as_str().to_owned(),
            });
        }
    }
    if by_run.is_empty() {
        return Ok(());
    }
    let digests = DigestEvents::new(exchange);
    for (run_id, (counts, people)) in by_run {
        let counts: Vec<(&str, i64)> = counts.into_iter().collect();
        runs::record_applied(&mut *conn, run_id, &counts, &people, &digests).await?;
    }
    Ok(())
}

/// One command inside a batch: the version check against the user's card as the batch stands,
/// then the decision of its step; its writes, audit row and events go to `batch`.
async fn apply_one(
    conn: &mut PgConnection,
    tenant: &Tenant,
    command: &ValidCommand,
    span: &tracing::Span,
    batch: &mut Batch,
) -> Result<Applied, ApplyError> {
    let existing = batch.card_of_user(command.tenant_id, &command.user_id);
    if let Some(outcome) = decide::already_applied(existing.as_ref(), command) {
        // Nothing written for this command.
        return Ok(Applied {
            outcome,
            card_id: existing.map(|card| card.card_id),
            events: 0,
            person: None,
        });
    }
    let change = match decide::step(command.action, tenant.rules.removal) {
        Step::Upsert => upsert(conn, tenant, command, existing, batch).await?,
        Step::Deactivate => decide::deactivate(tenant, command, existing),
        Step::Delete => decide::delete(command, existing),
    };
    Ok(finish(command, change, span, batch))
}

/// Upsert and reactivate: finds the card the user takes (their own, else one to link), then
/// decides.
async fn upsert(
    conn: &mut PgConnection,
    tenant: &Tenant,
    command: &ValidCommand,
    existing: Option<Card>,
    batch: &mut Batch,
) -> Result<Change, ApplyError> {
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
    batch.ensure_teams(command);
    let no_teams = Default::default();
    let teams_now = existing
        .as_ref()
        .and_then(|card| batch.teams_of(card.card_id))
        .unwrap_or(&no_teams);
    Ok(decide::upsert(tenant, command, existing, linked, teams_now))
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
    match batch
        .card_by_link(conn, command.tenant_id, LinkKey::Email(email))
        .await?
    {
        Some(card) => decide::link_by_email(card, email).map(Some),
        None => Ok(None),
    }
}

/// Puts a decided change in the batch and journals it: its audit row (unless only the version
/// moved) and its events, built inside `span` so they carry the trace of the delivery that
/// caused them.
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
        events,
        changed_fields,
        teams,
    } = change;
    let card_id = after.card_id;
    let action =
        (!matches!(outcome, Outcome::Unchanged | Outcome::Tombstoned)).then(|| outcome.as_str());
    let events = span.in_scope(|| {
        batch.journal.record(&Entry {
            source: Source::Command {
                cause: command.cause,
                message_id: &command.message_id,
            },
            action,
            before: before.as_ref(),
            after: &after,
            events: &events,
            changed_fields: &changed_fields,
        })
    });
    if let Some(teams) = teams {
        batch.set_teams(after.tenant_id, card_id, teams);
    }
    let person = matches!(
        outcome,
        Outcome::Created | Outcome::Reactivated | Outcome::Deactivated | Outcome::Deleted
    )
    .then(|| {
        Box::new(Named {
            name: after.fields.value("name").map(str::to_owned),
            email: after.email.clone(),
        })
    });
    // Last, so the card moves into the batch instead of being copied there.
    batch.put(after, new);
    Applied {
        outcome,
        card_id: Some(card_id),
        events,
        person,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cardsync_bus::HandlerError;

    fn handled(error: impl Transience + std::error::Error + Send + Sync + 'static) -> &'static str {
        match HandlerError::from(error) {
            HandlerError::Transient(_) => "retried",
            HandlerError::Permanent(_) => "dead-lettered",
            HandlerError::Interrupted(_) => "returned to its queue",
        }
    }

    #[test]
    fn a_held_email_a_stopped_worker_and_an_unreachable_database_are_retried() {
        let held = ApplyError::EmailHeld {
            email: "ann@contoso.example".into(),
            card_id: Uuid::nil(),
        };
        assert_eq!(handled(held), "retried");
        assert_eq!(handled(ApplyError::WorkerStopped), "retried");
        assert_eq!(
            handled(ApplyError::from(sqlx::Error::PoolTimedOut)),
            "retried"
        );
    }

    #[test]
    fn an_unknown_tenant_and_undecodable_stored_data_are_dead_lettered() {
        assert_eq!(
            handled(ApplyError::UnknownTenant(Uuid::nil())),
            "dead-lettered"
        );
        let corrupt = sqlx::Error::Decode("not a card status".into());
        assert_eq!(handled(ApplyError::from(corrupt)), "dead-lettered");
    }

    #[test]
    fn an_invalid_command_is_always_dead_lettered() {
        assert_eq!(handled(InvalidCommand::ZeroVersion), "dead-lettered");
        assert_eq!(handled(InvalidCommand::MissingEnvelope), "dead-lettered");
    }
}
