//! A kind's change log: where incremental delta rounds find the objects that changed.
//!
//! Every change appends an entry at its sequence number. When an object changes again, its earlier entry is not
//! dropped but marked as superseded by the later sequence. A round reads the log as it stood at its snapshot: an
//! object counts at its last change up to the snapshot, even if it has changed again since. Without that, an object
//! that changes while a multi-page round is being read would move past the round's snapshot before the round got
//! to it; the round would skip it and the next round, reporting only what changed after the snapshot, would never
//! carry the earlier change (graph-facts §6: at least the properties changed since the token).
//!
//! A superseded entry only matters to a round that began before the change that superseded it, and a round's skip
//! tokens stop working once the round is older than the delta-token age limit. So superseded entries are pruned
//! once they are older than that limit, which keeps the log at about one entry per object plus the recent changes.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;

/// One change of one object.
#[derive(Debug, Clone)]
struct Entry {
    id: String,
    /// The sequence of the object's next change, once there is one.
    superseded_by: Option<u64>,
}

/// The change log of one kind of object, keyed by sequence number.
#[derive(Debug, Default)]
pub struct ChangeLog {
    entries: BTreeMap<u64, Entry>,
    /// Superseded entries by the time (sim clock, unix seconds) they were superseded, oldest first.
    superseded: VecDeque<(i64, u64)>,
}

impl ChangeLog {
    /// Records that object `id` changed at `seq`; `previous` is the sequence of its last change, if any. Each
    /// sequence belongs to one change of one object.
    pub fn record(&mut self, id: &str, seq: u64, previous: Option<u64>, now: i64) {
        if let Some(old) = previous.and_then(|p| self.entries.get_mut(&p).map(|e| (p, e))) {
            old.1.superseded_by = Some(seq);
            self.superseded.push_back((now, old.0));
        }
        self.entries.insert(
            seq,
            Entry {
                id: id.to_owned(),
                superseded_by: None,
            },
        );
    }

    /// The objects whose last change up to `snapshot` lies after `after`, in sequence order, each once, with the
    /// sequence it is found at.
    pub fn as_of(&self, after: Bound<u64>, snapshot: u64) -> impl Iterator<Item = (u64, &str)> {
        let range = match after {
            Bound::Excluded(a) if a >= snapshot => None,
            Bound::Included(a) if a > snapshot => None,
            _ => Some(self.entries.range((after, Bound::Included(snapshot)))),
        };
        range
            .into_iter()
            .flatten()
            .filter(move |(_, e)| e.superseded_by.is_none_or(|next| next > snapshot))
            .map(|(seq, e)| (*seq, e.id.as_str()))
    }

    /// Drops superseded entries superseded before `before` (sim clock, unix seconds).
    pub fn prune(&mut self, before: i64) {
        while let Some(&(at, seq)) = self.superseded.front() {
            if at >= before {
                break;
            }
            self.superseded.pop_front();
            self.entries.remove(&seq);
        }
    }

    /// Number of entries, superseded ones included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(log: &ChangeLog, after: Bound<u64>, snapshot: u64) -> Vec<(u64, String)> {
        log.as_of(after, snapshot)
            .map(|(s, id)| (s, id.to_owned()))
            .collect()
    }

    #[test]
    fn an_object_is_found_at_its_last_change_up_to_the_snapshot() {
        let mut log = ChangeLog::default();
        log.record("a", 1, None, 0);
        log.record("b", 2, None, 0);
        log.record("a", 3, Some(1), 0);
        log.record("a", 4, Some(3), 0);
        assert_eq!(
            ids(&log, Bound::Unbounded, 2),
            vec![(1, "a".into()), (2, "b".into())]
        );
        assert_eq!(
            ids(&log, Bound::Unbounded, 3),
            vec![(2, "b".into()), (3, "a".into())]
        );
        assert_eq!(ids(&log, Bound::Excluded(2), 4), vec![(4, "a".into())]);
        assert!(ids(&log, Bound::Excluded(4), 4).is_empty());
    }

    #[test]
    fn superseded_entries_go_once_older_than_the_horizon() {
        let mut log = ChangeLog::default();
        log.record("a", 1, None, 10);
        log.record("a", 2, Some(1), 20);
        log.record("a", 3, Some(2), 30);
        log.prune(25);
        assert_eq!(log.len(), 2, "the entry superseded at 20 is gone");
        assert_eq!(ids(&log, Bound::Unbounded, 3), vec![(3, "a".into())]);
        log.prune(i64::MAX);
        assert_eq!(log.len(), 1, "the latest entry always stays");
    }
}
