//! Tandem's log storage engine.
//!
//! A partition replica's log is a directory of segment files holding Kafka v2 record batches
//! byte for byte ([`batch`]), with sparse offset and time indexes ([`index`]), the
//! leader-epoch cache ([`epoch`]) and atomically written checkpoints. [`Log`] states the
//! contract; [`SegmentedLog`] implements it over a [`Directory`]: [`DiskLog`] on real files,
//! [`MemLog`] in memory for the simulator, where a crash loses exactly what was not synced.
//! [`inspect`] reads a log directory without changing it, for `tandem log dump|check`.
//! See docs/storage.md for the design and its reasons.

pub mod batch;
pub mod config;
pub mod epoch;
pub mod error;
pub mod fs;
pub mod index;
pub mod inspect;
pub mod log;
pub mod segment;

pub use batch::{BatchBuilder, BatchError, BatchHeader};
pub use config::{Clock, CompactionConfig, FlushPolicy, LogConfig, ManualClock, SystemClock};
pub use epoch::{EpochCache, EpochEntry, NonMonotonicEpoch};
pub use error::{Result, StorageError};
pub use fs::{Directory, MemDir, OsDir, SegmentFile};
pub use log::{
    AppendInfo, CompactionReport, DiskLog, Log, LogOffsets, MemLog, RetentionOutcome, SegmentedLog,
};
