use super::*;
use crate::Expression;
use crate::rules::{CustomFieldRule, StandardField};

fn incoming(values: &[(&str, Option<&str>)]) -> MappedCard {
    MappedCard {
        object_id: "u1".into(),
        uid: "u1".into(),
        link_email: None,
        fields: values
            .iter()
            .map(|(name, value)| (FieldName::from(*name), value.map(str::to_owned)))
            .collect(),
    }
}

fn rules_with(field: StandardField, sync: bool, overwrite: bool, locked: bool) -> FieldRules {
    let mut rules = FieldRules::default();
    if field == StandardField::Photo {
        rules.fields.photo.sync = sync;
        rules.fields.photo.overwrite = overwrite;
        rules.fields.photo.locked = locked;
    } else {
        let rule = match field {
            StandardField::Name => &mut rules.fields.name,
            StandardField::Email => &mut rules.fields.email,
            StandardField::Company => &mut rules.fields.company,
            StandardField::Phone => &mut rules.fields.phone,
            StandardField::Location => &mut rules.fields.location,
            StandardField::Department => &mut rules.fields.department,
            _ => &mut rules.fields.job_title,
        };
        rule.sync = sync;
        rule.overwrite = overwrite;
        rule.locked = locked;
    }
    rules
}

fn title(value: Option<&str>) -> MappedCard {
    incoming(&[("job_title", value)])
}

/// A card created from "Marketing Manager", then edited locally to `edit`.
fn edited(rules: &FieldRules, edit: Option<&str>) -> FieldStates {
    let created = plan_create(rules, &title(Some("Marketing Manager")));
    apply_local_edit(rules, &created, &"job_title".into(), edit).unwrap()
}

#[test]
fn create_sets_synced_fields_from_the_directory() {
    let rules = FieldRules::default();
    let states = plan_create(
        &rules,
        &incoming(&[("name", Some(" Ann ")), ("phone", None)]),
    );
    assert_eq!(
        states.get("name"),
        Some(&FieldState {
            value: Some("Ann".into()),
            source: ValueSource::Directory,
            last_directory: Some("Ann".into())
        })
    );
    assert_eq!(states.value("phone"), None);
    assert!(
        states.get("photo").is_none(),
        "unreported fields stay absent"
    );
}

#[test]
fn create_leaves_fields_with_sync_off_empty() {
    let rules = rules_with(StandardField::JobTitle, false, false, false);
    let states = plan_create(&rules, &title(Some("Engineer")));
    let state = states.get("job_title").unwrap();
    assert_eq!(state.value, None);
    assert_eq!(state.last_directory.as_deref(), Some("Engineer"));
}

#[test]
fn sync_off_and_overwrite_off_never_writes_the_field() {
    let rules = rules_with(StandardField::JobTitle, false, false, false);
    let created = plan_create(&rules, &title(Some("Engineer")));
    let plan = plan_update(&rules, &created, &title(Some("Lead")));
    assert!(plan.is_unchanged());
    assert_eq!(plan.states.value("job_title"), None);
    assert_eq!(
        plan.states
            .get("job_title")
            .unwrap()
            .last_directory
            .as_deref(),
        Some("Lead")
    );
}

#[test]
fn sync_off_with_overwrite_on_fills_on_later_syncs() {
    let rules = rules_with(StandardField::JobTitle, false, true, false);
    let created = plan_create(&rules, &title(Some("Engineer")));
    assert_eq!(created.value("job_title"), None);
    let plan = plan_update(&rules, &created, &title(Some("Engineer")));
    assert_eq!(plan.states.value("job_title"), Some("Engineer"));
}

#[test]
fn overwrite_on_follows_directory_changes() {
    let rules = FieldRules::default();
    let created = plan_create(&rules, &title(Some("Marketing Manager")));
    let plan = plan_update(&rules, &created, &title(Some("Director of Marketing")));
    assert_eq!(
        plan.states.value("job_title"),
        Some("Director of Marketing")
    );
    assert_eq!(
        plan.changes,
        vec![FieldChange {
            field: "job_title".into(),
            before: Some("Marketing Manager".into()),
            after: Some("Director of Marketing".into()),
            reason: ChangeReason::FollowedDirectory
        }]
    );
}

#[test]
fn overwrite_on_replaces_a_local_edit_even_without_a_directory_change() {
    let rules = FieldRules::default();
    let states = edited(&rules, Some("Chief Vibes Officer"));
    let plan = plan_update(&rules, &states, &title(Some("Marketing Manager")));
    assert_eq!(plan.states.value("job_title"), Some("Marketing Manager"));
    assert_eq!(
        plan.states.get("job_title").unwrap().source,
        ValueSource::Directory
    );
    assert_eq!(plan.changes[0].reason, ChangeReason::OverwroteLocalEdit);
}

#[test]
fn overwrite_off_keeps_a_local_edit() {
    let rules = rules_with(StandardField::JobTitle, true, false, false);
    let states = edited(&rules, Some("VP of Sales"));
    let plan = plan_update(&rules, &states, &title(Some("Director of Sales")));
    assert!(plan.is_unchanged());
    assert_eq!(plan.states.value("job_title"), Some("VP of Sales"));
    assert_eq!(plan.kept_local, vec![FieldName::from("job_title")]);
    assert_eq!(
        plan.states
            .get("job_title")
            .unwrap()
            .last_directory
            .as_deref(),
        Some("Director of Sales")
    );
}

#[test]
fn overwrite_off_still_follows_the_directory_without_a_local_edit() {
    let rules = rules_with(StandardField::JobTitle, true, false, false);
    let created = plan_create(&rules, &title(Some("Marketing Manager")));
    let plan = plan_update(&rules, &created, &title(Some("Director of Marketing")));
    assert_eq!(
        plan.states.value("job_title"),
        Some("Director of Marketing")
    );
    assert_eq!(plan.changes[0].reason, ChangeReason::FollowedDirectory);
    let cleared = plan_update(&rules, &plan.states, &title(None));
    assert_eq!(cleared.states.value("job_title"), None);
}

#[test]
fn overwrite_off_fills_an_empty_card_value() {
    let rules = rules_with(StandardField::JobTitle, true, false, false);
    let states = edited(&rules, Some("  "));
    assert_eq!(states.value("job_title"), None);
    let plan = plan_update(&rules, &states, &title(Some("Engineer")));
    assert_eq!(plan.states.value("job_title"), Some("Engineer"));
    assert_eq!(
        plan.states.get("job_title").unwrap().source,
        ValueSource::Directory
    );
    assert_eq!(plan.changes[0].reason, ChangeReason::FilledEmpty);
}

#[test]
fn a_linked_card_keeps_its_values_where_overwrite_is_off() {
    let mut rules = FieldRules::default();
    rules.fields.phone.overwrite = false;
    let existing = FieldStates::from_local_values([
        ("name", Some("Jess")),
        ("phone", Some("+1 555 0199")),
        ("job_title", None),
    ]);
    let plan = plan_update(
        &rules,
        &existing,
        &incoming(&[
            ("name", Some("Jessica Swift")),
            ("phone", Some("+1 555 0100")),
            ("job_title", Some("Engineer")),
        ]),
    );
    assert_eq!(plan.states.value("name"), Some("Jessica Swift"));
    assert_eq!(plan.states.value("phone"), Some("+1 555 0199"));
    assert_eq!(plan.states.value("job_title"), Some("Engineer"));
}

#[test]
fn locked_fields_refuse_local_edits_and_always_follow_the_directory() {
    let rules = rules_with(StandardField::JobTitle, true, true, true);
    let created = plan_create(&rules, &title(Some("Engineer")));
    let err = apply_local_edit(&rules, &created, &"job_title".into(), Some("CEO")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "field job_title is managed by the directory and cannot be edited"
    );
    // A local edit made before the field was locked is replaced on the next sync.
    let unlocked = FieldRules::default();
    let states = apply_local_edit(&unlocked, &created, &"job_title".into(), Some("CEO")).unwrap();
    let plan = plan_update(&rules, &states, &title(Some("Engineer")));
    assert_eq!(plan.states.value("job_title"), Some("Engineer"));
    assert_eq!(plan.changes[0].reason, ChangeReason::Locked);
}

#[test]
fn locked_implies_sync_and_overwrite_even_when_they_are_off() {
    let rules = rules_with(StandardField::JobTitle, false, false, true);
    let created = plan_create(&rules, &title(Some("Engineer")));
    assert_eq!(created.value("job_title"), Some("Engineer"));
    let local = FieldStates::from_local_values([("job_title", Some("CEO"))]);
    let plan = plan_update(&rules, &local, &title(Some("Engineer")));
    assert_eq!(plan.states.value("job_title"), Some("Engineer"));
}

#[test]
fn local_only_fields_are_editable_and_never_touched() {
    let rules = FieldRules::default();
    let states =
        apply_local_edit(&rules, &FieldStates::new(), &"nickname".into(), Some("JJ")).unwrap();
    let plan = plan_update(&rules, &states, &incoming(&[("nickname", Some("x"))]));
    assert_eq!(plan.states.value("nickname"), Some("JJ"));
    assert!(plan.is_unchanged());
}

#[test]
fn the_photo_keeps_a_local_photo_by_default_but_follows_the_directory_otherwise() {
    let rules = FieldRules::default();
    let created = plan_create(&rules, &incoming(&[("photo", Some("etag-1"))]));
    let plan = plan_update(&rules, &created, &incoming(&[("photo", Some("etag-2"))]));
    assert_eq!(plan.states.value("photo"), Some("etag-2"));
    let local = apply_local_edit(&rules, &plan.states, &"photo".into(), Some("local-1")).unwrap();
    let plan = plan_update(&rules, &local, &incoming(&[("photo", Some("etag-3"))]));
    assert_eq!(plan.states.value("photo"), Some("local-1"));
    let unknown = plan_update(&rules, &plan.states, &incoming(&[]));
    assert_eq!(unknown.states, plan.states);
}

#[test]
fn custom_fields_follow_their_own_flags() {
    let mut rules = FieldRules::default();
    let mut rule = CustomFieldRule::new(Expression::parse("extensionAttribute1").unwrap());
    rule.overwrite = false;
    rules.custom_fields.insert("badge".into(), rule);
    let states = FieldStates::from_local_values([("badge", Some("B-1"))]);
    let plan = plan_update(&rules, &states, &incoming(&[("badge", Some("B-2"))]));
    assert_eq!(plan.states.value("badge"), Some("B-1"));
    assert_eq!(plan.kept_local, vec![FieldName::from("badge")]);
}

#[test]
fn revert_takes_the_last_directory_value_again() {
    let rules = rules_with(StandardField::JobTitle, true, false, false);
    let states = edited(&rules, Some("VP"));
    let plan = plan_update(&rules, &states, &title(Some("Director")));
    let reverted = revert_to_directory(&plan.states, &"job_title".into());
    assert_eq!(reverted.value("job_title"), Some("Director"));
    assert_eq!(
        reverted.get("job_title").unwrap().source,
        ValueSource::Directory
    );
}

#[test]
fn applying_the_same_values_twice_changes_nothing_the_second_time() {
    let rules = rules_with(StandardField::JobTitle, true, false, false);
    let states = edited(&rules, None);
    let first = plan_update(&rules, &states, &title(Some("Engineer")));
    let second = plan_update(&rules, &first.states, &title(Some("Engineer")));
    assert!(second.is_unchanged());
    assert_eq!(second.states, first.states);
}

#[test]
fn changes_hold_only_the_fields_whose_state_differs() {
    let rules = rules_with(StandardField::JobTitle, true, false, false);
    let before = plan_create(
        &rules,
        &incoming(&[("name", Some("Ann")), ("job_title", Some("Engineer"))]),
    );
    // Same states: nothing on either side.
    let (was, is) = FieldStates::changes(&before, &before);
    assert!(was.is_empty() && is.is_empty());

    // A new value, a directory value kept out by a local edit, a field added, one gone.
    let mut after = apply_local_edit(&rules, &before, &"job_title".into(), Some("Lead")).unwrap();
    after = plan_update(&rules, &after, &title(Some("Architect"))).states;
    after.insert(
        "phone".into(),
        FieldState {
            value: Some("+1 555".into()),
            source: ValueSource::Directory,
            last_directory: Some("+1 555".into()),
        },
    );
    let mut gone = after.clone();
    gone.0.remove("name");
    let (was, is) = FieldStates::changes(&before, &gone);
    assert_eq!(
        serde_json::to_value(&was).unwrap(),
        serde_json::json!({
            "job_title": {"value": "Engineer", "source": "directory", "last_directory": "Engineer"},
            "name": {"value": "Ann", "source": "directory", "last_directory": "Ann"},
        })
    );
    assert_eq!(
        serde_json::to_value(&is).unwrap(),
        serde_json::json!({
            "job_title": {"value": "Lead", "source": "local", "last_directory": "Architect"},
            "phone": {"value": "+1 555", "source": "directory", "last_directory": "+1 555"},
        })
    );
}

#[test]
fn states_serialise_as_an_object_of_fields() {
    let states = plan_create(&FieldRules::default(), &incoming(&[("name", Some("Ann"))]));
    assert_eq!(
        serde_json::to_value(&states).unwrap(),
        serde_json::json!({"name": {"value": "Ann", "source": "directory", "last_directory": "Ann"}})
    );
}
