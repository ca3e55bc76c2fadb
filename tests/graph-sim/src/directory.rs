//! One tenant's directory: users, groups, memberships, directory roles, photos, and the change log delta reads.
//!
//! Every change takes the next sequence number. Each object remembers, per property, the sequence of its last
//! change, and sits in its kind's change log (`seq → id`) exactly once, at its latest change. A delta token is a
//! position in that log, so an incremental round is a range scan of the log (graph-facts §6).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// The two kinds of directory object the simulator tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A `microsoft.graph.user`.
    User,
    /// A `microsoft.graph.group`.
    Group,
}

impl Kind {
    /// The property table of this kind.
    pub fn schema(self) -> &'static [PropDef] {
        match self {
            Kind::User => USER_PROPS,
            Kind::Group => GROUP_PROPS,
        }
    }

    /// The OData type name used in `@odata.type` annotations (`#microsoft.graph.user`).
    pub fn odata_type(self) -> &'static str {
        match self {
            Kind::User => "#microsoft.graph.user",
            Kind::Group => "#microsoft.graph.group",
        }
    }

    /// The entity-set name (`users`, `groups`).
    pub fn set_name(self) -> &'static str {
        match self {
            Kind::User => "users",
            Kind::Group => "groups",
        }
    }
}

/// JSON shape of a property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropType {
    /// A string.
    Str,
    /// A collection of strings.
    StrList,
    /// A boolean.
    Bool,
    /// `onPremisesExtensionAttributes`: an object with `extensionAttribute1..15`.
    OnPremExt,
}

/// One property of a directory object.
#[derive(Debug)]
pub struct PropDef {
    /// Graph's property name.
    pub name: &'static str,
    /// Returned without `$select`.
    pub default: bool,
    /// The JSON shape.
    pub ty: PropType,
    /// Maximum length in characters (graph-facts §7), if Graph documents one.
    pub max_len: Option<usize>,
    /// A `null` is refused (`displayName` can't be cleared).
    pub required: bool,
}

const fn prop(name: &'static str, default: bool, ty: PropType, max_len: Option<usize>) -> PropDef {
    PropDef {
        name,
        default,
        ty,
        max_len,
        required: false,
    }
}

/// User properties: everything in graph-facts §7 plus the extras cardsync maps.
pub const USER_PROPS: &[PropDef] = &[
    prop("accountEnabled", false, PropType::Bool, None),
    prop("businessPhones", true, PropType::StrList, None),
    prop("city", false, PropType::Str, Some(128)),
    prop("companyName", false, PropType::Str, Some(64)),
    prop("country", false, PropType::Str, Some(128)),
    prop("department", false, PropType::Str, Some(64)),
    PropDef {
        name: "displayName",
        default: true,
        ty: PropType::Str,
        max_len: Some(256),
        required: true,
    },
    prop("employeeId", false, PropType::Str, Some(16)),
    prop("employeeType", false, PropType::Str, None),
    prop("givenName", true, PropType::Str, Some(64)),
    prop("jobTitle", true, PropType::Str, Some(128)),
    prop("mail", true, PropType::Str, None),
    prop("mobilePhone", true, PropType::Str, Some(64)),
    prop("officeLocation", true, PropType::Str, None),
    prop(
        "onPremisesExtensionAttributes",
        false,
        PropType::OnPremExt,
        None,
    ),
    prop("postalCode", false, PropType::Str, Some(40)),
    prop("preferredLanguage", true, PropType::Str, None),
    prop("state", false, PropType::Str, Some(128)),
    prop("streetAddress", false, PropType::Str, Some(1024)),
    prop("surname", true, PropType::Str, Some(64)),
    prop("usageLocation", false, PropType::Str, None),
    PropDef {
        name: "userPrincipalName",
        default: true,
        ty: PropType::Str,
        max_len: None,
        required: true,
    },
];

/// Group properties (all returned by default).
pub const GROUP_PROPS: &[PropDef] = &[
    prop("description", true, PropType::Str, None),
    PropDef {
        name: "displayName",
        default: true,
        ty: PropType::Str,
        max_len: Some(256),
        required: true,
    },
    prop("groupTypes", true, PropType::StrList, None),
    prop("mail", true, PropType::Str, None),
    prop("mailEnabled", true, PropType::Bool, None),
    prop("mailNickname", true, PropType::Str, None),
    prop("securityEnabled", true, PropType::Bool, None),
    prop("visibility", true, PropType::Str, None),
];

/// Number of `onPremisesExtensionAttributes` slots.
pub const ON_PREM_SLOTS: usize = 15;

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

/// Whether an object is live, in deleted items, or gone for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum LifeState {
    /// Visible in the directory.
    Active,
    /// Soft-deleted (restorable); delta reports `@removed: changed`.
    SoftDeleted,
    /// Permanently deleted; a tombstone kept so delta can report `@removed: deleted`.
    Purged,
}

/// One membership edge, kept after removal as a tombstone so delta can report it.
#[derive(Debug, Clone)]
pub struct Membership {
    /// The member's kind.
    pub kind: Kind,
    /// `false` once removed.
    pub present: bool,
    /// Sequence of the last add or remove.
    pub seq: u64,
}

/// A profile photo.
#[derive(Debug, Clone)]
pub struct Photo {
    /// The image bytes.
    pub bytes: Vec<u8>,
    /// e.g. `image/jpeg`.
    pub content_type: String,
    /// Pixel width reported in the metadata.
    pub width: u32,
    /// Pixel height reported in the metadata.
    pub height: u32,
    /// The `@odata.mediaEtag` value (quoted, as Graph sends it).
    pub etag: String,
}

/// A user or group.
#[derive(Debug, Clone)]
pub struct DirObject {
    /// Object id (a GUID string).
    pub id: String,
    /// The kind.
    pub kind: Kind,
    values: Box<[Value]>,
    prop_seq: Box<[u64]>,
    extensions: BTreeMap<String, Value>,
    ext_seq: u64,
    /// Live, soft-deleted or purged.
    pub state: LifeState,
    state_seq: u64,
    full_since: u64,
    log_seq: u64,
    /// Group members by id (groups only); removed edges stay as tombstones.
    pub members: BTreeMap<String, Membership>,
    /// Profile photo (users only).
    pub photo: Option<Photo>,
}

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

impl DirObject {
    fn new(id: String, kind: Kind) -> Self {
        let n = kind.schema().len();
        let mut values = vec![Value::Null; n].into_boxed_slice();
        // Collections are never null in Graph: unset means empty.
        for (i, def) in kind.schema().iter().enumerate() {
            if def.ty == PropType::StrList {
                values[i] = Value::Array(Vec::new());
            }
        }
        Self {
            id,
            kind,
            values,
            prop_seq: vec![0; n].into_boxed_slice(),
            extensions: BTreeMap::new(),
            ext_seq: 0,
            state: LifeState::Active,
            state_seq: 0,
            full_since: 0,
            log_seq: 0,
            members: BTreeMap::new(),
            photo: None,
        }
    }

    /// The current value of a property (`Null` when unset).
    pub fn get(&self, name: &str) -> Option<&Value> {
        prop_index(self.kind, name)
            .map(|i| &self.values[i])
            .or_else(|| self.extensions.get(name))
    }

    /// A string property, if set.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }

    /// Representation for `GET` (unset properties as `null`, as Graph returns them).
    pub fn to_graph_json(&self, sel: &Select) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id".into(), Value::String(self.id.clone()));
        for &i in &sel.props {
            m.insert(self.kind.schema()[i].name.into(), self.render(i));
        }
        for name in &sel.extensions {
            if let Some(v) = self.extensions.get(name) {
                m.insert(name.clone(), v.clone());
            }
        }
        m
    }

    /// A property's wire value. `onPremisesExtensionAttributes` is stored sparsely (only set slots; `null` when
    /// none, which saves memory on large tenants) and shown, as Graph does, with all fifteen slots.
    fn render(&self, i: usize) -> Value {
        match (&self.values[i], self.kind.schema()[i].ty) {
            (Value::Null, PropType::OnPremExt) => empty_on_prem(),
            (Value::Object(set), PropType::OnPremExt) => {
                let mut full = empty_on_prem();
                for (k, v) in set {
                    full[k] = v.clone();
                }
                full
            }
            (v, _) => v.clone(),
        }
    }

    /// Representation for delta: selected properties, leaving out ones never set; `since` limits it to properties
    /// changed after that sequence (`Prefer: return=minimal`).
    pub fn to_delta_json(&self, sel: &Select, since: Option<u64>) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id".into(), Value::String(self.id.clone()));
        for &i in &sel.props {
            let seq = self.prop_seq[i];
            let never_set = seq == 0 && is_unset(&self.values[i]);
            let unchanged = since.is_some_and(|s| seq <= s);
            if !never_set && !unchanged {
                m.insert(self.kind.schema()[i].name.into(), self.render(i));
            }
        }
        if since.is_none_or(|s| self.ext_seq > s) {
            for name in &sel.extensions {
                if let Some(v) = self.extensions.get(name) {
                    m.insert(name.clone(), v.clone());
                }
            }
        }
        m
    }

    /// Whether a selected property (or, with `sel.members`, a membership) changed after `since`.
    pub fn selected_changed_since(&self, sel: &Select, since: u64) -> bool {
        sel.props.iter().any(|&i| self.prop_seq[i] > since)
            || (!sel.extensions.is_empty() && self.ext_seq > since)
            || (sel.members && self.members.values().any(|m| m.seq > since))
    }

    /// The sequence at which the object last appeared (created or restored).
    pub fn full_since(&self) -> u64 {
        self.full_since
    }

    /// The sequence of the last soft delete, restore or purge.
    pub fn state_seq(&self) -> u64 {
        self.state_seq
    }

    /// Full state for the control API's snapshot.
    pub fn snapshot_json(&self) -> Value {
        let mut m = self.to_graph_json(&Select::all(self.kind));
        for (k, v) in &self.extensions {
            m.insert(k.clone(), v.clone());
        }
        // Not `state`: that is a Graph user property (state or province), which the snapshot must keep.
        m.insert("lifecycleState".into(), json!(self.state));
        if self.kind == Kind::Group {
            let members: Vec<&String> = self
                .members
                .iter()
                .filter(|(_, e)| e.present)
                .map(|(id, _)| id)
                .collect();
            m.insert("members".into(), json!(members));
        }
        if let Some(p) = &self.photo {
            m.insert(
                "photo".into(),
                json!({"contentType": p.content_type, "etag": p.etag, "bytes": p.bytes.len()}),
            );
        }
        Value::Object(m)
    }
}

fn is_unset(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(Value::is_null),
        _ => false,
    }
}

fn empty_on_prem() -> Value {
    let mut m = Map::new();
    for n in 1..=ON_PREM_SLOTS {
        m.insert(format!("extensionAttribute{n}"), Value::Null);
    }
    Value::Object(m)
}

/// Index of a property in its kind's schema.
pub fn prop_index(kind: Kind, name: &str) -> Option<usize> {
    kind.schema().iter().position(|p| p.name == name)
}

/// A resolved `$select`: schema indexes, directory-extension names, and whether group members are tracked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Select {
    /// Indexes into the kind's schema.
    pub props: Vec<usize>,
    /// Selected `extension_*` properties.
    pub extensions: Vec<String>,
    /// `members` selected (groups, delta only).
    pub members: bool,
}

impl Select {
    /// Resolves `$select` (comma-separated) for a kind; `None` gives the default properties.
    pub fn parse(kind: Kind, select: Option<&str>) -> Result<Self, DirectoryError> {
        let Some(select) = select.filter(|s| !s.trim().is_empty()) else {
            return Ok(Self::default_for(kind));
        };
        let mut sel = Select::default();
        for name in select.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if name == "id" {
                continue;
            }
            if kind == Kind::Group && name == "members" {
                sel.members = true;
            } else if name.starts_with("extension_") {
                sel.extensions.push(name.to_owned());
            } else if let Some(i) = prop_index(kind, name) {
                if !sel.props.contains(&i) {
                    sel.props.push(i);
                }
            } else {
                return Err(DirectoryError::UnknownProperty(
                    name.to_owned(),
                    type_name(kind),
                ));
            }
        }
        Ok(sel)
    }

    /// The properties Graph returns without `$select` (for groups, delta also tracks members by default).
    pub fn default_for(kind: Kind) -> Self {
        let props = kind
            .schema()
            .iter()
            .enumerate()
            .filter(|(_, p)| p.default)
            .map(|(i, _)| i)
            .collect();
        Self {
            props,
            extensions: Vec::new(),
            members: kind == Kind::Group,
        }
    }

    /// Every property of the kind.
    pub fn all(kind: Kind) -> Self {
        Self {
            props: (0..kind.schema().len()).collect(),
            extensions: Vec::new(),
            members: kind == Kind::Group,
        }
    }
}

fn type_name(kind: Kind) -> &'static str {
    match kind {
        Kind::User => "microsoft.graph.user",
        Kind::Group => "microsoft.graph.group",
    }
}

/// A validated property write.
enum Write {
    Prop(usize, Value),
    OnPrem(Map<String, Value>),
    Ext(String, Value),
}

fn validate(kind: Kind, props: &Map<String, Value>) -> Result<Vec<Write>, DirectoryError> {
    let mut writes = Vec::with_capacity(props.len());
    for (name, v) in props {
        if name == "id" {
            continue;
        }
        if name.starts_with("extension_") {
            writes.push(Write::Ext(name.clone(), v.clone()));
            continue;
        }
        let i = prop_index(kind, name)
            .ok_or_else(|| DirectoryError::UnknownProperty(name.clone(), type_name(kind)))?;
        let def = &kind.schema()[i];
        if v.is_null() {
            if def.required {
                return Err(DirectoryError::Required(name.clone()));
            }
            let cleared = match def.ty {
                PropType::StrList => Value::Array(Vec::new()),
                _ => Value::Null,
            };
            writes.push(Write::Prop(i, cleared));
            continue;
        }
        match def.ty {
            PropType::Str => {
                let s = v
                    .as_str()
                    .ok_or_else(|| DirectoryError::InvalidValue(name.clone(), "a string"))?;
                if let Some(max) = def.max_len
                    && s.chars().count() > max
                {
                    return Err(DirectoryError::TooLong(name.clone(), type_name(kind), max));
                }
                writes.push(Write::Prop(i, v.clone()));
            }
            PropType::StrList => {
                let ok = v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
                if !ok {
                    return Err(DirectoryError::InvalidValue(
                        name.clone(),
                        "a collection of strings",
                    ));
                }
                writes.push(Write::Prop(i, v.clone()));
            }
            PropType::Bool => {
                if !v.is_boolean() {
                    return Err(DirectoryError::InvalidValue(name.clone(), "a boolean"));
                }
                writes.push(Write::Prop(i, v.clone()));
            }
            PropType::OnPremExt => {
                let obj = v
                    .as_object()
                    .ok_or_else(|| DirectoryError::InvalidValue(name.clone(), "an object"))?;
                for (k, slot) in obj {
                    let known = k
                        .strip_prefix("extensionAttribute")
                        .and_then(|n| n.parse::<usize>().ok());
                    if !known.is_some_and(|n| (1..=ON_PREM_SLOTS).contains(&n)) {
                        return Err(DirectoryError::UnknownProperty(
                            k.clone(),
                            "microsoft.graph.onPremisesExtensionAttributes",
                        ));
                    }
                    if !(slot.is_null() || slot.is_string()) {
                        return Err(DirectoryError::InvalidValue(k.clone(), "a string or null"));
                    }
                }
                writes.push(Write::OnPrem(obj.clone()));
            }
        }
    }
    Ok(writes)
}

/// One tenant's directory state.
#[derive(Debug, Default)]
pub struct Directory {
    seq: u64,
    users: BTreeMap<String, DirObject>,
    groups: BTreeMap<String, DirObject>,
    user_log: BTreeMap<u64, String>,
    group_log: BTreeMap<u64, String>,
    roles: BTreeMap<String, Role>,
    upn_index: HashMap<String, String>,
    active_users: usize,
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

    /// The change log of a kind: sequence → id, one entry per object at its latest change.
    pub fn log(&self, kind: Kind) -> &BTreeMap<u64, String> {
        match kind {
            Kind::User => &self.user_log,
            Kind::Group => &self.group_log,
        }
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
        let old = self.objects(kind).get(id).map(|o| o.log_seq);
        let log = match kind {
            Kind::User => &mut self.user_log,
            Kind::Group => &mut self.group_log,
        };
        if let Some(old) = old {
            log.remove(&old);
        }
        log.insert(seq, id.to_owned());
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
        if let Some(o) = self.objects_mut(kind).get_mut(id) {
            was_active = o.state == LifeState::Active;
            o.state = state;
            o.state_seq = seq;
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
        for gid in containing {
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
        Ok(Mutation { seq, events })
    }

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

    /// Sets or clears a user's photo. Photo changes are not tracked by delta and send no notification
    /// (undocumented in Graph; graph-facts §6 "Not tracked").
    pub fn set_photo(&mut self, user: &str, photo: Option<Photo>) -> Result<(), DirectoryError> {
        self.live(Kind::User, user)?;
        if let Some(u) = self.users.get_mut(user) {
            u.photo = photo;
        }
        Ok(())
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

/// Applies validated writes; returns whether anything changed.
fn apply(obj: &mut DirObject, writes: Vec<Write>, seq: u64) -> bool {
    let mut changed = false;
    for w in writes {
        match w {
            Write::Prop(i, v) => {
                if obj.values[i] != v || (obj.prop_seq[i] == 0 && !is_unset(&v)) {
                    obj.values[i] = v;
                    obj.prop_seq[i] = seq;
                    changed = true;
                }
            }
            Write::OnPrem(patch) => {
                let Some(i) = prop_index(obj.kind, "onPremisesExtensionAttributes") else {
                    continue;
                };
                let mut merged = obj.values[i].as_object().cloned().unwrap_or_default();
                for (k, v) in patch {
                    if v.is_null() {
                        merged.remove(&k);
                    } else {
                        merged.insert(k, v);
                    }
                }
                let merged = if merged.is_empty() {
                    Value::Null
                } else {
                    Value::Object(merged)
                };
                if obj.values[i] != merged {
                    obj.values[i] = merged;
                    obj.prop_seq[i] = seq;
                    changed = true;
                }
            }
            Write::Ext(name, v) => {
                let old = obj.extensions.get(&name).cloned().unwrap_or(Value::Null);
                if old != v {
                    if v.is_null() {
                        obj.extensions.remove(&name);
                    } else {
                        obj.extensions.insert(name, v);
                    }
                    obj.ext_seq = seq;
                    changed = true;
                }
            }
        }
    }
    changed
}

/// Builds a photo record, deriving the media etag from the bytes.
pub fn make_photo(bytes: Vec<u8>, content_type: String, width: u32, height: u32) -> Photo {
    let digest = Sha256::digest(&bytes);
    let etag = format!("\"{}\"", hex(&digest[..8]));
    Photo {
        bytes,
        content_type,
        width,
        height,
        etag,
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
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
    fn each_object_sits_in_the_change_log_once_at_its_latest_change() {
        let mut dir = Directory::default();
        let a = user(&mut dir, "a");
        let b = user(&mut dir, "b");
        dir.update(Kind::User, &a, &props(json!({"jobTitle": "x"})))
            .expect("update");
        let log: Vec<(&u64, &String)> = dir.log(Kind::User).iter().collect();
        assert_eq!(log, vec![(&2, &b), (&3, &a)]);
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

    #[test]
    fn unknown_select_properties_are_rejected() {
        assert!(Select::parse(Kind::User, Some("displayName,nope")).is_err());
        let sel =
            Select::parse(Kind::User, Some("id,mail,extension_abc_costCenter")).expect("select");
        assert_eq!(sel.props.len(), 1);
        assert_eq!(sel.extensions, vec!["extension_abc_costCenter".to_owned()]);
    }
}
