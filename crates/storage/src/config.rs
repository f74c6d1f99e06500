//! Per-log settings, and the clock the log reads for rolling, retention and interval flushes.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// When appended data is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// fsync before an append returns; concurrent appenders share one fsync.
    Always,
    /// fsync when an append or [`crate::Log::flush_if_due`] finds this many ms since the last.
    IntervalMs(i64),
    /// Left to the operating system (and to rolls, which always sync the sealed segment).
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A segment is rolled before it would grow past this many bytes.
    pub segment_bytes: u64,
    /// A segment is rolled once this many ms have passed since its first append.
    pub segment_ms: i64,
    /// Bytes of log between two offset index entries.
    pub index_interval_bytes: u64,
    /// Retention deletes the oldest segments while the rest still hold this many bytes.
    pub retention_bytes: Option<u64>,
    /// Retention deletes segments whose newest data is older than this.
    pub retention_ms: Option<i64>,
    /// The largest batch an append accepts.
    pub max_batch_bytes: usize,
    pub flush: FlushPolicy,
}

/// Kafka's `message.max.bytes` default: 1 MiB of records plus batch overhead.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 1_048_588;

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            retention_bytes: None,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            flush: FlushPolicy::Never,
        }
    }
}

impl LogConfig {
    /// Positions in the offset index are 32-bit, so a segment can hold at most 2 GiB.
    pub const MAX_SEGMENT_BYTES: u64 = i32::MAX as u64;

    /// Checks the settings, so that a bad flag is a clear error and not odd behaviour later.
    pub fn validate(&self) -> Result<(), String> {
        if self.segment_bytes < 1024 || self.segment_bytes > Self::MAX_SEGMENT_BYTES {
            return Err(format!(
                "segment_bytes {} must be between 1024 and {}",
                self.segment_bytes,
                Self::MAX_SEGMENT_BYTES
            ));
        }
        if self.segment_ms <= 0 {
            return Err(format!("segment_ms {} must be positive", self.segment_ms));
        }
        if self.index_interval_bytes == 0 {
            return Err("index_interval_bytes must be positive".into());
        }
        if self.max_batch_bytes < crate::batch::HEADER_LEN {
            return Err(format!(
                "max_batch_bytes {} cannot hold a batch header",
                self.max_batch_bytes
            ));
        }
        if let FlushPolicy::IntervalMs(ms) = self.flush {
            if ms <= 0 {
                return Err(format!("flush interval {ms} ms must be positive"));
            }
        }
        if let Some(ms) = self.retention_ms {
            if ms < 0 {
                return Err(format!("retention_ms {ms} must not be negative"));
            }
        }
        Ok(())
    }
}

/// How [`crate::Log::compact`] cleans a key-value table's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionConfig {
    /// A tombstone (null value) that is the latest record of its key is removed once its
    /// batch's max timestamp is more than this many ms before `now_ms` (Kafka's
    /// `delete.retention.ms`). A batch without a timestamp keeps its tombstones.
    pub tombstone_retention_ms: i64,
    /// The last this-many batches of each idempotent producer are kept, at least as a bare
    /// header, so that the producer table rebuilt from the log still recognises retries
    /// (the replication core remembers 5 per producer, as Kafka does).
    pub producer_batches_retained: usize,
    /// Adjacent cleaned segments are merged into one file while their total stays within this.
    pub max_segment_bytes: u64,
}

impl Default for CompactionConfig {
    fn default() -> CompactionConfig {
        CompactionConfig {
            tombstone_retention_ms: 24 * 3600 * 1000,
            producer_batches_retained: 5,
            max_segment_bytes: 1 << 30,
        }
    }
}

impl CompactionConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.tombstone_retention_ms < 0 {
            return Err(format!(
                "tombstone_retention_ms {} must not be negative",
                self.tombstone_retention_ms
            ));
        }
        if self.max_segment_bytes == 0 || self.max_segment_bytes > LogConfig::MAX_SEGMENT_BYTES {
            return Err(format!(
                "max_segment_bytes {} must be between 1 and {}",
                self.max_segment_bytes,
                LogConfig::MAX_SEGMENT_BYTES
            ));
        }
        Ok(())
    }
}

/// Milliseconds since the Unix epoch, as the log sees them.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

/// A clock moved by hand: tests and the simulator.
#[derive(Debug, Default, Clone)]
pub struct ManualClock {
    now_ms: Arc<AtomicI64>,
}

impl ManualClock {
    pub fn new(now_ms: i64) -> ManualClock {
        ManualClock {
            now_ms: Arc::new(AtomicI64::new(now_ms)),
        }
    }
    pub fn set(&self, now_ms: i64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }
    pub fn advance(&self, ms: i64) {
        self.now_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}
