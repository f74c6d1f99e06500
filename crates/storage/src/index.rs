//! Sparse per-segment indexes. Both are derived from the segment's batches, so a missing or
//! damaged index file is rebuilt by scanning the segment, never trusted blindly.
//!
//! - offset index: (offset relative to the segment base, byte position of the batch that
//!   starts there), one entry per `index_interval_bytes` of log; 8 bytes on disk.
//! - time index: (largest timestamp so far in the segment, relative offset of the batch that
//!   set it), added beside offset entries when the largest timestamp grew; 12 bytes on disk.

/// Offset index entry: the batch starting at `relative_offset` begins at byte `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// Time index entry: batches up to the one at `relative_offset` have timestamps ≤ `timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<OffsetEntry>,
}

impl OffsetIndex {
    pub fn push(&mut self, entry: OffsetEntry) {
        if let Some(last) = self.entries.last() {
            assert!(entry.relative_offset > last.relative_offset && entry.position > last.position);
        }
        self.entries.push(entry);
    }

    pub fn last(&self) -> Option<OffsetEntry> {
        self.entries.last().copied()
    }

    pub fn entries(&self) -> &[OffsetEntry] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The last entry at or below `relative_offset`: where a scan for it should start.
    pub fn floor(&self, relative_offset: u32) -> Option<OffsetEntry> {
        let i = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        i.checked_sub(1).map(|i| self.entries[i])
    }

    /// Drops entries for batches at or after `position` (the segment was cut there).
    pub fn truncate_to_position(&mut self, position: u32) {
        let keep = self.entries.partition_point(|e| e.position < position);
        self.entries.truncate(keep);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 8);
        for e in &self.entries {
            out.extend_from_slice(&e.relative_offset.to_be_bytes());
            out.extend_from_slice(&e.position.to_be_bytes());
        }
        out
    }

    /// Parses an index file and checks it against the segment it indexes.
    pub fn decode(data: &[u8], segment_len: u64) -> Result<OffsetIndex, String> {
        if data.len() % 8 != 0 {
            return Err(format!("length {} is not a multiple of 8", data.len()));
        }
        let mut index = OffsetIndex::default();
        for chunk in data.chunks_exact(8) {
            let entry = OffsetEntry {
                relative_offset: u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
                position: u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]),
            };
            if let Some(last) = index.last() {
                if entry.relative_offset <= last.relative_offset || entry.position <= last.position
                {
                    return Err(format!("entry {entry:?} does not follow {last:?}"));
                }
            }
            if entry.position as u64 >= segment_len {
                return Err(format!(
                    "entry {entry:?} points past the segment ({segment_len} bytes)"
                ));
            }
            index.entries.push(entry);
        }
        Ok(index)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<TimeEntry>,
}

impl TimeIndex {
    /// Adds an entry if `timestamp` is larger than every entry so far.
    pub fn maybe_push(&mut self, entry: TimeEntry) {
        match self.entries.last() {
            Some(last) if entry.timestamp <= last.timestamp => {}
            Some(last) if entry.relative_offset < last.relative_offset => {}
            _ => self.entries.push(entry),
        }
    }

    pub fn last(&self) -> Option<TimeEntry> {
        self.entries.last().copied()
    }

    /// The last entry whose timestamp is below `timestamp`: every batch up to its offset is
    /// older than `timestamp`, so a search may start there.
    pub fn last_below(&self, timestamp: i64) -> Option<TimeEntry> {
        let i = self.entries.partition_point(|e| e.timestamp < timestamp);
        i.checked_sub(1).map(|i| self.entries[i])
    }

    /// Drops entries for offsets at or after `relative_offset`.
    pub fn truncate_to_offset(&mut self, relative_offset: u32) {
        let keep = self
            .entries
            .partition_point(|e| e.relative_offset < relative_offset);
        self.entries.truncate(keep);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 12);
        for e in &self.entries {
            out.extend_from_slice(&e.timestamp.to_be_bytes());
            out.extend_from_slice(&e.relative_offset.to_be_bytes());
        }
        out
    }

    /// Parses a time index file; `max_relative_offset` bounds the offsets it may name.
    pub fn decode(data: &[u8], max_relative_offset: u32) -> Result<TimeIndex, String> {
        if data.len() % 12 != 0 {
            return Err(format!("length {} is not a multiple of 12", data.len()));
        }
        let mut index = TimeIndex::default();
        for chunk in data.chunks_exact(12) {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&chunk[..8]);
            let entry = TimeEntry {
                timestamp: i64::from_be_bytes(ts),
                relative_offset: u32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]),
            };
            if let Some(last) = index.last() {
                if entry.timestamp <= last.timestamp || entry.relative_offset < last.relative_offset
                {
                    return Err(format!("entry {entry:?} does not follow {last:?}"));
                }
            }
            if entry.relative_offset > max_relative_offset {
                return Err(format!("entry {entry:?} names an offset past the segment"));
            }
            index.entries.push(entry);
        }
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_floor_and_round_trip() {
        let mut idx = OffsetIndex::default();
        idx.push(OffsetEntry {
            relative_offset: 10,
            position: 4096,
        });
        idx.push(OffsetEntry {
            relative_offset: 20,
            position: 8200,
        });
        assert_eq!(idx.floor(5), None);
        assert_eq!(idx.floor(10).unwrap().position, 4096);
        assert_eq!(idx.floor(19).unwrap().position, 4096);
        assert_eq!(idx.floor(99).unwrap().position, 8200);
        assert_eq!(OffsetIndex::decode(&idx.encode(), 9000).unwrap(), idx);
        assert!(
            OffsetIndex::decode(&idx.encode(), 8200).is_err(),
            "points past the end"
        );
        assert!(OffsetIndex::decode(&idx.encode()[..7], 9000).is_err());
        let mut swapped = idx.encode();
        swapped.rotate_left(8);
        assert!(
            OffsetIndex::decode(&swapped, 9000).is_err(),
            "not increasing"
        );
        idx.truncate_to_position(8200);
        assert_eq!(idx.len(), 1);
    }

    #[test]
    fn time_index_only_grows() {
        let mut idx = TimeIndex::default();
        idx.maybe_push(TimeEntry {
            timestamp: 100,
            relative_offset: 0,
        });
        idx.maybe_push(TimeEntry {
            timestamp: 90,
            relative_offset: 5,
        });
        idx.maybe_push(TimeEntry {
            timestamp: 200,
            relative_offset: 9,
        });
        assert_eq!(idx.encode().len(), 24);
        assert_eq!(idx.last_below(150).unwrap().relative_offset, 0);
        assert_eq!(idx.last_below(100), None);
        assert_eq!(TimeIndex::decode(&idx.encode(), 9).unwrap(), idx);
        assert!(TimeIndex::decode(&idx.encode(), 8).is_err());
    }
}
