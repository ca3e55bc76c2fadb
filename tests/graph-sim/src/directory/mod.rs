//! One tenant's directory: users, groups, memberships, directory roles, photos, and the change log delta reads.
//!
//! Every change takes the next sequence number. Each object remembers, per property, the sequence of its last
//! change, and its kind's change log records every change (`seq → id`, earlier entries marked superseded). A delta
//! token is a position in that log, so an incremental round is a range scan of the log as it stood at the round's
//! snapshot (graph-facts §6; see [`log`]).

mod log;
mod membership;
mod object;
mod rendition;
mod schema;

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};

pub use log::ChangeLog;
pub use membership::{KNOWN_ROLES, Role};
pub use object::{DirObject, LifeState, Membership, Photo, make_photo};
pub use rendition::{HD_SIZES, RENDITION_CONTENT_TYPE, parse_size, render};
pub use schema::{
    GROUP_PROPS, Kind, ON_PREM_SLOTS, PropDef, PropType, Select, USER_PROPS, prop_index,
};

use object::apply;
use schema::validate;

/// What kind of change notification a directory change produces (graph-facts §0.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeType {
    /// Create, update, soft delete, restore, membership change.
    Updated,
    /// Permanent deletion only.
    Deleted,
}

impl ChangeType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Updated => "updated",
            ChangeType::Deleted => "deleted",
        }
    }
}

/// A membership added to or removed from a group.
#[derive(Debug, Clone)]
pub struct MemberDelta {
    /// The member id.
    pub id: String,
    /// The member kind.
    pub kind: Kind,
    /// `true` when added, `false` when removed.
    pub added: bool,
}

/// One object changed by a mutation.
#[derive(Debug, Clone)]
pub struct DirEvent {
    /// User or group.
    pub kind: Kind,
    /// Object id.
    pub id: String,
    /// The change type notifications will carry.
    pub change: ChangeType,
    /// Membership changes (groups only).
    pub members: Vec<MemberDelta>,
    /// The sequence number of the change.
    pub seq: u64,
}

/// The result of a mutation: its sequence number and the objects it touched.
#[derive(Debug, Clone, Default)]
pub struct Mutation {
    /// Sequence number after the mutation.
    pub seq: u64,
    /// Changed objects, for change notifications.
    pub events: Vec<DirEvent>,
}

/// Why a directory mutation or query was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DirectoryError {
    /// No live object with that id.
    #[error(
        "Resource '{0}' does not exist or one of its queried reference-property objects are not present."
    )]
    NotFound(String),
    /// The id is already used.
    #[error("Another object with the same value for property id already exists: '{0}'.")]
    AlreadyExists(String),
    /// Unknown property name.
    #[error("Could not find a property named '{0}' on type '{1}'.")]
    UnknownProperty(String, &'static str),
    /// Wrong JSON type.
    #[error("Invalid value for property '{0}': expected {1}.")]
    InvalidValue(String, &'static str),
    /// Over the documented maximum length.
    #[error(
        "Invalid value specified for property '{0}' of resource '{1}': longer than {2} characters."
    )]
    TooLong(String, &'static str, usize),
    /// The property can't be cleared.
    #[error("Property '{0}' can't be cleared.")]
    Required(String),
    /// The property is set by the directory (`createdDateTime`).
    #[error("Property '{0}' is read-only and cannot be set.")]
    ReadOnly(String),
    /// Restore of an object that isn't soft-deleted.
    #[error("Object '{0}' is not in deleted items.")]
    NotDeleted(String),
    /// The role template is unknown and has never been activated.
    #[error(
        "Resource 'roleTemplateId={0}' does not exist or one of its queried reference-property objects are not present."
    )]
    RoleNotFound(String),
    /// A group can't contain itself.
    #[error("A group can't be a member of itself: '{0}'.")]
    SelfMembership(String),
}

/// One tenant's directory state.
#[derive(Debug, Default)]
pub struct Directory {
    seq: u64,
    users: BTreeMap<String, DirObject>,
    groups: BTreeMap<String, DirObject>,
    user_log: ChangeLog,
    group_log: ChangeLog,
    roles: BTreeMap<String, Role>,
    upn_index: HashMap<String, String>,
    active_users: usize,
    /// The sim clock (unix seconds) as of the mutation being applied.
    now: i64,
}

impl Directory {
    /// The latest sequence number (the position a `$deltatoken=latest` round starts from).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Number of live users (decides the tenant's throttling size).
    pub fn active_users(&self) -> usize {
        self.active_users
    }

    /// All objects of a kind, including tombstones, ordered by id.
    pub fn objects(&self, kind: Kind) -> &BTreeMap<String, DirObject> {
        match kind {
            Kind::User => &self.users,
            Kind::Group => &self.groups,
        }
    }

    fn objects_mut(&mut self, kind: Kind) -> &mut BTreeMap<String, DirObject> {
        match kind {
            Kind::User => &mut self.users,
            Kind::Group => &mut self.groups,
        }
    }

    /// The change log of a kind.
    pub fn log(&self, kind: Kind) -> &ChangeLog {
        match kind {
            Kind::User => &self.user_log,
            Kind::Group => &self.group_log,
        }
    }

    /// Sets the sim clock (unix seconds) the next mutations happen at.
    pub fn set_now(&mut self, now: i64) {
        self.now = now;
    }

    /// Forgets superseded change-log entries superseded before `before` (sim clock, unix seconds): no round that
    /// began before then can still be read.
    pub fn prune_superseded(&mut self, before: i64) {
        self.user_log.prune(before);
        self.group_log.prune(before);
    }

    /// A live object by id (users also by `userPrincipalName`).
    pub fn get_active(&self, kind: Kind, key: &str) -> Option<&DirObject> {
        let by_id = self.objects(kind).get(key);
        let found = match (by_id, kind) {
            (Some(o), _) => Some(o),
            (None, Kind::User) => self
                .upn_index
                .get(&key.to_lowercase())
                .and_then(|id| self.users.get(id)),
            (None, Kind::Group) => None,
        };
        found.filter(|o| o.state == LifeState::Active)
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn relog(&mut self, kind: Kind, id: &str, seq: u64) {
        let previous = self
            .objects(kind)
            .get(id)
            .map(|o| o.log_seq)
            .filter(|s| *s > 0);
        let log = match kind {
            Kind::User => &mut self.user_log,
            Kind::Group => &mut self.group_log,
        };
        log.record(id, seq, previous, self.now);
        if let Some(o) = self.objects_mut(kind).get_mut(id) {
            o.log_seq = seq;
        }
    }

    fn event(kind: Kind, id: &str, change: ChangeType, seq: u64) -> DirEvent {
        DirEvent {
            kind,
            id: id.to_owned(),
            change,
            members: Vec::new(),
            seq,
        }
    }

    /// Creates a user or group; `id` defaults to a new GUID.
    pub fn create(
        &mut self,
        kind: Kind,
        id: Option<String>,
        props: &Map<String, Value>,
    ) -> Result<(String, Mutation), DirectoryError> {
        let writes = validate(kind, props)?;
        let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if self.objects(kind).contains_key(&id) {
            return Err(DirectoryError::AlreadyExists(id));
        }
        let required: Vec<&str> = kind
            .schema()
            .iter()
            .filter(|p| p.required)
            .map(|p| p.name)
            .collect();
        if let Some(missing) = required
            .iter()
            .find(|r| !props.get(**r).is_some_and(Value::is_string))
        {
            return Err(DirectoryError::InvalidValue(
                (*missing).to_owned(),
                "a string (required on create)",
            ));
        }
        let seq = self.next_seq();
        let mut obj = DirObject::new(id.clone(), kind);
        obj.full_since = seq;
        apply(&mut obj, writes, seq);
        obj.stamp_creation(self.now, seq);
        if kind == Kind::User {
            self.index_upn(&obj);
            self.active_users += 1;
        }
        self.objects_mut(kind).insert(id.clone(), obj);
        self.relog(kind, &id, seq);
        Ok((
            id.clone(),
            Mutation {
                seq,
                events: vec![Self::event(kind, &id, ChangeType::Updated, seq)],
            },
        ))
    }

    fn index_upn(&mut self, obj: &DirObject) {
        if let Some(upn) = obj.get_str("userPrincipalName") {
            self.upn_index.insert(upn.to_lowercase(), obj.id.clone());
        }
    }

    /// Updates properties of a live object (`null` clears). A write of the current value is no change.
    pub fn update(
        &mut self,
        kind: Kind,
        id: &str,
        props: &Map<String, Value>,
    ) -> Result<Mutation, DirectoryError> {
        let writes = validate(kind, props)?;
        let mut probe = self.live(kind, id)?.clone();
        let old_upn = probe.get_str("userPrincipalName").map(str::to_lowercase);
        if !apply(&mut probe, writes, self.seq + 1) {
            return Ok(Mutation {
                seq: self.seq,
                events: Vec::new(),
            });
        }
        let seq = self.next_seq();
        if kind == Kind::User {
            if let Some(old) = old_upn {
                self.upn_index.remove(&old);
            }
            self.index_upn(&probe);
        }
        self.objects_mut(kind).insert(id.to_owned(), probe);
        self.relog(kind, id, seq);
        Ok(Mutation {
            seq,
            events: vec![Self::event(kind, id, ChangeType::Updated, seq)],
        })
    }

    fn live(&self, kind: Kind, id: &str) -> Result<&DirObject, DirectoryError> {
        self.objects(kind)
            .get(id)
            .filter(|o| o.state == LifeState::Active)
            .ok_or_else(|| DirectoryError::NotFound(id.to_owned()))
    }

    /// Moves a live object to deleted items (notifications say `updated`; delta says `@removed: changed`).
    pub fn soft_delete(&mut self, kind: Kind, id: &str) -> Result<Mutation, DirectoryError> {
        self.live(kind, id)?;
        let seq = self.next_seq();
        self.set_state(kind, id, LifeState::SoftDeleted, seq);
        Ok(Mutation {
            seq,
            events: vec![Self::event(kind, id, ChangeType::Updated, seq)],
        })
    }

    /// Restores a soft-deleted object (delta returns it in full again).
    pub fn restore(&mut self, kind: Kind, id: &str) -> Result<Mutation, DirectoryError> {
        let state = self.objects(kind).get(id).map(|o| o.state);
        if state != Some(LifeState::SoftDeleted) {
            return Err(DirectoryError::NotDeleted(id.to_owned()));
        }
        let seq = self.next_seq();
        self.set_state(kind, id, LifeState::Active, seq);
        if let Some(o) = self.objects_mut(kind).get_mut(id) {
            o.full_since = seq;
        }
        Ok(Mutation {
            seq,
            events: vec![Self::event(kind, id, ChangeType::Updated, seq)],
        })
    }

    fn set_state(&mut self, kind: Kind, id: &str, state: LifeState, seq: u64) {
        let mut was_active = false;
        let now = self.now;
        if let Some(o) = self.objects_mut(kind).get_mut(id) {
            was_active = o.state == LifeState::Active;
            o.state = state;
            o.state_seq = seq;
            o.state_at = now;
        }
        if kind == Kind::User {
            let now_active = state == LifeState::Active;
            match (was_active, now_active) {
                (true, false) => self.active_users -= 1,
                (false, true) => self.active_users += 1,
                _ => {}
            }
        }
        self.relog(kind, id, seq);
    }

    /// Deletes permanently (live or soft-deleted); removes the object's memberships and role assignments.
    pub fn purge(&mut self, kind: Kind, id: &str) -> Result<Mutation, DirectoryError> {
        let obj = self
            .objects(kind)
            .get(id)
            .filter(|o| o.state != LifeState::Purged);
        let Some(obj) = obj else {
            return Err(DirectoryError::NotFound(id.to_owned()));
        };
        let upn = obj.get_str("userPrincipalName").map(str::to_lowercase);
        let seq = self.next_seq();
        self.set_state(kind, id, LifeState::Purged, seq);
        if let Some(upn) = upn {
            self.upn_index.remove(&upn);
        }
        let mut events = vec![Self::event(kind, id, ChangeType::Deleted, seq)];
        let containing: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| {
                g.state != LifeState::Purged && g.members.get(id).is_some_and(|m| m.present)
            })
            .map(|(gid, _)| gid.clone())
            .collect();
        // Each group's lost membership is a change of its own, with its own sequence: the change log holds one
        // object per sequence, so groups sharing one would hide each other from delta.
        for gid in containing {
            let seq = self.next_seq();
            if let Some(g) = self.groups.get_mut(&gid)
                && let Some(m) = g.members.get_mut(id)
            {
                m.present = false;
                m.seq = seq;
            }
            self.relog(Kind::Group, &gid, seq);
            let mut ev = Self::event(Kind::Group, &gid, ChangeType::Updated, seq);
            ev.members.push(MemberDelta {
                id: id.to_owned(),
                kind,
                added: false,
            });
            events.push(ev);
        }
        for role in self.roles.values_mut() {
            role.members.remove(id);
        }
        Ok(Mutation {
            seq: self.seq,
            events,
        })
    }

    /// Sets or clears a user's photo. Photo changes are not tracked by delta and send no notification
    /// (undocumented in Graph; graph-facts §6 "Not tracked").
    pub fn set_photo(&mut self, user: &str, photo: Option<Photo>) -> Result<(), DirectoryError> {
        self.live(Kind::User, user)?;
        if let Some(u) = self.users.get_mut(user) {
            u.photo = photo;
        }
        Ok(())
    }

    /// The whole directory as JSON (for convergence checks).
    pub fn snapshot(&self) -> Value {
        let users: Vec<Value> = self
            .users
            .values()
            .filter(|u| u.state != LifeState::Purged)
            .map(DirObject::snapshot_json)
            .collect();
        let groups: Vec<Value> = self
            .groups
            .values()
            .filter(|g| g.state != LifeState::Purged)
            .map(DirObject::snapshot_json)
            .collect();
        let roles: Map<String, Value> = self
            .roles
            .values()
            .map(|r| {
                (
                    r.template_id.clone(),
                    json!({"id": r.object_id, "displayName": r.display_name, "members": r.members}),
                )
            })
            .collect();
        json!({"sequence": self.seq, "users": users, "groups": groups, "directoryRoles": roles})
    }
}

#[cfg(test)]
mod tests {
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
    fn a_round_reads_each_object_once_at_its_latest_change_up_to_its_snapshot() {
        let mut dir = Directory::default();
        let a = user(&mut dir, "a");
        let b = user(&mut dir, "b");
        dir.update(Kind::User, &a, &props(json!({"jobTitle": "x"})))
            .expect("update");
        let now: Vec<(u64, &str)> = dir
            .log(Kind::User)
            .as_of(std::ops::Bound::Unbounded, 3)
            .collect();
        assert_eq!(now, vec![(2, b.as_str()), (3, a.as_str())]);
        let before: Vec<(u64, &str)> = dir
            .log(Kind::User)
            .as_of(std::ops::Bound::Unbounded, 2)
            .collect();
        assert_eq!(before, vec![(1, a.as_str()), (2, b.as_str())]);
    }

    #[test]
    fn writing_the_same_value_is_not_a_change() {
        let mut dir = Directory::default();
        let a = user(&mut dir, "a");
        let m = dir
            .update(Kind::User, &a, &props(json!({"displayName": "a"})))
            .expect("update");
        assert!(m.events.is_empty());
        assert_eq!(dir.seq(), 1);
    }

    #[test]
    fn display_name_cannot_be_cleared_and_lengths_are_enforced() {
        let mut dir = Directory::default();
        let a = user(&mut dir, "a");
        assert_eq!(
            dir.update(Kind::User, &a, &props(json!({"displayName": null})))
                .map(|m| m.seq),
            Err(DirectoryError::Required("displayName".into()))
        );
        let long = "x".repeat(17);
        assert!(matches!(
            dir.update(Kind::User, &a, &props(json!({"employeeId": long}))),
            Err(DirectoryError::TooLong(..))
        ));
    }

    #[test]
    fn purging_a_user_removes_it_from_groups_and_reports_the_group_change() {
        let mut dir = Directory::default();
        let a = user(&mut dir, "a");
        let (g, _) = dir
            .create(Kind::Group, None, &props(json!({"displayName": "g"})))
            .expect("group");
        dir.add_member(&g, &a).expect("add");
        let m = dir.purge(Kind::User, &a).expect("purge");
        assert_eq!(m.events.len(), 2);
        assert_eq!(m.events[0].change, ChangeType::Deleted);
        assert_eq!(m.events[1].id, g);
        assert!(!m.events[1].members[0].added);
        assert!(dir.transitive_members(&g).expect("group").is_empty());
    }

    #[test]
    fn unknown_select_properties_are_rejected() {
        assert!(Select::parse(Kind::User, Some("displayName,nope")).is_err());
        let sel =
            Select::parse(Kind::User, Some("id,mail,extension_abc_costCenter")).expect("select");
        assert_eq!(sel.props.len(), 1);
        assert_eq!(sel.extensions, vec!["extension_abc_costCenter".to_owned()]);
    }
}
