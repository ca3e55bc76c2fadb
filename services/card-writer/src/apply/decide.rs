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
mod tests {
    use super::*;
    use crate::command::{Origin, validate};
    use cardsync_proto::card_command::Action as WireAction;
    use cardsync_proto::{CardCommand, Cause, Envelope, FieldValue};
    use cardsync_rules::FieldRules;
    use cardsync_store::photos::PhotoImage;
    use time::OffsetDateTime;
    use uuid::Uuid;

    const TENANT: Uuid = Uuid::from_u128(0x6e5c_0b2a_1111_4222_8333_9444_5555_6666);

    fn tenant() -> Tenant {
        Tenant {
            id: TENANT,
            name: "Contoso".into(),
            rules: FieldRules::default(),
            invites_enabled: false,
            admin_roles_enabled: false,
            created_at: OffsetDateTime::UNIX_EPOCH,
            updated_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    /// A valid command for user `u1` at `version` with `fields`.
    fn command(action: WireAction, version: u64, fields: &[(&str, &str)]) -> ValidCommand {
        let wire = CardCommand {
            envelope: Some(Envelope::new(TENANT.to_string(), Cause::Notification)),
            action: action as i32,
            user_id: "u1".into(),
            uid: "uid-1".into(),
            version,
            fields: fields
                .iter()
                .map(|(name, value)| FieldValue {
                    name: (*name).into(),
                    value: Some((*value).into()),
                })
                .collect(),
            ..Default::default()
        };
        validate(wire, Origin::default()).expect("a valid command")
    }

    fn upsert_of(version: u64, fields: &[(&str, &str)]) -> ValidCommand {
        command(WireAction::Upsert, version, fields)
    }

    /// The card `command` makes for a user without one.
    fn created_by(command: &ValidCommand) -> Card {
        upsert(&tenant(), command, None, false, &BTreeSet::new()).after
    }

    fn none() -> BTreeSet<String> {
        BTreeSet::new()
    }

    #[test]
    fn a_command_at_the_applied_version_is_a_duplicate() {
        let card = created_by(&upsert_of(3, &[("name", "Ann")]));
        let again = upsert_of(3, &[("name", "Ann")]);
        assert_eq!(
            already_applied(Some(&card), &again),
            Some(Outcome::Duplicate)
        );
    }

    #[test]
    fn a_command_older_than_the_applied_version_is_stale() {
        let card = created_by(&upsert_of(3, &[("name", "Ann")]));
        let older = upsert_of(2, &[("name", "Annie")]);
        assert_eq!(already_applied(Some(&card), &older), Some(Outcome::Stale));
    }

    #[test]
    fn a_newer_command_and_a_user_without_a_card_go_ahead() {
        let card = created_by(&upsert_of(3, &[("name", "Ann")]));
        let newer = upsert_of(4, &[("name", "Ann Lee")]);
        assert_eq!(already_applied(Some(&card), &newer), None);
        assert_eq!(already_applied(None, &newer), None);
    }

    #[test]
    fn a_delete_follows_the_removal_policy_and_every_other_action_ignores_it() {
        for policy in [RemovalPolicy::Deactivate, RemovalPolicy::Delete] {
            assert_eq!(step(Action::Upsert, policy), Step::Upsert);
            assert_eq!(step(Action::Reactivate, policy), Step::Upsert);
            assert_eq!(step(Action::Deactivate, policy), Step::Deactivate);
        }
        assert_eq!(
            step(Action::Delete, RemovalPolicy::Deactivate),
            Step::Deactivate
        );
        assert_eq!(step(Action::Delete, RemovalPolicy::Delete), Step::Delete);
    }

    #[test]
    fn an_upsert_for_a_user_without_a_card_creates_one_naming_every_filled_field() {
        let command = upsert_of(1, &[("name", "Ann"), ("email", "Ann@Contoso.example")]);
        let change = upsert(&tenant(), &command, None, false, &none());
        assert_eq!(change.outcome, Outcome::Created);
        assert!(change.new);
        assert_eq!(change.before, None);
        assert_eq!(change.events, vec![Kind::Created]);
        assert_eq!(change.changed_fields, vec!["email", "name"]);
        let card = &change.after;
        assert_eq!(card.user_id.as_deref(), Some("u1"));
        assert_eq!(card.uid.as_deref(), Some("uid-1"));
        assert_eq!(card.email.as_deref(), Some("Ann@Contoso.example"));
        assert_eq!(card.status, CardStatus::Active);
        assert_eq!(card.applied_version, 1);
    }

    #[test]
    fn an_upsert_that_changes_a_value_updates_the_card_and_names_that_field() {
        let card = created_by(&upsert_of(1, &[("name", "Ann"), ("company", "Contoso")]));
        let command = upsert_of(2, &[("name", "Ann Lee"), ("company", "Contoso")]);
        let change = upsert(&tenant(), &command, Some(card.clone()), false, &none());
        assert_eq!(change.outcome, Outcome::Updated);
        assert!(!change.new);
        assert_eq!(change.events, vec![Kind::Updated]);
        assert_eq!(change.changed_fields, vec!["name"]);
        assert_eq!(change.after.card_id, card.card_id);
        assert_eq!(change.after.fields.value("name"), Some("Ann Lee"));
        assert_eq!(
            change.before,
            Some(card),
            "the card as it was, for the audit"
        );
    }

    #[test]
    fn an_upsert_that_changes_nothing_visible_only_moves_the_version() {
        let card = created_by(&upsert_of(1, &[("name", "Ann")]));
        let change = upsert(
            &tenant(),
            &upsert_of(5, &[("name", "Ann")]),
            Some(card),
            false,
            &none(),
        );
        assert_eq!(change.outcome, Outcome::Unchanged);
        assert!(change.events.is_empty());
        assert!(change.changed_fields.is_empty());
        assert_eq!(change.after.applied_version, 5);
    }

    #[test]
    fn a_found_card_is_linked_to_the_user_and_keeps_its_id() {
        let mut local = Card::new(TENANT);
        local.email = Some("ann@contoso.example".into());
        let command = upsert_of(1, &[("name", "Ann"), ("email", "ann@contoso.example")]);
        let change = upsert(&tenant(), &command, Some(local.clone()), true, &none());
        assert_eq!(change.outcome, Outcome::Linked);
        assert_eq!(change.events, vec![Kind::Linked]);
        assert!(!change.new, "a linked card is updated, not inserted");
        assert_eq!(change.after.card_id, local.card_id);
        assert_eq!(change.after.user_id.as_deref(), Some("u1"));
    }

    #[test]
    fn an_upsert_reactivates_a_deactivated_card() {
        let mut card = created_by(&upsert_of(1, &[("name", "Ann")]));
        card.status = CardStatus::Deactivated;
        let reactivate = command(WireAction::Reactivate, 2, &[("name", "Ann")]);
        let change = upsert(&tenant(), &reactivate, Some(card), false, &none());
        assert_eq!(change.outcome, Outcome::Reactivated);
        assert_eq!(change.events, vec![Kind::Reactivated]);
        assert_eq!(change.after.status, CardStatus::Active);
    }

    #[test]
    fn new_and_linked_cards_are_invited_when_the_tenant_invites() {
        let mut inviting = tenant();
        inviting.invites_enabled = true;
        let command = upsert_of(1, &[("name", "Ann")]);
        let created = upsert(&inviting, &command, None, false, &none());
        assert_eq!(created.events, vec![Kind::Created, Kind::Invited]);
        let linked = upsert(&inviting, &command, Some(Card::new(TENANT)), true, &none());
        assert_eq!(linked.events, vec![Kind::Linked, Kind::Invited]);
        let card = created_by(&command);
        let updated = upsert(
            &inviting,
            &upsert_of(2, &[("name", "Bo")]),
            Some(card),
            false,
            &none(),
        );
        assert_eq!(
            updated.events,
            vec![Kind::Updated],
            "members are invited once"
        );
    }

    #[test]
    fn new_memberships_are_an_update_that_names_teams() {
        let card = created_by(&upsert_of(1, &[("name", "Ann")]));
        let mut command = upsert_of(2, &[("name", "Ann")]);
        command.team_ids = vec!["g1".into(), "g2".into()];
        let change = upsert(&tenant(), &command, Some(card.clone()), false, &none());
        assert_eq!(change.outcome, Outcome::Updated);
        assert_eq!(change.changed_fields, vec!["teams"]);
        let wanted: BTreeSet<String> = ["g1".to_owned(), "g2".to_owned()].into();
        assert_eq!(change.teams.as_ref(), Some(&wanted));

        let same = upsert(&tenant(), &command, Some(card), false, &wanted);
        assert_eq!(same.outcome, Outcome::Unchanged, "the same teams again");
    }

    #[test]
    fn the_photo_etag_moves_only_when_the_command_reports_the_photo() {
        let mut card = created_by(&upsert_of(1, &[("name", "Ann")]));
        card.photo_etag = Some("etag-1".into());
        let silent = upsert(
            &tenant(),
            &upsert_of(2, &[("name", "Ann")]),
            Some(card.clone()),
            false,
            &none(),
        );
        assert_eq!(silent.after.photo_etag.as_deref(), Some("etag-1"));
        let reported = upsert_of(2, &[("name", "Ann"), ("photo", "etag-2")]);
        let change = upsert(&tenant(), &reported, Some(card), false, &none());
        assert_eq!(change.after.photo_etag.as_deref(), Some("etag-2"));
    }

    fn with_image(mut command: ValidCommand, sha: char) -> ValidCommand {
        command.photo = Some(PhotoImage {
            sha256: sha.to_string().repeat(64),
            content_type: "image/png".into(),
        });
        command
    }

    #[test]
    fn the_image_follows_a_directory_photo_and_a_removal_clears_only_a_directory_one() {
        let first = with_image(upsert_of(1, &[("name", "Ann"), ("photo", "etag-1")]), 'a');
        let card = created_by(&first);
        assert_eq!(card.photo, first.photo);
        let removed = command(WireAction::Upsert, 2, &[("name", "Ann")]);
        let mut removed = removed;
        removed.incoming.set_photo(None);
        let cleared = upsert(&tenant(), &removed, Some(card.clone()), false, &none());
        assert_eq!(
            cleared.after.photo, None,
            "a directory photo goes with the directory"
        );

        let mut local = card;
        local.fields = cardsync_rules::apply_local_edit(
            &tenant().rules,
            &local.fields,
            &"photo".into(),
            Some("local-1"),
        )
        .expect("a local photo");
        let kept = upsert(&tenant(), &removed, Some(local.clone()), false, &none());
        assert_eq!(kept.after.photo, local.photo, "a local photo stays");
        let newer = with_image(upsert_of(3, &[("name", "Ann"), ("photo", "etag-2")]), 'b');
        let kept = upsert(&tenant(), &newer, Some(local.clone()), false, &none());
        assert_eq!(
            kept.after.photo, local.photo,
            "a local photo wins over a new one"
        );
    }

    #[test]
    fn a_card_of_another_active_directory_user_is_never_linked_by_email() {
        let mut held = Card::new(TENANT);
        held.user_id = Some("someone-else".into());
        let refused = link_by_email(held.clone(), "ann@contoso.example");
        assert!(matches!(
            refused,
            Err(ApplyError::EmailHeld { card_id, .. }) if card_id == held.card_id
        ));
    }

    #[test]
    fn a_card_without_a_user_or_of_a_deactivated_user_is_linked_by_email() {
        let local = Card::new(TENANT);
        assert_eq!(
            link_by_email(local.clone(), "ann@contoso.example").ok(),
            Some(local)
        );
        let mut left = Card::new(TENANT);
        left.user_id = Some("someone-else".into());
        left.status = CardStatus::Deactivated;
        assert_eq!(
            link_by_email(left.clone(), "ann@contoso.example").ok(),
            Some(left)
        );
    }

    #[test]
    fn deactivating_an_active_card_keeps_it_with_the_values_merged() {
        let card = created_by(&upsert_of(1, &[("name", "Ann")]));
        let disable = command(WireAction::Deactivate, 2, &[("name", "Ann Lee")]);
        let change = deactivate(&tenant(), &disable, Some(card.clone()));
        assert_eq!(change.outcome, Outcome::Deactivated);
        assert_eq!(change.events, vec![Kind::Deactivated]);
        assert_eq!(change.changed_fields, vec!["name"]);
        assert_eq!(change.after.status, CardStatus::Deactivated);
        assert_eq!(change.after.card_id, card.card_id);
        assert_eq!(change.after.fields.value("name"), Some("Ann Lee"));
        assert_eq!(change.after.applied_version, 2);
        assert_eq!(change.teams, None, "memberships stay");
    }

    #[test]
    fn a_deactivated_card_is_only_updated_when_a_value_changed() {
        let mut card = created_by(&upsert_of(1, &[("name", "Ann")]));
        card.status = CardStatus::Deactivated;
        let same = command(WireAction::Deactivate, 2, &[("name", "Ann")]);
        let change = deactivate(&tenant(), &same, Some(card.clone()));
        assert_eq!(change.outcome, Outcome::Unchanged);
        assert!(change.events.is_empty());
        let renamed = command(WireAction::Deactivate, 3, &[("name", "Ann Lee")]);
        let change = deactivate(&tenant(), &renamed, Some(card));
        assert_eq!(change.outcome, Outcome::Updated);
        assert_eq!(change.events, vec![Kind::Updated]);
    }

    #[test]
    fn deleting_a_card_strips_its_personal_data_and_teams() {
        let mut card = created_by(&upsert_of(
            1,
            &[("name", "Ann"), ("email", "ann@contoso.example")],
        ));
        card.role = CardRole::TeamAdmin;
        card.photo_etag = Some("etag-1".into());
        let change = delete(&command(WireAction::Delete, 2, &[]), Some(card.clone()));
        assert_eq!(change.outcome, Outcome::Deleted);
        assert_eq!(change.events, vec![Kind::Deleted]);
        let after = &change.after;
        assert_eq!(after.card_id, card.card_id);
        assert_eq!(
            after.user_id.as_deref(),
            Some("u1"),
            "the version stays the user's"
        );
        assert_eq!(after.status, CardStatus::Deleted);
        assert!(after.fields.is_empty());
        assert_eq!(
            (&after.email, &after.uid, &after.photo_etag),
            (&None, &None, &None)
        );
        assert_eq!(after.role, CardRole::Member);
        assert_eq!(after.applied_version, 2);
        assert_eq!(change.teams, Some(BTreeSet::new()));
    }

    #[test]
    fn a_removal_for_a_user_without_a_card_leaves_a_tombstone() {
        let remove = command(WireAction::Delete, 4, &[]);
        for change in [deactivate(&tenant(), &remove, None), delete(&remove, None)] {
            assert_eq!(change.outcome, Outcome::Tombstoned);
            assert!(change.new);
            assert!(change.events.is_empty());
        }
    }

    #[test]
    fn a_tombstone_remembers_only_the_user_and_the_version() {
        let change = tombstone(&command(WireAction::Deactivate, 4, &[("name", "Ann")]));
        let card = &change.after;
        assert_eq!(card.user_id.as_deref(), Some("u1"));
        assert_eq!(card.status, CardStatus::Deleted);
        assert_eq!(card.applied_version, 4);
        assert!(card.fields.is_empty());
        assert_eq!((&card.email, &card.uid), (&None, &None));
    }

    #[test]
    fn a_removal_for_a_tombstone_only_moves_its_version() {
        let tombstoned = tombstone(&command(WireAction::Delete, 1, &[])).after;
        let remove = command(WireAction::Delete, 2, &[]);
        for change in [
            deactivate(&tenant(), &remove, Some(tombstoned.clone())),
            delete(&remove, Some(tombstoned.clone())),
            bump_version(tombstoned.clone(), &remove),
        ] {
            assert_eq!(change.outcome, Outcome::Unchanged);
            assert!(!change.new);
            assert!(change.events.is_empty());
            assert_eq!(change.after.card_id, tombstoned.card_id);
            assert_eq!(change.after.status, CardStatus::Deleted);
            assert_eq!(change.after.applied_version, 2);
        }
    }

    #[test]
    fn roles_follow_the_directory_only_when_the_tenant_turns_admin_roles_on() {
        let mut command = upsert_of(1, &[]);
        command.role = Some(CardRole::TeamAdmin);
        assert_eq!(
            role(&tenant(), &command, CardRole::Member),
            CardRole::Member
        );
        assert_eq!(
            role(&tenant(), &command, CardRole::SubteamAdmin),
            CardRole::Member,
            "without admin roles everyone is a member"
        );
        let mut with_roles = tenant();
        with_roles.admin_roles_enabled = true;
        assert_eq!(
            role(&with_roles, &command, CardRole::Member),
            CardRole::TeamAdmin
        );
    }

    #[test]
    fn a_command_without_a_role_keeps_the_current_one() {
        let mut with_roles = tenant();
        with_roles.admin_roles_enabled = true;
        let command = upsert_of(1, &[]);
        assert_eq!(
            role(&with_roles, &command, CardRole::SubteamAdmin),
            CardRole::SubteamAdmin
        );
    }

    #[test]
    fn a_new_role_is_an_update_that_names_role() {
        let mut with_roles = tenant();
        with_roles.admin_roles_enabled = true;
        let card = created_by(&upsert_of(1, &[("name", "Ann")]));
        let mut command = upsert_of(2, &[("name", "Ann")]);
        command.role = Some(CardRole::TeamAdmin);
        let change = upsert(&with_roles, &command, Some(card), false, &none());
        assert_eq!(change.outcome, Outcome::Updated);
        assert_eq!(change.changed_fields, vec!["role"]);
        assert_eq!(change.after.role, CardRole::TeamAdmin);
    }
}
