//! The leader-epoch cache: for each leader epoch, the first offset written in it.
//!
//! This is what lets a follower find where its log diverges from a new leader's (DESIGN.md
//! rule 6, Kafka's KIP-101 and KIP-279) instead of truncating to its high watermark. Pure data;
//! the log persists it with an atomic checkpoint after every change.

use std::fmt::Write as _;

/// Epoch and offset of an epoch cache entry, or the answer to an end-offset query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// An epoch that would make the cache go backwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("epoch {epoch} at offset {start_offset} is not after the latest entry (epoch {latest_epoch} at offset {latest_start_offset})")]
pub struct NonMonotonicEpoch {
    pub epoch: i32,
    pub start_offset: i64,
    pub latest_epoch: i32,
    pub latest_start_offset: i64,
}

/// Entries sorted by epoch and by start offset, both strictly increasing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochCache {
    entries: Vec<EpochEntry>,
}

impl EpochCache {
    pub fn new() -> EpochCache {
        EpochCache::default()
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.latest().map(|e| e.epoch)
    }

    /// First offset of `epoch`, if the cache knows it.
    pub fn start_offset_of(&self, epoch: i32) -> Option<i64> {
        self.entries
            .iter()
            .find(|e| e.epoch == epoch)
            .map(|e| e.start_offset)
    }

    /// Records that `epoch` starts at `start_offset`. Returns whether the cache changed: an
    /// epoch equal to the latest is already known and changes nothing.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<bool, NonMonotonicEpoch> {
        if let Some(latest) = self.latest() {
            if epoch == latest.epoch && start_offset >= latest.start_offset {
                return Ok(false);
            }
            if epoch <= latest.epoch || start_offset < latest.start_offset {
                return Err(NonMonotonicEpoch {
                    epoch,
                    start_offset,
                    latest_epoch: latest.epoch,
                    latest_start_offset: latest.start_offset,
                });
            }
            if start_offset == latest.start_offset {
                // The previous epoch wrote nothing: it owns no offsets, so it is replaced.
                self.entries.pop();
            }
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        Ok(true)
    }

    /// The log was cut to `end_offset`: forget epochs that start at or after it.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end_offset);
        before != self.entries.len()
    }

    /// The log now starts at `start_offset`: drop epochs wholly before it, and move the start
    /// of the epoch that contains it up to it.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let below = self
            .entries
            .iter()
            .take_while(|e| e.start_offset <= start_offset)
            .count();
        if below == 0 {
            return false;
        }
        let containing = self.entries[below - 1];
        let changed = below > 1 || containing.start_offset != start_offset;
        self.entries.drain(..below);
        self.entries.insert(
            0,
            EpochEntry {
                epoch: containing.epoch,
                start_offset,
            },
        );
        changed
    }

    /// Kafka's `endOffsetFor`: the largest epoch ≤ `epoch` that this log knows, and the offset
    /// where it ends here (the start of the next higher epoch, or `log_end_offset` if `epoch` is
    /// the latest). `None` when `epoch` is newer than anything known, or the cache is empty.
    /// When `epoch` is older than every entry, the answer is (`epoch`, start of the first entry):
    /// the follower must truncate to where this log's known history begins.
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: i64) -> Option<EpochEntry> {
        let latest = self.latest()?;
        if epoch == latest.epoch {
            return Some(EpochEntry {
                epoch,
                start_offset: log_end_offset,
            });
        }
        let higher = self.entries.iter().find(|e| e.epoch > epoch)?;
        let floor = self.entries.iter().rev().find(|e| e.epoch <= epoch);
        Some(EpochEntry {
            epoch: floor.map_or(epoch, |f| f.epoch),
            start_offset: higher.start_offset,
        })
    }

    /// The leader epoch that wrote `offset`, by the cache.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.start_offset <= offset)
            .map(|e| e.epoch)
    }

    /// Checkpoint file text: a version line, a count line, then `epoch start_offset` lines.
    pub fn encode(&self) -> String {
        let mut out = format!("0\n{}\n", self.entries.len());
        for e in &self.entries {
            let _ = writeln!(out, "{} {}", e.epoch, e.start_offset);
        }
        out
    }

    /// Parses [`EpochCache::encode`]'s output, checking that it is well-formed and monotonic.
    pub fn decode(text: &str) -> Result<EpochCache, String> {
        let mut lines = text.lines();
        match lines.next() {
            Some("0") => {}
            other => return Err(format!("unknown version line {other:?}")),
        }
        let count: usize = lines
            .next()
            .and_then(|l| l.parse().ok())
            .ok_or("missing or bad count line")?;
        let mut cache = EpochCache::new();
        for i in 0..count {
            let line = lines
                .next()
                .ok_or(format!("expected {count} entries, found {i}"))?;
            let mut parts = line.split(' ');
            let (Some(epoch), Some(start), None) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(format!("bad entry line {line:?}"));
            };
            let epoch: i32 = epoch
                .parse()
                .map_err(|_| format!("bad epoch in {line:?}"))?;
            let start: i64 = start
                .parse()
                .map_err(|_| format!("bad offset in {line:?}"))?;
            if epoch < 0 || start < 0 {
                return Err(format!("negative value in {line:?}"));
            }
            match cache.assign(epoch, start) {
                Ok(true) => {}
                _ => return Err(format!("entry {line:?} is not after the one before it")),
            }
        }
        if lines.any(|l| !l.is_empty()) {
            return Err("text after the last entry".into());
        }
        Ok(cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> EpochCache {
        let mut c = EpochCache::new();
        for &(e, o) in entries {
            c.assign(e, o).unwrap();
        }
        c
    }

    #[test]
    fn assign_refuses_to_go_backwards() {
        let mut c = cache(&[(1, 0), (3, 10)]);
        assert!(c.assign(2, 20).is_err(), "older epoch");
        assert!(c.assign(4, 5).is_err(), "earlier offset");
        assert_eq!(c.assign(3, 15), Ok(false), "same epoch is a no-op");
        assert_eq!(c.assign(4, 10), Ok(true));
        // Epoch 3 owned no offsets, so it is gone.
        assert_eq!(c.entries().len(), 2);
        assert_eq!(c.latest_epoch(), Some(4));
    }

    #[test]
    fn end_offset_follows_kafka() {
        let c = cache(&[(1, 0), (3, 10), (5, 20)]);
        let q = |e| c.end_offset_for(e, 30).map(|x| (x.epoch, x.start_offset));
        assert_eq!(q(5), Some((5, 30)), "latest epoch ends at the log end");
        assert_eq!(q(3), Some((3, 20)));
        assert_eq!(
            q(4),
            Some((3, 20)),
            "unknown epoch answers with the largest smaller one"
        );
        assert_eq!(q(1), Some((1, 10)));
        assert_eq!(q(0), Some((0, 0)), "older than all: the start of the first");
        assert_eq!(q(6), None, "newer than all");
        assert_eq!(EpochCache::new().end_offset_for(1, 0), None);
    }

    #[test]
    fn truncation_from_both_ends() {
        let mut c = cache(&[(1, 0), (3, 10), (5, 20)]);
        assert!(c.truncate_from_end(20));
        assert_eq!(c.latest_epoch(), Some(3));
        assert!(!c.truncate_from_end(25));
        let mut c = cache(&[(1, 0), (3, 10), (5, 20)]);
        assert!(c.truncate_from_start(15));
        assert_eq!(
            c.entries(),
            &[
                EpochEntry {
                    epoch: 3,
                    start_offset: 15
                },
                EpochEntry {
                    epoch: 5,
                    start_offset: 20
                }
            ]
        );
        assert!(!c.truncate_from_start(15));
    }

    #[test]
    fn checkpoint_text_round_trips_and_rejects_damage() {
        let c = cache(&[(1, 0), (3, 10)]);
        assert_eq!(EpochCache::decode(&c.encode()).unwrap(), c);
        for bad in [
            "",
            "1\n0\n",
            "0\n2\n1 0\n",
            "0\n2\n3 10\n1 0\n",
            "0\n1\n1 x\n",
            "0\n1\n1 0\njunk",
        ] {
            assert!(EpochCache::decode(bad).is_err(), "{bad:?} accepted");
        }
    }
}
