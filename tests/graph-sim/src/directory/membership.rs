//! Group memberships and directory-role assignments: adding and removing members (each a change delta reports on
//! the group), transitive membership, and role activation and assignment (which delta never reports).

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

use super::{
    ChangeType, DirObject, Directory, DirectoryError, Kind, LifeState, MemberDelta, Membership,
    Mutation,
};

/// Built-in role template ids the simulator knows by name (graph-facts §7).
pub const KNOWN_ROLES: &[(&str, &str)] = &[
    (
        "62e90394-69f5-4237-9190-012177145e10",
        "Global Administrator",
    ),
    (
        "fdd7a751-b60b-444a-984c-02652fe8fa1c",
        "Groups Administrator",
    ),
    ("fe930be7-5e62-47db-91af-98c3a49a38b1", "User Administrator"),
];

/// A directory role (activated once it has had a member).
#[derive(Debug, Clone)]
pub struct Role {
    /// The role object's id in this tenant.
    pub object_id: String,
    /// The built-in template id.
    pub template_id: String,
    /// e.g. "Global Administrator".
    pub display_name: String,
    /// Member user ids.
    pub members: BTreeSet<String>,
}

impl Directory {
    /// Adds a user or group to a group.
    pub fn add_member(&mut self, group: &str, member: &str) -> Result<Mutation, DirectoryError> {
        self.change_member(group, member, true)
    }

    /// Removes a member from a group.
    pub fn remove_member(&mut self, group: &str, member: &str) -> Result<Mutation, DirectoryError> {
        self.change_member(group, member, false)
    }

    fn change_member(
        &mut self,
        group: &str,
        member: &str,
        add: bool,
    ) -> Result<Mutation, DirectoryError> {
        if group == member {
            return Err(DirectoryError::SelfMembership(group.to_owned()));
        }
        self.live(Kind::Group, group)?;
        let kind = if self
            .users
            .get(member)
            .is_some_and(|u| u.state != LifeState::Purged)
        {
            Kind::User
        } else if self
            .groups
            .get(member)
            .is_some_and(|g| g.state == LifeState::Active)
        {
            Kind::Group
        } else {
            return Err(DirectoryError::NotFound(member.to_owned()));
        };
        let present = self
            .groups
            .get(group)
            .and_then(|g| g.members.get(member))
            .is_some_and(|m| m.present);
        if present == add {
            return if add {
                Err(DirectoryError::AlreadyExists(member.to_owned()))
            } else {
                Err(DirectoryError::NotFound(member.to_owned()))
            };
        }
        let seq = self.next_seq();
        if let Some(g) = self.groups.get_mut(group) {
            g.members.insert(
                member.to_owned(),
                Membership {
                    kind,
                    present: add,
                    seq,
                },
            );
        }
        self.relog(Kind::Group, group, seq);
        let mut ev = Self::event(Kind::Group, group, ChangeType::Updated, seq);
        ev.members.push(MemberDelta {
            id: member.to_owned(),
            kind,
            added: add,
        });
        Ok(Mutation {
            seq,
            events: vec![ev],
        })
    }

    /// Live member ids of a group, expanded through nested groups (users and groups, each once).
    pub fn transitive_members(&self, group: &str) -> Result<Vec<&DirObject>, DirectoryError> {
        self.live(Kind::Group, group)?;
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        let mut stack = vec![group.to_owned()];
        while let Some(gid) = stack.pop() {
            let Some(g) = self.groups.get(&gid) else {
                continue;
            };
            for (mid, m) in g.members.iter().filter(|(_, m)| m.present) {
                if !seen.insert(mid.clone()) {
                    continue;
                }
                if let Some(obj) = self
                    .objects(m.kind)
                    .get(mid)
                    .filter(|o| o.state == LifeState::Active)
                {
                    out.push(obj);
                    if m.kind == Kind::Group {
                        stack.push(mid.clone());
                    }
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Assigns a role (activating it on first use) to a live user.
    pub fn assign_role(&mut self, template_id: &str, user: &str) -> Result<(), DirectoryError> {
        self.live(Kind::User, user)?;
        let role = self
            .roles
            .entry(template_id.to_owned())
            .or_insert_with(|| Role {
                object_id: role_object_id(template_id),
                template_id: template_id.to_owned(),
                display_name: KNOWN_ROLES
                    .iter()
                    .find(|(t, _)| *t == template_id)
                    .map_or("Custom Role", |(_, n)| n)
                    .to_owned(),
                members: BTreeSet::new(),
            });
        role.members.insert(user.to_owned());
        Ok(())
    }

    /// Removes a role assignment (the role stays activated).
    pub fn unassign_role(&mut self, template_id: &str, user: &str) -> Result<(), DirectoryError> {
        let role = self
            .roles
            .get_mut(template_id)
            .ok_or_else(|| DirectoryError::RoleNotFound(template_id.to_owned()))?;
        if !role.members.remove(user) {
            return Err(DirectoryError::NotFound(user.to_owned()));
        }
        Ok(())
    }

    /// An activated role by template id or role object id.
    pub fn role(&self, key: &str) -> Result<&Role, DirectoryError> {
        self.roles
            .get(key)
            .or_else(|| self.roles.values().find(|r| r.object_id == key))
            .ok_or_else(|| DirectoryError::RoleNotFound(key.to_owned()))
    }
}

/// A stable per-template role object id (distinct from the template id, as in Entra).
fn role_object_id(template_id: &str) -> String {
    let digest = Sha256::digest(format!("directoryRole:{template_id}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value, json};

    use super::*;

    fn props(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object literal")
    }

    fn user(dir: &mut Directory, name: &str) -> String {
        let p =
            props(json!({"displayName": name, "userPrincipalName": format!("{name}@contoso.com")}));
        dir.create(Kind::User, None, &p).expect("create").0
    }

    #[test]
    fn transitive_members_flatten_nested_groups_without_duplicates() {
        let mut dir = Directory::default();
        let a = user(&mut dir, "a");
        let b = user(&mut dir, "b");
        let g = |dir: &mut Directory, n: &str| {
            dir.create(Kind::Group, None, &props(json!({"displayName": n})))
                .expect("g")
                .0
        };
        let outer = g(&mut dir, "outer");
        let inner = g(&mut dir, "inner");
        dir.add_member(&outer, &inner).expect("nest");
        dir.add_member(&outer, &a).expect("a");
        dir.add_member(&inner, &a).expect("a again");
        dir.add_member(&inner, &b).expect("b");
        let ids: BTreeSet<String> = dir
            .transitive_members(&outer)
            .expect("t")
            .iter()
            .map(|o| o.id.clone())
            .collect();
        assert_eq!(ids, BTreeSet::from([a, b, inner]));
    }
}
