//! Helpers shared by the storage tests.
#![allow(dead_code)]

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tandem_storage::batch::{self, BatchHeader};
use tandem_storage::{
    BatchBuilder, Directory, Log, LogConfig, ManualClock, MemDir, OsDir, SegmentedLog,
};

/// A batch of `count` records with values `{prefix}-{i}` and timestamps from `timestamp`.
pub fn batch(prefix: &str, count: usize, timestamp: i64) -> BytesMut {
    let mut b = BatchBuilder::new(timestamp);
    for i in 0..count {
        b.push(
            timestamp + i as i64,
            Some(format!("k{i}").as_bytes()),
            Some(format!("{prefix}-{i}").as_bytes()),
        );
    }
    b.build()
}

/// A batch whose one record has a value of `value_len` bytes.
pub fn sized_batch(value_len: usize, timestamp: i64) -> BytesMut {
    let mut b = BatchBuilder::new(timestamp);
    b.push(timestamp, None, Some(&vec![b'x'; value_len]));
    b.build()
}

/// Every batch from the log start to the end, read in small steps.
pub fn read_all(log: &dyn Log) -> Vec<(BatchHeader, Bytes)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let bytes = log.read(offset, 1).expect("read inside the log");
        if bytes.is_empty() {
            // No batch from here to the end: a truncation into a gap compaction left ends a
            // log after its last batch (the log end is the truncation offset).
            break;
        }
        for item in batch::split_batches(&bytes) {
            let (header, raw) = item.expect("stored batches are valid");
            out.push((header, Bytes::copy_from_slice(raw)));
            offset = header.next_offset();
        }
    }
    out
}

/// A place to open logs in, with a clock the test moves.
pub trait Harness {
    type D: Directory + Clone;
    fn dir(&self) -> Self::D;
    fn clock(&self) -> &ManualClock;
    fn open(&self, config: LogConfig) -> SegmentedLog<Self::D> {
        SegmentedLog::open(self.dir(), config, Arc::new(self.clock().clone()))
            .expect("open the log")
    }
    fn try_open(&self, config: LogConfig) -> tandem_storage::Result<SegmentedLog<Self::D>> {
        SegmentedLog::open(self.dir(), config, Arc::new(self.clock().clone()))
    }
    /// A second log of the same kind, beside the first (a follower's).
    fn other_dir(&self) -> Self::D;
    fn open_other(&self, config: LogConfig) -> SegmentedLog<Self::D> {
        SegmentedLog::open(self.other_dir(), config, Arc::new(self.clock().clone()))
            .expect("open the other log")
    }
}

pub struct DiskHarness {
    pub temp: tempfile::TempDir,
    pub other: tempfile::TempDir,
    pub clock: ManualClock,
}

impl DiskHarness {
    pub fn new() -> DiskHarness {
        DiskHarness {
            temp: tempfile::tempdir().expect("temp dir"),
            other: tempfile::tempdir().expect("temp dir"),
            clock: ManualClock::new(1_000_000),
        }
    }
}

impl Harness for DiskHarness {
    type D = OsDir;
    fn dir(&self) -> OsDir {
        OsDir::existing(self.temp.path()).expect("temp dir exists")
    }
    fn other_dir(&self) -> OsDir {
        OsDir::existing(self.other.path()).expect("other dir exists")
    }
    fn clock(&self) -> &ManualClock {
        &self.clock
    }
}

pub struct MemHarness {
    pub dir: MemDir,
    pub other: MemDir,
    pub clock: ManualClock,
}

impl MemHarness {
    pub fn new() -> MemHarness {
        MemHarness {
            dir: MemDir::new(),
            other: MemDir::new(),
            clock: ManualClock::new(1_000_000),
        }
    }
}

impl Harness for MemHarness {
    type D = MemDir;
    fn dir(&self) -> MemDir {
        self.dir.clone()
    }
    fn other_dir(&self) -> MemDir {
        self.other.clone()
    }
    fn clock(&self) -> &ManualClock {
        &self.clock
    }
}
