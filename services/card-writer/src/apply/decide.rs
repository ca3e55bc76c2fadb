//! The per-command decisions: given a command, the tenant and the user's card as the batch
//! stands, what the card becomes, what the command's outcome is and which events announce it.
//! Pure functions: the unit of work ([`super::batch`]) found the cards, and writes and journals
//! what is decided here.

use super::{ApplyError, Outcome};
use crate::command::{Action, ValidCommand};
use cardsync_proto::card_event::Kind;
use cardsync_rules::{FieldStates, RemovalPolicy, plan_create, plan_update};
use cardsync_store::cards::{Card, CardRole, CardStatus};
use cardsync_store::tenants::Tenant;
use std::collections::BTreeSet;

/// What one command decided for one card; [`super::apply`] puts it in the batch and journals it.
#[derive(Debug)]
pub(super) struct Change {
    /// What happened.
    pub(super) outcome: Outcome,
    /// The card as it was (`None`: a new card, or a change the audit does not compare).
    pub(super) before: Option<Card>,
    /// The card as it is now.
    pub(super) after: Card,
    /// `after` is not stored yet (inserted rather than updated at the end of the batch).
    pub(super) new: bool,
    /// The card events that announce the change, in order.
    pub(super) events: Vec<Kind>,
    /// The fields whose value changed (`role` and `teams` included).
    pub(super) changed_fields: Vec<String>,
    /// The team memberships the card has now (`None`: left as they are).
    pub(super) teams: Option<BTreeSet<String>>,
}

/// What a command asks of the card once the tenant's removal policy is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// The user is present, enabled and in scope (upsert and reactivate alike).
    Upsert,
    /// A disabled account, or a removal under the deactivate policy.
    Deactivate,
    /// A removal under the delete policy.
    Delete,
}

/// The step of `action` under the tenant's `removal` policy.
pub(super) fn step(action: Action, removal: RemovalPolicy) -> Step {
    match (action, removal) {
        (Action::Upsert | Action::Reactivate, _) => Step::Upsert,
        (Action::Deactivate, _) | (Action::Delete, RemovalPolicy::Deactivate) => Step::Deactivate,
        (Action::Delete, RemovalPolicy::Delete) => Step::Delete,
    }
}

/// The version check (invariant 4): `Some` when the user's card (tombstones included) already
/// holds this version or a newer one, and nothing is to be written.
pub(super) fn already_applied(existing: Option<&Card>, command: &ValidCommand) -> Option<Outcome> {
    let card = existing?;
    if command.version == card.applied_version {
        Some(Outcome::Duplicate)
    } else if command.version < card.applied_version {
        Some(Outcome::Stale)
    } else {
        None
    }
}

/// Whether a live card found by the user's email may be linked to the user: not when it
/// belongs to another, still active directory user (that user's own change frees the email;
/// retries bound the wait), so one person's card is never handed to another.
pub(super) fn link_by_email(card: Card, email: &str) -> Result<Card, ApplyError> {
    if card.user_id.is_some() && card.status == CardStatus::Active {
        return Err(ApplyError::EmailHeld {
            email: email.to_owned(),
            card_id: card.card_id,
        });
    }
    Ok(card)
}

/// Upsert and reactivate: the user is present, enabled and in scope. `existing` is the user's
/// live card, or the card found to link (`linked`), or `None` for a new card; `teams_now` are
/// its memberships as the batch stands.
pub(super) fn upsert(
    tenant: &Tenant,
    command: &ValidCommand,
    existing: Option<Card>,
    linked: bool,
    teams_now: &BTreeSet<String>,
) -> Change {
    // The next state starts from the merged fields; the card as it was stays for the audit.
    let (mut card, before, mut changed_fields) = match existing {
        Some(card) => {
            let (next, changed) = merged(tenant, &card, command);
            (next, Some(card), changed)
        }
        None => {
            let mut card = Card::new(command.tenant_id);
            card.fields = plan_create(&tenant.rules, &command.incoming);
            let changed = card.fields.filled_names();
            (card, None, changed)
        }
    };
    card.user_id = Some(command.user_id.clone());
    if command.uid.is_some() {
        card.uid = command.uid.clone();
    }
    follow_fields(&mut card, command);
    let was_deactivated = card.status == CardStatus::Deactivated;
    card.status = CardStatus::Active;
    let role = role(tenant, command, card.role);
    if role != card.role {
        card.role = role;
        if before.is_some() {
            changed_fields.push("role".into());
        }
    }
    card.applied_version = command.version;
    let teams: BTreeSet<String> = command.team_ids.iter().cloned().collect();
    if teams != *teams_now {
        changed_fields.push("teams".into());
    }

    let created = before.is_none();
    let (outcome, mut events) = if created {
        (Outcome::Created, vec![Kind::Created])
    } else if linked {
        (Outcome::Linked, vec![Kind::Linked])
    } else if was_deactivated {
        (Outcome::Reactivated, vec![Kind::Reactivated])
    } else if !changed_fields.is_empty() {
        (Outcome::Updated, vec![Kind::Updated])
    } else {
        (Outcome::Unchanged, vec![])
    };
    if tenant.invites_enabled && matches!(outcome, Outcome::Created | Outcome::Linked) {
        events.push(Kind::Invited);
    }
    Change {
        outcome,
        before,
        after: card,
        new: created,
        events,
        changed_fields,
        teams: Some(teams),
    }
}

/// A disabled account (or a removal under the deactivate policy): the directory's values still
/// merge, and the card stays, deactivated.
pub(super) fn deactivate(
    tenant: &Tenant,
    command: &ValidCommand,
    existing: Option<Card>,
) -> Change {
    let card = match existing {
        None => return tombstone(command),
        Some(card) if card.status == CardStatus::Deleted => return bump_version(card, command),
        Some(card) => card,
    };
    let (mut after, changed_fields) = merged(tenant, &card, command);
    let before = card;
    follow_fields(&mut after, command);
    after.status = CardStatus::Deactivated;
    after.applied_version = command.version;
    let (outcome, events) = if before.status == CardStatus::Active {
        (Outcome::Deactivated, vec![Kind::Deactivated])
    } else if !changed_fields.is_empty() {
        (Outcome::Updated, vec![Kind::Updated])
    } else {
        (Outcome::Unchanged, vec![])
    };
    Change {
        outcome,
        before: Some(before),
        after,
        new: false,
        events,
        changed_fields,
        teams: None,
    }
}

/// A removal under the delete policy: the card becomes a tombstone without personal data (no
/// values, email, UID, photo, role or teams) that remembers the user's version.
pub(super) fn delete(command: &ValidCommand, existing: Option<Card>) -> Change {
    let card = match existing {
        None => return tombstone(command),
        Some(card) if card.status == CardStatus::Deleted => return bump_version(card, command),
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
    Change {
        outcome: Outcome::Deleted,
        before: Some(before),
        after,
        new: false,
        events: vec![Kind::Deleted],
        changed_fields: vec![],
        teams: Some(BTreeSet::new()),
    }
}

/// A removal for a user without a card: a new card without personal data that remembers the
/// user's version, so an older command that arrives later is still recognised as stale.
pub(super) fn tombstone(command: &ValidCommand) -> Change {
    let mut card = Card::new(command.tenant_id);
    card.user_id = Some(command.user_id.clone());
    card.status = CardStatus::Deleted;
    card.applied_version = command.version;
    Change {
        outcome: Outcome::Tombstoned,
        before: None,
        after: card,
        new: true,
        events: vec![],
        changed_fields: vec![],
        teams: None,
    }
}

/// A removal for a user whose card is already a tombstone: only the version moves.
pub(super) fn bump_version(mut card: Card, command: &ValidCommand) -> Change {
    card.applied_version = command.version;
    Change {
        outcome: Outcome::Unchanged,
        before: None,
        after: card,
        new: false,
        events: vec![],
        changed_fields: vec![],
        teams: None,
    }
}

/// The card's role after the command: roles follow the directory only when the tenant turns
/// admin roles on (a command without a role keeps the current one); otherwise everyone is a
/// member.
pub(super) fn role(tenant: &Tenant, command: &ValidCommand, current: CardRole) -> CardRole {
    if !tenant.admin_roles_enabled {
        return CardRole::Member;
    }
    command.role.unwrap_or(current)
}

/// `card` with the directory's values merged in under the tenant's rules, and the names of the
/// fields whose value changed.
fn merged(tenant: &Tenant, card: &Card, command: &ValidCommand) -> (Card, Vec<String>) {
    let plan = plan_update(&tenant.rules, &card.fields, &command.incoming);
    let changed = plan.changes.iter().map(|c| c.field.to_string()).collect();
    (card.with_fields(plan.states), changed)
}

/// The columns that follow the card's fields: the email (what links a card) is the merged
/// `email` value; the photo etag moves only when the command reports the photo, and the
/// card's image only when its photo is the directory's (a local photo keeps its image, and a
/// photo removed from the directory clears only a directory-managed one).
fn follow_fields(card: &mut Card, command: &ValidCommand) {
    card.email = card.fields.value("email").map(str::to_owned);
    if command.incoming.fields.contains_key("photo") {
        let reported = command.incoming.value("photo");
        card.photo_etag = reported.map(str::to_owned);
        if card.fields.value("photo") == reported {
            card.photo = reported.and(command.photo.clone());
        }
    }
}

#[cfg(test)]
mod tests;
