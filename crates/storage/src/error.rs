//! Errors of the storage engine. Bad input (a malformed batch, an offset out of range, an
//! epoch going backwards, a directory that is not a log) and failing disks are values a caller
//! can act on; none of them panics.

use std::io;

use crate::batch::BatchError;
use crate::epoch::NonMonotonicEpoch;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("offset {offset} is out of range: the log holds offsets [{log_start_offset}, {log_end_offset})")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    #[error("batch of {size} bytes exceeds the limit of {max} bytes")]
    BatchTooLarge { size: usize, max: usize },
    #[error("invalid batch at byte {position} of the append: {source}")]
    InvalidBatch {
        position: usize,
        #[source]
        source: BatchError,
    },
    #[error("append holds no batches")]
    EmptyAppend,
    #[error("replicated batch starts at offset {got}, but the log ends at {expected}")]
    NonContiguous { expected: i64, got: i64 },
    #[error(transparent)]
    NonMonotonicEpoch(#[from] NonMonotonicEpoch),
    #[error("{path} is not a Tandem log directory: {reason}")]
    NotALog { path: String, reason: String },
    #[error(
        "corrupt checkpoint {file} in {dir}: {reason} (remove it to rebuild it from the segments)"
    )]
    CorruptCheckpoint {
        dir: String,
        file: String,
        reason: String,
    },
    #[error(
        "corrupt batch in {dir}/{segment} at byte {position}: {reason} (run `tandem log check`)"
    )]
    CorruptSegment {
        dir: String,
        segment: String,
        position: u64,
        reason: String,
    },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("the batch at offset {offset} was truncated before it was synced")]
    TruncatedBeforeFlush { offset: i64 },
    #[error(
        "the log in {dir} could not undo a failed append and refuses changes until it is reopened"
    )]
    Poisoned { dir: String },
    #[error("I/O error {action} in {dir}: {source}")]
    Io {
        action: String,
        dir: String,
        #[source]
        source: io::Error,
    },
}

impl StorageError {
    /// The disk is full: the append was refused and the log is unchanged.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StorageError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull)
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Attaches what the engine was doing, and where, to an I/O error.
pub(crate) trait IoContext<T> {
    fn context(self, dir: &str, action: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, dir: &str, action: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| StorageError::Io {
            action: action(),
            dir: dir.to_string(),
            source,
        })
    }
}
