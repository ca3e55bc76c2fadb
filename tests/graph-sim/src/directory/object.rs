//! One directory object: its properties with per-property change sequences, lifecycle state, memberships and
//! photo, and how it is rendered for `GET` and for delta.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::clock::graph_date_time;

use super::schema::{Kind, ON_PREM_SLOTS, PropType, Select, Write, prop_index};

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
    pub(super) values: Box<[Value]>,
    pub(super) prop_seq: Box<[u64]>,
    pub(super) extensions: BTreeMap<String, Value>,
    pub(super) ext_seq: u64,
    /// Live, soft-deleted or purged.
    pub state: LifeState,
    pub(super) state_seq: u64,
    /// When the last soft delete, restore or purge happened (sim clock, unix seconds).
    pub(super) state_at: i64,
    pub(super) full_since: u64,
    pub(super) log_seq: u64,
    /// Group members by id (groups only); removed edges stay as tombstones.
    pub members: BTreeMap<String, Membership>,
    /// Profile photo (users only).
    pub photo: Option<Photo>,
}

impl DirObject {
    /// Its directory extension values (`extension_<appid>_<name>`), by name.
    pub fn extensions(&self) -> &BTreeMap<String, Value> {
        &self.extensions
    }

    pub(super) fn new(id: String, kind: Kind) -> Self {
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
            state_at: 0,
            full_since: 0,
            log_seq: 0,
            members: BTreeMap::new(),
            photo: None,
        }
    }

    /// Sets the read-only creation timestamps (`createdDateTime`) of a new object.
    pub(super) fn stamp_creation(&mut self, now: i64, seq: u64) {
        for (i, def) in self.kind.schema().iter().enumerate() {
            if def.ty == PropType::CreatedAt {
                self.values[i] = Value::String(graph_date_time(now));
                self.prop_seq[i] = seq;
            }
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

    /// When the last soft delete, restore or purge happened (sim clock, unix seconds).
    pub fn state_at(&self) -> i64 {
        self.state_at
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

pub(super) fn is_unset(v: &Value) -> bool {
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

/// Applies validated writes; returns whether anything changed.
pub(super) fn apply(obj: &mut DirObject, writes: Vec<Write>, seq: u64) -> bool {
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}
