//! Groups and roles: the groups delta of group-scoped tenants (members merged across pages,
//! nested groups kept so the scope resolves locally, names and descriptions copied onto their
//! teams), a group's transitive members for a per-group sync, and the admin-role pass that
//! moves users between team roles.

use super::{Round, RoundError, Rounds};
use crate::lease::Collection;
use cardsync_graph::PageLink;
use cardsync_graph::role_templates::{GLOBAL_ADMINISTRATOR, GROUPS_ADMINISTRATOR};
use cardsync_store::directory::{self, GroupRow, UserRow};
use cardsync_store::teams;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use time::OffsetDateTime;

impl Rounds {
    /// Follows the groups delta (group-scoped tenants only) and stores every group with its
    /// members, so the scope's nested membership is resolved locally. In the same transaction
    /// the teams take their groups' current names and descriptions: a rename reaches every card
    /// of the team without a command, since cards name their teams by group id.
    pub(super) async fn groups_pass(
        &self,
        round: &mut Round<'_>,
        full: bool,
    ) -> Result<(), RoundError> {
        let stored = self
            .stored_link(round.tenant, Collection::Groups, full)
            .await?;
        let start = format!(
            "{}?$select=displayName,description,members",
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
            let Some(page) = round
                .delta_page(&self.graph, &url, false, !restarted)
                .await?
            else {
                restarted = true;
                groups.clear();
                url = start.clone();
                continue;
            };
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
        round.fence(&mut tx).await?;
        directory::save_groups(&mut tx, round.tenant, &rows).await?;
        let renamed = teams::follow_groups(&mut tx, round.tenant).await?;
        tx.commit().await?;
        if renamed > 0 {
            tracing::info!(tenant = %round.tenant, teams = renamed, "teams follow their groups");
        }
        round.check()?;
        // Stored once the round's plan is settled (`rail.rs`).
        round.links.push((Collection::Groups, link.clone()));
        Ok(())
    }

    /// Reads who holds the two admin roles and emits a command for every user whose role moved.
    /// Delta never reports role assignments, so, like photos, they are read on scheduled rounds
    /// (and when a round met new users), two light requests per round, and only for tenants
    /// that map roles to cards at all.
    pub(super) async fn roles_pass(
        &self,
        round: &mut Round<'_>,
        due: bool,
    ) -> Result<(), RoundError> {
        if !round.admin_roles || !due {
            return Ok(());
        }
        let team_admins = round
            .read(
                self.graph
                    .role_member_ids(&round.connection, GLOBAL_ADMINISTRATOR),
            )
            .await?;
        let subteam_admins = round
            .read(
                self.graph
                    .role_member_ids(&round.connection, GROUPS_ADMINISTRATOR),
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

    /// Every user that is a member of `group`, directly or through nested groups, read from
    /// Graph under the round's lease (a per-group sync).
    pub(super) async fn group_members(
        &self,
        round: &Round<'_>,
        group: &str,
    ) -> Result<Vec<String>, RoundError> {
        round
            .read(self.graph.transitive_user_ids(&round.connection, group))
            .await
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
        description: None,
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
    // Absent: unchanged (a members-only slice, or `return=minimal`); `null`: cleared.
    match item.get("description") {
        Some(Value::String(description)) => group.description = Some(description.clone()),
        Some(Value::Null) => group.description = None,
        _ => {}
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
            &json!({"id": "g", "displayName": "Sales", "description": "EMEA sales", "members@delta": [{"@odata.type": "#microsoft.graph.user", "id": "a"}]}),
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
        assert_eq!(
            g.description.as_deref(),
            Some("EMEA sales"),
            "a slice keeps it"
        );
        assert_eq!(g.members.get("inner").map(String::as_str), Some("group"));
        assert!(!g.members.contains_key("a"));
        merge_group(
            &mut groups,
            &json!({"id": "g", "@removed": {"reason": "deleted"}}),
        );
        assert!(!groups["g"].present);
    }

    #[test]
    fn a_rename_alone_replaces_the_name_and_a_null_description_clears_it() {
        let mut groups = HashMap::new();
        merge_group(
            &mut groups,
            &json!({"id": "g", "displayName": "Sales", "description": "old", "members@delta": [{"@odata.type": "#microsoft.graph.user", "id": "a"}]}),
        );
        merge_group(
            &mut groups,
            &json!({"id": "g", "displayName": "Sales & Marketing"}),
        );
        assert_eq!(
            groups["g"].display_name.as_deref(),
            Some("Sales & Marketing")
        );
        assert_eq!(groups["g"].description.as_deref(), Some("old"));
        assert!(groups["g"].members.contains_key("a"), "members unchanged");
        merge_group(&mut groups, &json!({"id": "g", "description": null}));
        assert_eq!(groups["g"].description, None);
    }
}
