//! Delta rounds for `/users/delta` and `/groups/delta` (graph-facts §6).
//!
//! A round either starts from nothing (initial: current state of every live object, walked by id) or from a log
//! position (incremental: the latest state of every object whose last change up to the snapshot taken when the round
//! began lies after the position; an object changed again during the round still counts). Skip and delta tokens are opaque base64url JSON carrying the position,
//! the cursor, `$select` and the id filter, so later requests use the returned links unchanged.

use std::ops::Bound;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::directory::{DirObject, Directory, Kind, LifeState, Select};

/// Where a round stands, carried in `$skiptoken` and `$deltatoken`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeltaState {
    /// Tenant the token belongs to.
    pub tenant: String,
    /// Users or groups.
    pub kind: Kind,
    /// The raw `$select` of the first request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<String>,
    /// The `id eq` filter of the first request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Vec<String>>,
    /// Log position the round reports changes after; `None` for an initial round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<u64>,
    /// Log position the round ends at (taken when it began).
    pub snap: u64,
    /// When the token chain was issued (sim clock, unix seconds); delta tokens expire by it.
    pub issued: i64,
    /// Progress inside the round (skip tokens only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Cursor>,
}

/// Progress inside a round.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Cursor {
    /// The last object fully or partly emitted.
    pub at: Position,
    /// Set when that object's `members@delta` continues on the next page: the last member id emitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_after: Option<String>,
}

/// A position in a round's walk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Position {
    /// Nothing emitted yet (an injected empty page was served).
    Start,
    /// Initial rounds walk objects by id.
    Id(String),
    /// Incremental rounds walk the change log by sequence.
    Seq(u64),
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token this simulator issued, or for another tenant or resource.
    #[error("Badly formed token.")]
    Malformed,
}

impl DeltaState {
    /// Encodes the state as an opaque token.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    /// Decodes a token, checking it belongs to `tenant` and `kind`.
    pub fn decode(token: &str, tenant: &str, kind: Kind) -> Result<Self, TokenError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token.trim())
            .map_err(|_| TokenError::Malformed)?;
        let st: DeltaState = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
        if st.tenant != tenant || st.kind != kind || !st.positions_agree() {
            return Err(TokenError::Malformed);
        }
        Ok(st)
    }

    /// Whether the positions could have been issued together: the base and the cursor lie within the snapshot.
    /// Tokens are client input, so a forged one must get a 400 rather than a walk over an inverted range.
    fn positions_agree(&self) -> bool {
        let base_ok = self.base.is_none_or(|b| b <= self.snap);
        let cursor_ok = match self.cursor.as_ref().map(|c| &c.at) {
            Some(Position::Seq(s)) => self.base.is_some_and(|b| b < *s) && *s <= self.snap,
            Some(Position::Id(_)) => self.base.is_none(),
            Some(Position::Start) | None => true,
        };
        base_ok && cursor_ok
    }
}

/// Per-request and per-tenant knobs of a delta page.
#[derive(Debug, Clone)]
pub struct DeltaOptions {
    /// Objects per page (`Prefer: odata.maxpagesize`, capped at 999).
    pub page_size: usize,
    /// `Prefer: return=minimal`: updated objects carry only changed properties.
    pub minimal: bool,
    /// `members@delta` entries per page for one group before the group is split onto the next page.
    pub member_slice: usize,
    /// Emit every n-th entry twice (replays); 0 = off.
    pub replay_every: usize,
    /// Serve an empty page with a nextLink at the start of every round.
    pub empty_first_page: bool,
    /// Initial rounds report objects soft-deleted or purged at or after this time (sim clock, unix seconds) as
    /// `@removed`; `None` = never.
    pub removed_since: Option<i64>,
}

/// One delta page.
#[derive(Debug)]
pub struct DeltaPage {
    /// The entries for `value`.
    pub items: Vec<Value>,
    /// What comes next.
    pub next: Next,
}

/// The link a page ends with.
#[derive(Debug)]
pub enum Next {
    /// More pages in this round: `@odata.nextLink` with this skip token state.
    More(DeltaState),
    /// Round complete: `@odata.deltaLink` with this delta token state.
    Done(DeltaState),
}

/// A fresh state for a round starting now (`base` = `None` for an initial round).
pub fn begin_round(
    dir: &Directory,
    tenant: &str,
    kind: Kind,
    select: Option<String>,
    filter: Option<Vec<String>>,
    base: Option<u64>,
    issued: i64,
) -> DeltaState {
    DeltaState {
        tenant: tenant.to_owned(),
        kind,
        select,
        filter,
        base,
        snap: dir.seq(),
        issued,
        cursor: None,
    }
}

/// `$deltatoken=latest`: no data, a delta link at the current position.
pub fn latest(
    dir: &Directory,
    tenant: &str,
    kind: Kind,
    select: Option<String>,
    filter: Option<Vec<String>>,
    issued: i64,
) -> DeltaState {
    DeltaState {
        tenant: tenant.to_owned(),
        kind,
        select,
        filter,
        base: Some(dir.seq()),
        snap: dir.seq(),
        issued,
        cursor: None,
    }
}

/// Computes one page of a round.
pub fn page(dir: &Directory, st: &DeltaState, sel: &Select, opts: &DeltaOptions) -> DeltaPage {
    if opts.empty_first_page && st.cursor.is_none() {
        let mut next = st.clone();
        next.cursor = Some(Cursor {
            at: Position::Start,
            member_after: None,
        });
        return DeltaPage {
            items: Vec::new(),
            next: Next::More(next),
        };
    }
    let page_size = opts.page_size.max(1);
    let cursor = st.cursor.clone().unwrap_or(Cursor {
        at: Position::Start,
        member_after: None,
    });
    let mut items: Vec<Value> = Vec::new();
    let mut emitted = 0usize;
    let mut last = cursor.at.clone();
    for (pos, obj) in walk(dir, st, &cursor) {
        let member_after = if pos == cursor.at {
            cursor.member_after.as_deref()
        } else {
            None
        };
        let Some((entry, more)) = entry(obj, sel, st.base, opts, member_after) else {
            continue;
        };
        if items.len() >= page_size {
            return more_page(
                st,
                items,
                Cursor {
                    at: last,
                    member_after: None,
                },
            );
        }
        let entry = Value::Object(entry);
        emitted += 1;
        if opts.replay_every > 0 && emitted.is_multiple_of(opts.replay_every) {
            items.push(entry.clone());
        }
        items.push(entry);
        if let Some(member) = more {
            return more_page(
                st,
                items,
                Cursor {
                    at: pos,
                    member_after: Some(member),
                },
            );
        }
        last = pos;
    }
    let done = DeltaState {
        base: Some(st.snap),
        cursor: None,
        ..st.clone()
    };
    DeltaPage {
        items,
        next: Next::Done(done),
    }
}

fn more_page(st: &DeltaState, items: Vec<Value>, cursor: Cursor) -> DeltaPage {
    let next = DeltaState {
        cursor: Some(cursor),
        ..st.clone()
    };
    DeltaPage {
        items,
        next: Next::More(next),
    }
}

/// The objects of the round from the cursor on (inclusive when the cursor's object has more members to emit).
fn walk<'a>(
    dir: &'a Directory,
    st: &'a DeltaState,
    cursor: &Cursor,
) -> Box<dyn Iterator<Item = (Position, &'a DirObject)> + 'a> {
    let objects = dir.objects(st.kind);
    let inclusive = cursor.member_after.is_some();
    let in_filter = move |id: &str| st.filter.as_ref().is_none_or(|f| f.iter().any(|x| x == id));
    match st.base {
        None => {
            let lower = match &cursor.at {
                Position::Id(id) if inclusive => Bound::Included(id.clone()),
                Position::Id(id) => Bound::Excluded(id.clone()),
                _ => Bound::Unbounded,
            };
            if let Some(filter) = &st.filter {
                let mut ids: Vec<&String> = filter.iter().filter(|id| after(&lower, id)).collect();
                ids.sort();
                ids.dedup();
                Box::new(
                    ids.into_iter()
                        .filter_map(move |id| objects.get(id))
                        .map(|o| (Position::Id(o.id.clone()), o)),
                )
            } else {
                Box::new(
                    objects
                        .range((lower, Bound::Unbounded))
                        .map(|(id, o)| (Position::Id(id.clone()), o)),
                )
            }
        }
        Some(_) => {
            let lower = match &cursor.at {
                Position::Seq(s) if inclusive => Bound::Included(*s),
                Position::Seq(s) => Bound::Excluded(*s),
                _ => Bound::Excluded(st.base.unwrap_or(0)),
            };
            // The log as it stood at the snapshot: an object that changed again since still counts here.
            Box::new(
                dir.log(st.kind)
                    .as_of(lower, st.snap)
                    .filter(move |(_, id)| in_filter(id))
                    .filter_map(move |(seq, id)| objects.get(id).map(|o| (Position::Seq(seq), o))),
            )
        }
    }
}

fn after(lower: &Bound<String>, id: &str) -> bool {
    match lower {
        Bound::Included(l) => id >= l.as_str(),
        Bound::Excluded(l) => id > l.as_str(),
        Bound::Unbounded => true,
    }
}

fn removed(id: &str, reason: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(id));
    m.insert("@removed".into(), json!({"reason": reason}));
    m
}

/// One entry for an object, or `None` when the round has nothing to say about it. The second value is the last
/// member emitted when the group's `members@delta` continues on the next page.
fn entry(
    obj: &DirObject,
    sel: &Select,
    base: Option<u64>,
    opts: &DeltaOptions,
    member_after: Option<&str>,
) -> Option<(Map<String, Value>, Option<String>)> {
    let recently_removed = || opts.removed_since.is_some_and(|t| obj.state_at() >= t);
    // Which members to list: every present one when the group comes in full, plus every edge added or removed
    // since the token. A group restored after the token comes in full, but the client may still hold members it
    // lost meanwhile (a purged user, say), so their removals go with it.
    let (mut map, all_present, members_since) = match (base, obj.state) {
        (None, LifeState::Active) => (obj.to_delta_json(sel, None), true, None),
        // Graph's initial rounds carry recently removed objects too (graph-facts §6).
        (None, LifeState::SoftDeleted) => {
            return recently_removed().then(|| (removed(&obj.id, "changed"), None));
        }
        (None, LifeState::Purged) => {
            return recently_removed().then(|| (removed(&obj.id, "deleted"), None));
        }
        (Some(b), LifeState::SoftDeleted) => {
            return (obj.state_seq() > b).then(|| (removed(&obj.id, "changed"), None));
        }
        (Some(b), LifeState::Purged) => {
            return (obj.state_seq() > b).then(|| (removed(&obj.id, "deleted"), None));
        }
        (Some(b), LifeState::Active) if obj.full_since() > b => {
            (obj.to_delta_json(sel, None), true, Some(b))
        }
        (Some(b), LifeState::Active) => {
            if !obj.selected_changed_since(sel, b) {
                return None;
            }
            let since = opts.minimal.then_some(b);
            (obj.to_delta_json(sel, since), false, Some(b))
        }
    };
    let mut more = None;
    if sel.members && obj.kind == Kind::Group {
        let relevant = obj.members.iter().filter(|(_, m)| {
            (all_present && m.present) || members_since.is_some_and(|b| m.seq > b)
        });
        let pending: Vec<_> = relevant
            .filter(|(id, _)| member_after.is_none_or(|a| id.as_str() > a))
            .collect();
        let slice = opts.member_slice.max(1);
        if pending.len() > slice {
            more = pending.get(slice - 1).map(|(id, _)| (*id).clone());
        }
        let list: Vec<Value> = pending
            .iter()
            .take(slice)
            .map(|(id, m)| {
                let mut v = json!({"@odata.type": m.kind.odata_type(), "id": id});
                if !m.present {
                    v["@removed"] = json!({"reason": "deleted"});
                }
                v
            })
            .collect();
        if !list.is_empty() {
            map.insert("members@delta".into(), Value::Array(list));
        }
    }
    Some((map, more))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(page_size: usize) -> DeltaOptions {
        DeltaOptions {
            page_size,
            minimal: false,
            member_slice: 2,
            replay_every: 0,
            empty_first_page: false,
            removed_since: None,
        }
    }

    fn props(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object literal")
    }

    fn seed(dir: &mut Directory, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                let p = props(json!({"displayName": format!("u{i}"), "userPrincipalName": format!("u{i}@x.com")}));
                dir.create(Kind::User, Some(format!("{i:04}")), &p).expect("create").0
            })
            .collect()
    }

    fn run_round(
        dir: &Directory,
        mut st: DeltaState,
        sel: &Select,
        o: &DeltaOptions,
    ) -> (Vec<Value>, DeltaState, usize) {
        let mut all = Vec::new();
        let mut pages = 0;
        loop {
            pages += 1;
            let p = page(dir, &st, sel, o);
            all.extend(p.items);
            match p.next {
                Next::More(s) => {
                    st = DeltaState::decode(&s.encode(), "t", s.kind).expect("round trip")
                }
                Next::Done(s) => return (all, s, pages),
            }
        }
    }

    #[test]
    fn an_initial_round_pages_through_every_live_user_once() {
        let mut dir = Directory::default();
        seed(&mut dir, 7);
        let sel = Select::default_for(Kind::User);
        let st = begin_round(&dir, "t", Kind::User, None, None, None, 0);
        let (items, done, pages) = run_round(&dir, st, &sel, &opts(3));
        assert_eq!(items.len(), 7);
        assert_eq!(pages, 3);
        assert_eq!(done.base, Some(7));
    }

    #[test]
    fn an_incremental_round_returns_only_objects_changed_since_the_token() {
        let mut dir = Directory::default();
        let ids = seed(&mut dir, 5);
        let sel = Select::default_for(Kind::User);
        let (_, token, _) = run_round(
            &dir,
            begin_round(&dir, "t", Kind::User, None, None, None, 0),
            &sel,
            &opts(10),
        );
        dir.update(Kind::User, &ids[2], &props(json!({"jobTitle": "Boss"})))
            .expect("update");
        dir.soft_delete(Kind::User, &ids[3]).expect("delete");
        let st = DeltaState {
            snap: dir.seq(),
            ..token
        };
        let (items, _, _) = run_round(&dir, st, &sel, &opts(10));
        assert_eq!(items.len(), 2);
        assert_eq!(items[0]["jobTitle"], "Boss");
        assert_eq!(items[0]["displayName"], "u2");
        assert_eq!(items[1]["@removed"]["reason"], "changed");
    }

    #[test]
    fn minimal_return_carries_only_changed_properties_and_cleared_ones_as_null() {
        let mut dir = Directory::default();
        let ids = seed(&mut dir, 1);
        dir.update(
            Kind::User,
            &ids[0],
            &props(json!({"mobilePhone": "+1 555"})),
        )
        .expect("set");
        let base = dir.seq();
        dir.update(
            Kind::User,
            &ids[0],
            &props(json!({"mobilePhone": null, "jobTitle": "X"})),
        )
        .expect("clear");
        let sel = Select::default_for(Kind::User);
        let st = begin_round(&dir, "t", Kind::User, None, None, Some(base), 0);
        let o = DeltaOptions {
            minimal: true,
            ..opts(10)
        };
        let (items, _, _) = run_round(&dir, st, &sel, &o);
        let keys: Vec<&String> = items[0].as_object().expect("object").keys().collect();
        assert_eq!(keys, vec!["id", "jobTitle", "mobilePhone"]);
        assert!(items[0]["mobilePhone"].is_null());
    }

    #[test]
    fn changes_to_unselected_properties_produce_no_entry() {
        let mut dir = Directory::default();
        let ids = seed(&mut dir, 1);
        let base = dir.seq();
        dir.update(Kind::User, &ids[0], &props(json!({"city": "Oslo"})))
            .expect("update");
        let sel = Select::parse(Kind::User, Some("displayName")).expect("select");
        let st = begin_round(
            &dir,
            "t",
            Kind::User,
            Some("displayName".into()),
            None,
            Some(base),
            0,
        );
        let (items, _, _) = run_round(&dir, st, &sel, &opts(10));
        assert!(items.is_empty());
    }

    #[test]
    fn large_groups_are_split_across_pages_with_member_slices() {
        let mut dir = Directory::default();
        let ids = seed(&mut dir, 5);
        let (g, _) = dir
            .create(Kind::Group, None, &props(json!({"displayName": "g"})))
            .expect("group");
        for id in &ids {
            dir.add_member(&g, id).expect("add");
        }
        let sel = Select::default_for(Kind::Group);
        let st = begin_round(&dir, "t", Kind::Group, None, None, None, 0);
        let (items, _, pages) = run_round(&dir, st, &sel, &opts(10));
        assert_eq!(pages, 3);
        let members: Vec<&str> = items
            .iter()
            .flat_map(|i| i["members@delta"].as_array().expect("members").iter())
            .map(|m| m["id"].as_str().expect("id"))
            .collect();
        assert_eq!(members, ids.iter().map(String::as_str).collect::<Vec<_>>());
    }

    #[test]
    fn a_restored_group_carries_the_members_it_lost_since_the_token() {
        let mut dir = Directory::default();
        let ids = seed(&mut dir, 3);
        let (g, _) = dir
            .create(Kind::Group, None, &props(json!({"displayName": "g"})))
            .expect("group");
        dir.add_member(&g, &ids[0]).expect("add");
        dir.add_member(&g, &ids[1]).expect("add");
        let sel = Select::default_for(Kind::Group);
        let (_, token, _) = run_round(
            &dir,
            begin_round(&dir, "t", Kind::Group, None, None, None, 0),
            &sel,
            &opts(10),
        );
        dir.soft_delete(Kind::Group, &g).expect("delete");
        dir.restore(Kind::Group, &g).expect("restore");
        dir.purge(Kind::User, &ids[0]).expect("purge");
        dir.add_member(&g, &ids[2]).expect("add");
        let st = DeltaState {
            snap: dir.seq(),
            ..token
        };
        let (items, _, _) = run_round(&dir, st, &sel, &opts(10));
        assert!(items.iter().all(|i| i["id"] == g.as_str()));
        assert_eq!(
            items[0]["displayName"], "g",
            "a restored group comes in full"
        );
        let members: Vec<(&str, bool)> = items
            .iter()
            .flat_map(|i| i["members@delta"].as_array().expect("members").iter())
            .map(|m| (m["id"].as_str().expect("id"), m.get("@removed").is_some()))
            .collect();
        assert_eq!(
            members,
            vec![
                (ids[0].as_str(), true),
                (ids[1].as_str(), false),
                (ids[2].as_str(), false)
            ]
        );
    }

    #[test]
    fn replays_repeat_entries_within_a_round() {
        let mut dir = Directory::default();
        seed(&mut dir, 4);
        let sel = Select::default_for(Kind::User);
        let o = DeltaOptions {
            replay_every: 2,
            ..opts(10)
        };
        let (items, _, _) = run_round(
            &dir,
            begin_round(&dir, "t", Kind::User, None, None, None, 0),
            &sel,
            &o,
        );
        assert_eq!(items.len(), 6);
    }

    #[test]
    fn tokens_for_another_tenant_are_refused() {
        let st = DeltaState {
            tenant: "a".into(),
            kind: Kind::User,
            select: None,
            filter: None,
            base: Some(1),
            snap: 1,
            issued: 0,
            cursor: None,
        };
        assert_eq!(
            DeltaState::decode(&st.encode(), "b", Kind::User),
            Err(TokenError::Malformed)
        );
        assert_eq!(DeltaState::decode(&st.encode(), "a", Kind::User), Ok(st));
    }

    #[test]
    fn tokens_whose_positions_contradict_each_other_are_refused() {
        let st = DeltaState {
            tenant: "a".into(),
            kind: Kind::User,
            select: None,
            filter: None,
            base: Some(2),
            snap: 5,
            issued: 0,
            cursor: Some(Cursor {
                at: Position::Seq(4),
                member_after: None,
            }),
        };
        assert!(DeltaState::decode(&st.encode(), "a", Kind::User).is_ok());
        let forged = [
            DeltaState {
                base: Some(9),
                cursor: None,
                ..st.clone()
            },
            DeltaState {
                cursor: Some(Cursor {
                    at: Position::Seq(7),
                    member_after: None,
                }),
                ..st.clone()
            },
            DeltaState {
                cursor: Some(Cursor {
                    at: Position::Id("x".into()),
                    member_after: None,
                }),
                ..st.clone()
            },
        ];
        for f in forged {
            assert_eq!(
                DeltaState::decode(&f.encode(), "a", Kind::User),
                Err(TokenError::Malformed),
                "{f:?}"
            );
        }
    }
}
