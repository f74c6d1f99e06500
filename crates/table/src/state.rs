//! A table's state on one replica: the committed map that reads see, and the writes above
//! the HW that only the leader's compare-and-set looks at.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;

use bytes::Bytes;

use crate::records::Write;

/// A key's current value and its version (the offset of the record that wrote it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Bytes,
    pub version: i64,
    /// The leader epoch of the batch that wrote it (for the token a read returns).
    pub leader_epoch: i32,
}

/// A truncation went below what the table had already applied (possible only after an
/// unclean election): the committed map must be rebuilt from the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the log was cut to {offset}, below the {applied} offsets the table had applied")]
pub struct TruncatedCommitted {
    pub offset: i64,
    pub applied: i64,
}

/// What the leader's latest appended state says of a key, for a compare-and-set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CasCheck {
    /// The key's latest version in the log (committed or not); `None` if absent or deleted.
    pub current: Option<i64>,
    /// When that state comes from a write above the HW: the offset the HW must pass before a
    /// "mismatch" answer may be given (a client must not see a state no read can see yet).
    pub uncommitted_until: Option<i64>,
}

/// One page of a scan, in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPage {
    pub entries: Vec<(Bytes, Entry)>,
    /// The key to continue from (inclusive) when the page was cut by its limit.
    pub next: Option<Bytes>,
}

/// The table on one replica.
#[derive(Debug, Clone, Default)]
pub struct Table {
    committed: BTreeMap<Bytes, Entry>,
    /// Every offset below this is applied to `committed` (the replica's HW, as far as the
    /// table is concerned).
    applied: i64,
    /// Writes in the log at or above `applied`, in offset order.
    uncommitted: VecDeque<Write>,
}

impl Table {
    /// An empty table whose log starts at `start_offset`.
    pub fn new(start_offset: i64) -> Table {
        Table {
            committed: BTreeMap::new(),
            applied: start_offset,
            uncommitted: VecDeque::new(),
        }
    }

    /// A table restored from a snapshot covering every offset below `applied`.
    pub fn from_committed(committed: BTreeMap<Bytes, Entry>, applied: i64) -> Table {
        Table {
            committed,
            applied,
            uncommitted: VecDeque::new(),
        }
    }

    /// Offsets below this are applied.
    pub fn applied_offset(&self) -> i64 {
        self.applied
    }

    pub fn len(&self) -> usize {
        self.committed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.committed.is_empty()
    }

    pub fn committed(&self) -> &BTreeMap<Bytes, Entry> {
        &self.committed
    }

    /// Writes that reached the log, in offset order. Writes below what is already applied
    /// (a replay overlapping a snapshot) are ignored.
    pub fn append(&mut self, writes: impl IntoIterator<Item = Write>) {
        for write in writes {
            let after_last = self
                .uncommitted
                .back()
                .is_none_or(|w| write.offset > w.offset);
            if write.offset >= self.applied && after_last {
                self.uncommitted.push_back(write);
            }
        }
    }

    /// The HW reached `high_watermark`: apply every write below it.
    pub fn commit_to(&mut self, high_watermark: i64) {
        while self
            .uncommitted
            .front()
            .is_some_and(|w| w.offset < high_watermark)
        {
            if let Some(write) = self.uncommitted.pop_front() {
                self.apply(write);
            }
        }
        self.applied = self.applied.max(high_watermark);
    }

    fn apply(&mut self, write: Write) {
        match write.value {
            Some(value) => {
                self.committed.insert(
                    write.key,
                    Entry {
                        value,
                        version: write.offset,
                        leader_epoch: write.leader_epoch,
                    },
                );
            }
            None => {
                self.committed.remove(&write.key);
            }
        }
    }

    /// The log was cut at `offset`: forget the writes from there on. Cutting below what is
    /// applied cannot be undone here; the caller rebuilds the table from the log.
    pub fn truncate(&mut self, offset: i64) -> Result<(), TruncatedCommitted> {
        if offset < self.applied {
            return Err(TruncatedCommitted {
                offset,
                applied: self.applied,
            });
        }
        while self.uncommitted.back().is_some_and(|w| w.offset >= offset) {
            self.uncommitted.pop_back();
        }
        Ok(())
    }

    /// The log was emptied and restarts at `offset`.
    pub fn reset(&mut self, offset: i64) {
        *self = Table::new(offset);
    }

    /// The committed value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.committed.get(key)
    }

    /// Up to `limit` committed entries with keys in `[from, to)` (`to = None`: no end) that
    /// start with `prefix`, in key order.
    pub fn scan(&self, prefix: &[u8], from: &[u8], to: Option<&[u8]>, limit: usize) -> ScanPage {
        let start = if from > prefix { from } else { prefix };
        let range = (
            Bound::Included(Bytes::copy_from_slice(start)),
            Bound::<Bytes>::Unbounded,
        );
        // Mutation (tandem-sim's scan-reads check): scan the latest appended state, writes
        // above the HW included (a dirty read a get does not make).
        #[cfg(feature = "mutation-scan-sees-uncommitted")]
        let latest = {
            let mut latest = self.committed.clone();
            for w in &self.uncommitted {
                match &w.value {
                    Some(value) => {
                        let entry = Entry {
                            value: value.clone(),
                            version: w.offset,
                            leader_epoch: w.leader_epoch,
                        };
                        latest.insert(w.key.clone(), entry);
                    }
                    None => {
                        latest.remove(&w.key);
                    }
                }
            }
            latest
        };
        #[cfg(feature = "mutation-scan-sees-uncommitted")]
        let map = &latest;
        #[cfg(not(feature = "mutation-scan-sees-uncommitted"))]
        let map = &self.committed;
        let mut entries = Vec::new();
        let mut next = None;
        for (key, entry) in map.range(range) {
            if !key.starts_with(prefix) || to.is_some_and(|to| key.as_ref() >= to) {
                break;
            }
            if entries.len() == limit {
                next = Some(key.clone());
                break;
            }
            entries.push((key.clone(), entry.clone()));
        }
        ScanPage { entries, next }
    }

    /// The key's state in the latest appended log, for a compare-and-set on the leader.
    pub fn cas_check(&self, key: &[u8]) -> CasCheck {
        match self.uncommitted.iter().rev().find(|w| w.key == key) {
            Some(w) => CasCheck {
                current: w.value.as_ref().map(|_| w.offset),
                uncommitted_until: Some(w.offset + 1),
            },
            None => CasCheck {
                current: self.committed.get(key).map(|e| e.version),
                uncommitted_until: None,
            },
        }
    }

    /// Writes waiting for the HW.
    pub fn uncommitted_len(&self) -> usize {
        self.uncommitted.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(offset: i64, key: &str, value: &str) -> Write {
        Write {
            offset,
            leader_epoch: 1,
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
        }
    }

    fn del(offset: i64, key: &str) -> Write {
        Write {
            offset,
            leader_epoch: 1,
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: None,
        }
    }

    fn value(t: &Table, key: &str) -> Option<(String, i64)> {
        t.get(key.as_bytes())
            .map(|e| (String::from_utf8_lossy(&e.value).into_owned(), e.version))
    }

    #[test]
    fn only_committed_writes_are_visible() {
        let mut t = Table::new(0);
        t.append([put(0, "a", "1"), put(1, "a", "2"), del(2, "b")]);
        assert_eq!(value(&t, "a"), None);
        t.commit_to(1);
        assert_eq!(value(&t, "a"), Some(("1".into(), 0)));
        t.commit_to(3);
        assert_eq!(value(&t, "a"), Some(("2".into(), 1)));
        assert_eq!(t.applied_offset(), 3);
        t.append([del(3, "a")]);
        t.commit_to(4);
        assert_eq!(value(&t, "a"), None);
    }

    #[test]
    fn truncation_drops_uncommitted_writes_and_refuses_committed_ones() {
        let mut t = Table::new(0);
        t.append([put(0, "a", "1"), put(1, "a", "2"), put(2, "a", "3")]);
        t.commit_to(1);
        assert_eq!(t.truncate(2), Ok(()));
        assert_eq!(t.cas_check(b"a").current, Some(1));
        t.commit_to(5);
        assert_eq!(value(&t, "a"), Some(("2".into(), 1)));
        assert_eq!(
            t.truncate(1),
            Err(TruncatedCommitted {
                offset: 1,
                applied: 5
            })
        );
    }

    #[test]
    fn cas_sees_the_latest_appended_state() {
        let mut t = Table::new(0);
        t.append([put(0, "a", "1")]);
        t.commit_to(1);
        assert_eq!(
            t.cas_check(b"a"),
            CasCheck {
                current: Some(0),
                uncommitted_until: None
            }
        );
        t.append([del(1, "a")]);
        assert_eq!(
            t.cas_check(b"a"),
            CasCheck {
                current: None,
                uncommitted_until: Some(2)
            }
        );
        assert_eq!(t.cas_check(b"zz").current, None);
    }

    #[test]
    fn replays_below_the_applied_offset_are_ignored() {
        let mut t = Table::new(0);
        t.append([put(0, "a", "1"), put(1, "b", "1")]);
        t.commit_to(2);
        t.append([put(1, "b", "stale"), put(2, "c", "1")]);
        t.commit_to(3);
        assert_eq!(value(&t, "b"), Some(("1".into(), 1)));
        assert_eq!(value(&t, "c"), Some(("1".into(), 2)));
    }

    #[test]
    fn scans_by_prefix_and_range_with_continuation() {
        let mut t = Table::new(0);
        let keys = ["a", "b1", "b2", "b3", "c"];
        t.append(keys.iter().enumerate().map(|(i, k)| put(i as i64, k, "v")));
        t.commit_to(5);
        let keys_of = |p: &ScanPage| -> Vec<String> {
            p.entries
                .iter()
                .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
                .collect()
        };
        let page = t.scan(b"b", b"", None, 2);
        assert_eq!(keys_of(&page), ["b1", "b2"]);
        assert_eq!(page.next.as_deref(), Some(&b"b3"[..]));
        let page = t.scan(b"b", b"b3", None, 2);
        assert_eq!(keys_of(&page), ["b3"]);
        assert_eq!(page.next, None);
        let page = t.scan(b"", b"a", Some(b"b3"), 10);
        assert_eq!(keys_of(&page), ["a", "b1", "b2"]);
    }
}
