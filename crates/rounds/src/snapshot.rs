//! The pure heart of a delta round: merging one delta item into the snapshot, deciding scope
//! and teams, and turning a snapshot row into the card command it calls for. No I/O, so every
//! rule is unit-tested.

use cardsync_proto as proto;
use cardsync_rules::{DeltaEffect, DirectoryUser, FieldRules, UserFilter, map_user};
use cardsync_store::directory::{AdminRole, GroupRow, Presence, UserRow};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use time::OffsetDateTime;

/// Which users the tenant synchronises, resolved to user ids and their teams.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Scope {
    /// Every user; no teams.
    #[default]
    Everyone,
    /// Members (nested included) of these groups; each member's teams are the scope groups
    /// that contain it.
    Groups {
        /// User id → scope groups containing it (sorted).
        members: HashMap<String, Vec<String>>,
        /// Scope group id → display name.
        names: BTreeMap<String, String>,
    },
}

impl Scope {
    /// Resolves `scope_groups` over the snapshot's groups: transitive membership, with cycles
    /// (which Entra forbids, but a snapshot mid-update might show) cut.
    pub fn resolve(scope_groups: &[String], groups: &[GroupRow]) -> Self {
        let by_id: HashMap<&str, &GroupRow> = groups
            .iter()
            .filter(|g| g.present)
            .map(|g| (g.group_id.as_str(), g))
            .collect();
        let mut members: HashMap<String, Vec<String>> = HashMap::new();
        let mut names = BTreeMap::new();
        for root in scope_groups {
            if let Some(group) = by_id.get(root.as_str()) {
                names.insert(root.clone(), group.display_name.clone().unwrap_or_default());
            }
            let mut seen: HashSet<&str> = HashSet::new();
            let mut stack = vec![root.as_str()];
            while let Some(id) = stack.pop() {
                if !seen.insert(id) {
                    continue;
                }
                let Some(group) = by_id.get(id) else { continue };
                for (member, kind) in &group.members {
                    match kind.as_str() {
                        "group" => stack.push(member.as_str()),
                        "user" => {
                            let teams = members.entry(member.clone()).or_default();
                            if !teams.contains(root) {
                                teams.push(root.clone());
                                teams.sort();
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        Scope::Groups { members, names }
    }

    /// Whether the user is in scope, and its teams.
    pub fn place(&self, user_id: &str) -> (bool, Vec<String>) {
        match self {
            Scope::Everyone => (true, Vec::new()),
            Scope::Groups { members, .. } => match members.get(user_id) {
                Some(teams) => (true, teams.clone()),
                None => (false, Vec::new()),
            },
        }
    }

    /// A team's name, when known.
    pub fn team_name(&self, group_id: &str) -> Option<&str> {
        match self {
            Scope::Everyone => None,
            Scope::Groups { names, .. } => names.get(group_id).map(String::as_str),
        }
    }
}

/// Merges one users-delta item into the stored row; `Some(row)` when anything changed.
///
/// `force` marks the row changed even when Graph reports nothing new (per-user sync).
pub fn merge_user(
    existing: Option<&UserRow>,
    item: &Value,
    scope: &Scope,
    filter: Option<&UserFilter>,
    now: OffsetDateTime,
    force: bool,
) -> Option<UserRow> {
    let id = item.get("id").and_then(Value::as_str)?;
    if let Some(reason) = item.pointer("/@removed/reason").and_then(Value::as_str) {
        // A user we never stored needs no card action when it disappears.
        let existing = existing?;
        let presence = if reason == "changed" {
            Presence::SoftDeleted
        } else {
            Presence::Deleted
        };
        if existing.presence == presence && !force {
            return None;
        }
        return Some(UserRow {
            presence,
            observed_at: now,
            ..existing.clone()
        });
    }

    let (user, data_changed) = match existing {
        Some(row) => {
            let mut user = DirectoryUser::from_graph(&row.data).ok()?;
            let effect = user.apply_delta(item).ok()?;
            (user, effect == DeltaEffect::Changed)
        }
        None => (DirectoryUser::from_graph(item).ok()?, true),
    };
    let (in_scope, team_ids) = place(scope, filter, id, &user);
    let data = user.to_json();
    let changed = force
        || data_changed
        || existing.is_none_or(|row| {
            row.presence != Presence::Present
                || row.in_scope != in_scope
                || row.team_ids != team_ids
        });
    if !changed {
        return None;
    }
    Some(UserRow {
        user_id: id.to_owned(),
        data,
        presence: Presence::Present,
        in_scope,
        team_ids,
        photo_etag: existing.and_then(|row| row.photo_etag.clone()),
        photo: existing.and_then(|row| row.photo.clone()),
        version: existing.map_or(0, |row| row.version),
        emitted_version: existing.map_or(0, |row| row.emitted_version),
        emitted_action: existing.and_then(|row| row.emitted_action.clone()),
        observed_at: now,
        admin_role: existing.and_then(|row| row.admin_role),
    })
}

/// Where a user stands: in the scope's groups (or everyone) and admitted by the filter, with
/// the scope groups that contain it as teams; out of scope, no teams.
fn place(
    scope: &Scope,
    filter: Option<&UserFilter>,
    id: &str,
    user: &DirectoryUser,
) -> (bool, Vec<String>) {
    let (in_scope, team_ids) = scope.place(id);
    if in_scope && filter.is_some_and(|filter| !filter.admits(user)) {
        (false, Vec::new())
    } else {
        (in_scope, team_ids)
    }
}

/// Re-places a stored row after the scope or the filter changed; `Some(row)` when its scope or
/// teams moved. A removed user stays as it is (out of the directory, scope does not matter).
pub fn rescope(
    row: &UserRow,
    scope: &Scope,
    filter: Option<&UserFilter>,
    now: OffsetDateTime,
) -> Option<UserRow> {
    let (in_scope, team_ids) = match filter {
        None => scope.place(&row.user_id),
        Some(_) => {
            let user = DirectoryUser::from_graph(&row.data).ok()?;
            place(scope, filter, &row.user_id, &user)
        }
    };
    (row.in_scope != in_scope || row.team_ids != team_ids).then(|| UserRow {
        in_scope,
        team_ids,
        observed_at: now,
        ..row.clone()
    })
}

/// The action a row calls for, before looking at what the card already had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Create or update the card (and reactivate it if it was deactivated).
    Upsert,
    /// The account is disabled: deactivate the card.
    Deactivate,
    /// Gone from the directory or out of scope: the tenant's removal policy applies.
    Remove,
}

impl Action {
    /// Stable name stored as `emitted_action`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Upsert => "upsert",
            Action::Deactivate => "deactivate",
            Action::Remove => "delete",
        }
    }
}

/// What the row calls for.
pub fn action_for(row: &UserRow) -> Action {
    if row.presence != Presence::Present || !row.in_scope {
        return Action::Remove;
    }
    let enabled = row.data.get("accountEnabled").and_then(Value::as_bool);
    if enabled == Some(false) {
        Action::Deactivate
    } else {
        Action::Upsert
    }
}

/// Why a row produced no command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Nothing to tell the card-writer (e.g. removing a card that was never created).
    Nothing,
    /// The rules cannot map the user (e.g. the UID property is empty); counted and logged.
    Unmappable(String),
}

/// Builds the card command for a stored row at `version`.
pub fn command_for(
    tenant: &str,
    row: &UserRow,
    version: i64,
    rules: &FieldRules,
    scope: &Scope,
    cause: proto::Cause,
) -> Result<(proto::CardCommand, Action), Skip> {
    let action = action_for(row);
    let never_carded = matches!(row.emitted_action.as_deref(), None | Some("delete"));
    if action != Action::Upsert && never_carded {
        return Err(Skip::Nothing);
    }
    let user = DirectoryUser::from_graph(&row.data).map_err(|e| Skip::Unmappable(e.to_string()))?;
    // Removal and deactivation still carry the mapped fields when the user maps, so the card
    // holds the last directory state; a user that no longer maps is removed by object id.
    let mapped = map_user(rules, &user);
    let (uid, mut fields): (String, Vec<proto::FieldValue>) = match (&mapped, action) {
        (Ok(card), _) => (
            card.uid.clone(),
            card.fields
                .iter()
                .map(|(name, value)| proto::FieldValue {
                    name: name.as_str().to_owned(),
                    value: value.clone(),
                })
                .collect(),
        ),
        (Err(error), Action::Upsert) => return Err(Skip::Unmappable(error.to_string())),
        (Err(_), _) => (String::new(), Vec::new()),
    };
    // A checked photo travels as the `photo` field (empty = the user has none); an unchecked
    // one is left out so the card keeps whatever photo it has.
    if let Some(etag) = &row.photo_etag {
        fields.push(proto::FieldValue {
            name: "photo".into(),
            value: (!etag.is_empty()).then(|| etag.clone()),
        });
    }
    let teams = row
        .team_ids
        .iter()
        .map(|id| proto::Team {
            group_id: id.clone(),
            name: scope.team_name(id).unwrap_or_default().to_owned(),
        })
        .collect();
    let command = proto::CardCommand {
        envelope: Some(proto::Envelope::new(tenant, cause)),
        action: match action {
            Action::Upsert => proto::card_command::Action::Upsert,
            Action::Deactivate => proto::card_command::Action::Deactivate,
            Action::Remove => proto::card_command::Action::Delete,
        } as i32,
        user_id: row.user_id.clone(),
        uid,
        version: u64::try_from(version).unwrap_or(0),
        fields,
        team_ids: row.team_ids.clone(),
        photo_etag: row.photo_etag.clone().unwrap_or_default(),
        photo_sha256: row
            .photo
            .as_ref()
            .map(|p| p.sha256.clone())
            .unwrap_or_default(),
        photo_content_type: row
            .photo
            .as_ref()
            .map(|p| p.content_type.clone())
            .unwrap_or_default(),
        observed_at: Some(proto::timestamp(row.observed_at)),
        // Set by the emit pass for the rounds notifications asked for.
        notified_at: None,
        // Set by the emit pass when the round belongs to a run.
        run_id: String::new(),
        teams,
        // Unread roles leave the card's role alone.
        role: match row.admin_role {
            None => proto::Role::Unspecified,
            Some(AdminRole::Member) => proto::Role::Member,
            Some(AdminRole::TeamAdmin) => proto::Role::TeamAdmin,
            Some(AdminRole::SubteamAdmin) => proto::Role::SubteamAdmin,
        } as i32,
    };
    Ok((command, action))
}

/// Present users of the snapshot that a full enumeration did not return: deleted while we
/// were not looking (an expired token or a lost Redis hides their `@removed`).
pub fn vanished(present: Vec<String>, seen: &BTreeSet<String>) -> Vec<String> {
    present
        .into_iter()
        .filter(|id| !seen.contains(id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH
    }

    fn stored(item: Value) -> UserRow {
        let mut row = merge_user(None, &item, &Scope::Everyone, None, now(), false).unwrap();
        row.version = 5;
        row.emitted_version = 5;
        row.emitted_action = Some("upsert".into());
        row
    }

    #[test]
    fn a_new_user_is_a_change_and_a_replay_is_not() {
        let item = json!({"id": "u1", "displayName": "Ada", "accountEnabled": true});
        let row = stored(item.clone());
        assert_eq!(row.data["displayName"], "Ada");
        assert_eq!(
            merge_user(Some(&row), &item, &Scope::Everyone, None, now(), false),
            None
        );
        assert!(
            merge_user(Some(&row), &item, &Scope::Everyone, None, now(), true).is_some(),
            "forced"
        );
    }

    #[test]
    fn partial_updates_merge_and_nulls_clear() {
        let row = stored(
            json!({"id": "u1", "displayName": "Ada", "jobTitle": "Engineer", "mobilePhone": "1"}),
        );
        let merged = merge_user(
            Some(&row),
            &json!({"id": "u1", "jobTitle": "CTO", "mobilePhone": null}),
            &Scope::Everyone,
            None,
            now(),
            false,
        )
        .unwrap();
        assert_eq!(merged.data["displayName"], "Ada");
        assert_eq!(merged.data["jobTitle"], "CTO");
        assert!(merged.data.get("mobilePhone").is_none_or(Value::is_null));
        assert_eq!(
            (merged.version, merged.emitted_version),
            (5, 5),
            "versions are assigned when saved"
        );
    }

    #[test]
    fn removals_distinguish_soft_and_permanent_deletion_and_restores_return() {
        let row = stored(json!({"id": "u1", "displayName": "Ada"}));
        let soft = merge_user(
            Some(&row),
            &json!({"id": "u1", "@removed": {"reason": "changed"}}),
            &Scope::Everyone,
            None,
            now(),
            false,
        )
        .unwrap();
        assert_eq!(soft.presence, Presence::SoftDeleted);
        assert_eq!(action_for(&soft), Action::Remove);
        let hard = merge_user(
            Some(&soft),
            &json!({"id": "u1", "@removed": {"reason": "deleted"}}),
            &Scope::Everyone,
            None,
            now(),
            false,
        )
        .unwrap();
        assert_eq!(hard.presence, Presence::Deleted);
        let restored = merge_user(
            Some(&soft),
            &json!({"id": "u1", "displayName": "Ada"}),
            &Scope::Everyone,
            None,
            now(),
            false,
        )
        .unwrap();
        assert_eq!(restored.presence, Presence::Present);
        assert_eq!(action_for(&restored), Action::Upsert);
        assert_eq!(
            merge_user(
                None,
                &json!({"id": "x", "@removed": {"reason": "deleted"}}),
                &Scope::Everyone,
                None,
                now(),
                false
            ),
            None
        );
    }

    #[test]
    fn a_disabled_account_deactivates_and_reenabling_upserts() {
        let row = stored(json!({"id": "u1", "displayName": "Ada", "accountEnabled": true}));
        let disabled = merge_user(
            Some(&row),
            &json!({"id": "u1", "accountEnabled": false}),
            &Scope::Everyone,
            None,
            now(),
            false,
        )
        .unwrap();
        assert_eq!(action_for(&disabled), Action::Deactivate);
        let enabled = merge_user(
            Some(&disabled),
            &json!({"id": "u1", "accountEnabled": true}),
            &Scope::Everyone,
            None,
            now(),
            false,
        )
        .unwrap();
        assert_eq!(action_for(&enabled), Action::Upsert);
    }

    fn group(id: &str, name: &str, members: &[(&str, &str)]) -> GroupRow {
        GroupRow {
            group_id: id.into(),
            display_name: Some(name.into()),
            description: None,
            members: members
                .iter()
                .map(|(m, k)| (m.to_string(), k.to_string()))
                .collect(),
            present: true,
        }
    }

    #[test]
    fn nested_groups_count_and_cycles_end() {
        let groups = vec![
            group("sales", "Sales", &[("alice", "user"), ("emea", "group")]),
            group("emea", "EMEA", &[("bob", "user"), ("sales", "group")]),
            group("other", "Other", &[("carol", "user")]),
        ];
        let scope = Scope::resolve(&["sales".into()], &groups);
        assert_eq!(scope.place("alice"), (true, vec!["sales".into()]));
        assert_eq!(scope.place("bob"), (true, vec!["sales".into()]));
        assert_eq!(scope.place("carol"), (false, vec![]));
        assert_eq!(scope.team_name("sales"), Some("Sales"));
    }

    #[test]
    fn leaving_the_scope_removes_and_entering_it_upserts() {
        let groups = vec![group("sales", "Sales", &[("alice", "user")])];
        let row = stored(json!({"id": "alice", "displayName": "Alice"}));
        let scope = Scope::resolve(&["sales".into()], &groups);
        let placed = rescope(&row, &scope, None, now()).unwrap();
        assert_eq!(placed.team_ids, vec!["sales".to_string()]);
        let emptied = Scope::resolve(&["sales".into()], &[group("sales", "Sales", &[])]);
        let out = rescope(&placed, &emptied, None, now()).unwrap();
        assert!(!out.in_scope);
        assert_eq!(action_for(&out), Action::Remove);
        assert_eq!(rescope(&out, &emptied, None, now()), None);
    }

    #[test]
    fn a_filter_takes_a_user_out_of_scope_with_its_teams_and_rescoping_follows_a_change() {
        let groups = vec![group("sales", "Sales", &[("u1", "user")])];
        let scope = Scope::resolve(&["sales".into()], &groups);
        let guests: UserFilter = serde_json::from_value(json!({"exclude_guests": true})).unwrap();
        let item = json!({"id": "u1", "displayName": "Ada", "userType": "Guest"});
        let row = merge_user(None, &item, &scope, Some(&guests), now(), false).unwrap();
        assert!(!row.in_scope);
        assert!(row.team_ids.is_empty());
        let back = rescope(&row, &scope, None, now()).expect("moved back in");
        assert!(back.in_scope);
        assert_eq!(back.team_ids, ["sales"]);
        assert_eq!(rescope(&row, &scope, Some(&guests), now()), None);
    }

    #[test]
    fn commands_carry_mapped_fields_version_and_teams() {
        let rules = FieldRules::default();
        let groups = vec![group("sales", "Sales", &[("u1", "user")])];
        let scope = Scope::resolve(&["sales".into()], &groups);
        let mut row = merge_user(
            None,
            &json!({"id": "u1", "displayName": "Ada", "userPrincipalName": "ada@x.test"}),
            &scope,
            None,
            now(),
            false,
        )
        .unwrap();
        row.photo_etag = Some("e1".into());
        let (command, action) =
            command_for("t1", &row, 42, &rules, &scope, proto::Cause::Notification).unwrap();
        assert_eq!(action, Action::Upsert);
        assert_eq!(command.version, 42);
        assert_eq!(command.uid, "u1");
        assert_eq!(command.photo_etag, "e1");
        assert_eq!(command.teams[0].name, "Sales");
        let email = command.fields.iter().find(|f| f.name == "email").unwrap();
        assert_eq!(
            email.value.as_deref(),
            Some("ada@x.test"),
            "no mail falls back to the UPN"
        );
    }

    #[test]
    fn removing_a_card_that_never_existed_is_nothing() {
        let rules = FieldRules::default();
        let mut row = merge_user(
            None,
            &json!({"id": "u1", "displayName": "Ada", "accountEnabled": false}),
            &Scope::Everyone,
            None,
            now(),
            false,
        )
        .unwrap();
        assert_eq!(
            command_for(
                "t",
                &row,
                1,
                &rules,
                &Scope::Everyone,
                proto::Cause::Notification
            ),
            Err(Skip::Nothing)
        );
        row.emitted_action = Some("upsert".into());
        let (command, action) = command_for(
            "t",
            &row,
            2,
            &rules,
            &Scope::Everyone,
            proto::Cause::Notification,
        )
        .unwrap();
        assert_eq!(action, Action::Deactivate);
        assert_eq!(
            command.action,
            proto::card_command::Action::Deactivate as i32
        );
    }

    #[test]
    fn a_full_enumeration_finds_vanished_users() {
        let present = vec!["a".to_string(), "b".to_string()];
        let seen: BTreeSet<String> = ["a".to_string()].into_iter().collect();
        assert_eq!(vanished(present, &seen), ["b"]);
    }
}
