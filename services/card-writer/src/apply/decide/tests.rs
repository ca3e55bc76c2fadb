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
