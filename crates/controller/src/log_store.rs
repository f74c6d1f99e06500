//! The Raft log of the controller quorum, kept in a tandem-storage log.
//!
//! ```text
//!  raft log index i  <->  offset i of a SegmentedLog (flush policy Always)
//!  entry i           ==   one Kafka v2 batch at base offset i, leader epoch = Raft term,
//!                         holding one record whose value is the postcard-encoded entry
//!  truncate(i)       ==   Log::truncate_to(i)             (conflicting suffix, durably)
//!  purge(i)          ==   write "raft-purged", then Log::advance_log_start(i + 1)
//!                         (or truncate_fully_and_start_at(i + 1) when i is past the end)
//!  vote              ==   Directory::write_atomic("raft-vote")
//! ```
//!
//! An append returns only once its batches are fsynced (one fsync for all entries of one
//! call), so an acknowledged append survives a crash. Stamping the term as the batch's leader
//! epoch makes the storage engine's epoch cache mirror the Raft terms, and `tandem log dump`
//! shows them.
//!
//! Storage calls are synchronous inside the async trait methods: metadata entries are small and
//! a metadata fsync is the same cost wherever it runs.

// openraft's traits fix these error types; helpers return what the traits return.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, RaftLogId, StorageIOError};
use parking_lot::Mutex;
use tandem_storage::{
    batch, BatchBuilder, Directory, FlushPolicy, Log, LogConfig, SegmentedLog, SystemClock,
};

use crate::raft_types::{Entry, LogId, RaftStorageError, TypeConfig, Vote};

pub const VOTE_FILE: &str = "raft-vote";
pub const PURGED_FILE: &str = "raft-purged";
/// Read size when fetching entries.
const READ_BYTES: usize = 1 << 20;

/// Settings of the Raft log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftLogConfig {
    /// Segment size: purging frees space a segment at a time.
    pub segment_bytes: u64,
    /// The largest entry.
    pub max_entry_bytes: usize,
}

impl Default for RaftLogConfig {
    fn default() -> RaftLogConfig {
        RaftLogConfig {
            segment_bytes: 8 << 20,
            max_entry_bytes: 16 << 20,
        }
    }
}

/// Errors opening the Raft storage.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Storage(#[from] tandem_storage::StorageError),
    #[error("I/O error reading {file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt {file}: {reason}")]
    Corrupt { file: String, reason: String },
}

/// The Raft log and vote; clones share the same log (openraft's replication tasks read it).
pub struct RaftLogStore<D: Directory> {
    inner: Arc<Inner<D>>,
}

impl<D: Directory> Clone for RaftLogStore<D> {
    fn clone(&self) -> Self {
        RaftLogStore {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<D: Directory> {
    log: SegmentedLog<D>,
    /// Where the vote and purge checkpoints live (not the log's own directory).
    checkpoints: Arc<D>,
    state: Mutex<LogIds>,
}

#[derive(Debug, Clone, Copy, Default)]
struct LogIds {
    vote: Option<Vote>,
    last_purged: Option<LogId>,
    last_log_id: Option<LogId>,
}

pub(crate) fn read_checkpoint<D: Directory, T: serde::de::DeserializeOwned>(
    dir: &D,
    file: &str,
) -> Result<Option<T>, OpenError> {
    let Some(data) = dir.read(file).map_err(|source| OpenError::Io {
        file: file.to_string(),
        source,
    })?
    else {
        return Ok(None);
    };
    postcard::from_bytes(&data)
        .map(Some)
        .map_err(|e| OpenError::Corrupt {
            file: file.to_string(),
            reason: e.to_string(),
        })
}

fn io_err(
    verb: ErrorVerb,
    subject: ErrorSubject<u64>,
    e: impl std::error::Error + 'static,
) -> RaftStorageError {
    StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}

fn write_err(e: impl std::error::Error + 'static) -> RaftStorageError {
    io_err(ErrorVerb::Write, ErrorSubject::Logs, e)
}

fn read_err(e: impl std::error::Error + 'static) -> RaftStorageError {
    io_err(ErrorVerb::Read, ErrorSubject::Logs, e)
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Invalid(String);

impl<D: Directory> RaftLogStore<D> {
    /// Opens (or creates) the Raft log in `log_dir`, with its checkpoints in `checkpoints`.
    pub fn open(
        log_dir: D,
        checkpoints: Arc<D>,
        config: &RaftLogConfig,
    ) -> Result<Self, OpenError> {
        let log_config = LogConfig {
            segment_bytes: config.segment_bytes,
            max_batch_bytes: config.max_entry_bytes,
            retention_bytes: None,
            retention_ms: None,
            flush: FlushPolicy::Always,
            ..LogConfig::default()
        };
        let log = SegmentedLog::open(log_dir, log_config, Arc::new(SystemClock))?;
        let vote: Option<Vote> = read_checkpoint(&*checkpoints, VOTE_FILE)?;
        let last_purged: Option<LogId> = read_checkpoint(&*checkpoints, PURGED_FILE)?;
        // A crash between writing the purge checkpoint and moving the log start leaves purged
        // entries in the log: finish the purge.
        if let Some(purged) = last_purged {
            let start = purged.index as i64 + 1;
            if log.log_start_offset() < start {
                if start > log.log_end_offset() {
                    log.truncate_fully_and_start_at(start)?;
                } else {
                    log.advance_log_start(start)?;
                }
            }
        }
        let store = RaftLogStore {
            inner: Arc::new(Inner {
                log,
                checkpoints,
                state: Mutex::new(LogIds {
                    vote,
                    last_purged,
                    last_log_id: None,
                }),
            }),
        };
        let last = store.last_entry_id().map_err(|e| OpenError::Corrupt {
            file: "raft log".into(),
            reason: e.to_string(),
        })?;
        store.inner.state.lock().last_log_id = last.or(last_purged);
        Ok(store)
    }

    /// The underlying log, for tools and tests.
    pub fn log(&self) -> &SegmentedLog<D> {
        &self.inner.log
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, RaftStorageError> {
        let offsets = self.inner.log.offsets();
        if offsets.log_end_offset <= offsets.log_start_offset {
            return Ok(None);
        }
        let last = (offsets.log_end_offset - 1) as u64;
        let entries = self.read_range(last, last + 1)?;
        Ok(entries.last().map(|e| *e.get_log_id()))
    }

    fn read_range(&self, start: u64, end: u64) -> Result<Vec<Entry>, RaftStorageError> {
        let log = &self.inner.log;
        let offsets = log.offsets();
        let start = (start as i64).max(offsets.log_start_offset);
        let end = (end.min(i64::MAX as u64) as i64).min(offsets.log_end_offset);
        let mut entries = Vec::new();
        let mut next = start;
        while next < end {
            let bytes = log.read(next, READ_BYTES).map_err(read_err)?;
            if bytes.is_empty() {
                break;
            }
            for item in batch::split_batches(&bytes) {
                let (header, slice) = item.map_err(read_err)?;
                if header.base_offset < next {
                    continue;
                }
                if header.base_offset >= end {
                    return Ok(entries);
                }
                let records = batch::decode_records(&bytes.slice_ref(slice)).map_err(read_err)?;
                let [record] = records.as_slice() else {
                    return Err(read_err(Invalid(format!(
                        "batch at offset {} holds {} records, a Raft entry is one",
                        header.base_offset,
                        records.len()
                    ))));
                };
                let value = record.value.as_ref().ok_or_else(|| {
                    read_err(Invalid(format!(
                        "entry at offset {} has no value",
                        header.base_offset
                    )))
                })?;
                let entry: Entry = postcard::from_bytes(value).map_err(read_err)?;
                if entry.get_log_id().index != header.base_offset as u64 {
                    return Err(read_err(Invalid(format!(
                        "entry {} stored at offset {}",
                        entry.get_log_id(),
                        header.base_offset
                    ))));
                }
                entries.push(entry);
                next = header.base_offset + 1;
            }
        }
        Ok(entries)
    }

    fn encode(entry: &Entry) -> Result<Vec<u8>, RaftStorageError> {
        let log_id = *entry.get_log_id();
        let value = postcard::to_allocvec(entry).map_err(write_err)?;
        let term = i32::try_from(log_id.leader_id.term).map_err(|_| {
            write_err(Invalid(format!(
                "term {} exceeds a leader epoch",
                log_id.leader_id.term
            )))
        })?;
        let mut builder = BatchBuilder::new(0);
        builder.push(0, None, Some(&value));
        let mut bytes = builder.build();
        batch::set_base_offset(&mut bytes, log_id.index as i64);
        batch::set_leader_epoch(&mut bytes, term);
        Ok(bytes.to_vec())
    }
}

impl<D: Directory> RaftLogReader<TypeConfig> for RaftLogStore<D> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, RaftStorageError> {
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(e) => e.saturating_add(1),
            Bound::Excluded(e) => *e,
            Bound::Unbounded => u64::MAX,
        };
        self.read_range(start, end)
    }
}

impl<D: Directory> RaftLogStorage<TypeConfig> for RaftLogStore<D> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, RaftStorageError> {
        let ids = *self.inner.state.lock();
        Ok(LogState {
            last_purged_log_id: ids.last_purged,
            last_log_id: ids.last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), RaftStorageError> {
        let bytes = postcard::to_allocvec(vote)
            .map_err(|e| io_err(ErrorVerb::Write, ErrorSubject::Vote, e))?;
        // The vote is on disk before it counts: a voter that forgot it could vote twice in a
        // term. The mutation keeps it in memory only.
        #[cfg(not(feature = "mutation-vote-not-persisted"))]
        self.inner
            .checkpoints
            .write_atomic(VOTE_FILE, &bytes)
            .map_err(|e| io_err(ErrorVerb::Write, ErrorSubject::Vote, e))?;
        #[cfg(feature = "mutation-vote-not-persisted")]
        let _ = bytes;
        self.inner.state.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, RaftStorageError> {
        Ok(self.inner.state.lock().vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut bytes = Vec::new();
        let mut first: Option<LogId> = None;
        let mut last: Option<LogId> = None;
        for entry in entries {
            let log_id = *entry.get_log_id();
            if let Some(prev) = last {
                if log_id.index != prev.index + 1 {
                    return Err(write_err(Invalid(format!(
                        "entry {log_id} does not follow {prev}"
                    ))));
                }
            }
            first.get_or_insert(log_id);
            last = Some(log_id);
            bytes.extend_from_slice(&Self::encode(&entry)?);
        }
        let (Some(first), Some(last)) = (first, last) else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let log = &self.inner.log;
        let offsets = log.offsets();
        if first.index as i64 != offsets.log_end_offset {
            if offsets.log_start_offset == offsets.log_end_offset
                && first.index as i64 > offsets.log_end_offset
            {
                // An empty log may start anywhere (after a snapshot install purged it all).
                log.truncate_fully_and_start_at(first.index as i64)
                    .map_err(write_err)?;
            } else {
                return Err(write_err(Invalid(format!(
                    "append of {first} to a log that ends at {}: a hole or an overwrite",
                    offsets.log_end_offset
                ))));
            }
        }
        // FlushPolicy::Always: this returns once the batches are on disk.
        let result = log.append_replicated(&bytes);
        match result {
            Ok(_) => {
                self.inner.state.lock().last_log_id = Some(last);
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let message = e.to_string();
                callback.log_io_completed(Err(std::io::Error::other(message)));
                Err(write_err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        self.inner
            .log
            .truncate_to(log_id.index as i64)
            .map_err(write_err)?;
        let last = self.last_entry_id()?;
        let mut state = self.inner.state.lock();
        state.last_log_id = last.or(state.last_purged);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        // The checkpoint first: a crash before the log start moves is finished at open, while
        // the other order could leave a hole between the purged id and the log start.
        let bytes = postcard::to_allocvec(&log_id).map_err(write_err)?;
        self.inner
            .checkpoints
            .write_atomic(PURGED_FILE, &bytes)
            .map_err(write_err)?;
        let log = &self.inner.log;
        let start = log_id.index as i64 + 1;
        if start > log.log_end_offset() {
            log.truncate_fully_and_start_at(start).map_err(write_err)?;
        } else {
            log.advance_log_start(start).map_err(write_err)?;
        }
        let mut state = self.inner.state.lock();
        state.last_purged = Some(log_id);
        if state.last_log_id.is_none_or(|l| l.index < log_id.index) {
            state.last_log_id = Some(log_id);
        }
        Ok(())
    }
}
