//! The log of one partition replica: the [`Log`] trait with its contract, and
//! [`SegmentedLog`], the engine that implements it over any [`Directory`].
//!
//! ```text
//!  dir/
//!    tandem-log                         marker and format version
//!    00000000000000000000.log           sealed segment: synced at roll
//!    00000000000000000000.index         its offset index   (written at roll)
//!    00000000000000000000.timeindex     its time index     (written at roll)
//!    00000000000000052117.log           active segment: the only one with unsynced bytes
//!    leader-epoch-checkpoint            epoch -> start offset      (atomic rewrite)
//!    high-watermark                     last checkpointed HW       (atomic rewrite)
//!    log-start-offset                   when the log starts inside its first segment
//!    compaction-horizon                 below it the log is whole only as a whole (atomic rewrite)
//!    offset-gaps                        the log may have offset gaps (compaction)
//! ```
//!
//! Locks, always taken in this order: `compaction_lock` (one compaction at a time, held while
//! it reads and writes without the others), `flush_lock` (held across an fsync, and by
//! truncation), `checkpoint_lock` (HW and compaction horizon checkpoint writes, and
//! truncation, which may lower both), `state`.
//! Appends hold `state` only, so they go on while another thread waits on an fsync; the next
//! flusher's fsync then covers all of them (group commit).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tracing::{info, warn};

use crate::batch::{self, BatchError, BatchHeader};
use crate::config::{Clock, CompactionConfig, FlushPolicy, LogConfig, SystemClock};
use crate::epoch::{EpochCache, EpochEntry};
use crate::error::{IoContext, Result, StorageError};
use crate::fs::{Directory, MemDir, OsDir, SegmentFile, TEMP_SUFFIX};
use crate::segment::{self, Segment, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX};

mod compact;

pub const MARKER_FILE: &str = "tandem-log";
const MARKER_CONTENT: &str = "tandem-log 1\n";
pub const EPOCH_FILE: &str = "leader-epoch-checkpoint";
pub const HIGH_WATERMARK_FILE: &str = "high-watermark";
pub const LOG_START_FILE: &str = "log-start-offset";
pub const COMPACTION_HORIZON_FILE: &str = "compaction-horizon";
/// Present once the log may have offset gaps (compacted, or copied from a compacted log):
/// recovery then accepts a batch that starts after the previous one ends.
pub const GAPS_FILE: &str = "offset-gaps";
/// Suffix of a segment file (or index) compaction is writing; residue of a crash if found.
pub const CLEANED_SUFFIX: &str = ".cleaned";
/// Suffix of a cleaned file committed to replace several segments; a crash leaves it for the
/// next open to finish the swap.
pub const SWAP_SUFFIX: &str = ".swap";

/// What an append wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub first_offset: i64,
    pub last_offset: i64,
    pub batch_count: usize,
    pub record_count: i64,
    pub bytes: usize,
    /// The log end offset after the append.
    pub log_end_offset: i64,
}

/// What retention removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionOutcome {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    pub log_start_offset: i64,
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompactionReport {
    /// Sealed segments replaced by cleaned files.
    pub segments_rewritten: usize,
    /// Cleaned files that replaced them (fewer when small segments were merged).
    pub segments_written: usize,
    /// Segments whose cleaning was abandoned because a truncation or retention changed them
    /// meanwhile; the next compaction tries again.
    pub segments_abandoned: usize,
    /// Size of the rewritten segments before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Bytes of log read (the key map scan and the cleaning pass).
    pub bytes_read: u64,
    /// Records removed, tombstones among them.
    pub records_removed: u64,
    pub tombstones_removed: u64,
    /// The log's compaction horizon after this compaction.
    pub compaction_horizon: i64,
}

/// The offsets that bound a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOffsets {
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    /// Everything below this offset is on disk.
    pub flushed_offset: i64,
    /// The last checkpointed high watermark (clamped into the log).
    pub high_watermark: i64,
}

/// An ordered, append-only sequence of Kafka v2 record batches, addressed by offset.
///
/// # Contract
/// - **Offsets.** `log_start_offset ≤ high_watermark ≤ log_end_offset`, and
///   `flushed_offset ≤ log_end_offset`. Batches are contiguous: each starts at the offset
///   after the previous one's last offset.
/// - **Appends.** [`append_as_leader`](Log::append_as_leader) validates every batch (magic,
///   length, CRC32C, record count, size limit) before writing any, then assigns offsets from
///   the log end and stamps the leader epoch, in place, outside the CRC.
///   [`append_replicated`](Log::append_replicated) keeps the offsets and epochs it is given
///   and refuses a batch that does not start at the log end. Either way an epoch older than
///   the latest one is refused, and an append that fails leaves the log as it was.
/// - **Epochs.** The first batch of a new epoch records (epoch, its base offset) in the epoch
///   cache, durably, before the batch is written.
/// - **Reads.** [`read`](Log::read) returns whole batches starting with the one that holds the
///   offset, at most `max_bytes` except that the first batch is returned even if larger, and
///   never crosses a segment boundary. Reading at the log end gives nothing; below the log start
///   or past the end is `OffsetOutOfRange`.
/// - **Durability.** `flushed_offset` only grows, except when truncation takes it down.
///   With [`FlushPolicy::Always`] an append returns once its batches are on disk; concurrent
///   appenders share fsyncs. A crash loses at most what is above `flushed_offset`.
/// - **Truncation.** [`truncate_to(o)`](Log::truncate_to) removes every batch holding an offset
///   `≥ o` (so the end may land below `o` if `o` is inside a batch) and durably, so that the cut
///   suffix never comes back after a crash. Retention and
///   [`advance_log_start`](Log::advance_log_start) remove whole segments from the front.
/// - **Recovery.** Opening a log validates the active segment batch by batch and cuts it at
///   the first torn or corrupt batch; nothing before that byte is lost. It never cuts to the
///   high watermark.
/// - **Gaps.** Compaction removes records, so offsets may be missing: a batch starts at or
///   after the end of the one before it. A read at an offset inside a gap returns the batches
///   from the next one; `append_replicated` accepts a batch starting after the log end;
///   `truncate_to(o)` with `o` inside a gap leaves the log end at `o`.
/// - **Compaction.** [`compact`](Log::compact) keeps, in sealed segments wholly below its
///   `up_to`, the latest record of each key, offsets unchanged; see docs/storage.md.
///   [`compaction_horizon`](Log::compaction_horizon) is durable and never goes down: below
///   it, records may be gone, and a prefix of the log ending there is no state that existed.
pub trait Log: Send + Sync {
    /// Appends batches produced by clients, as the leader of `leader_epoch`.
    fn append_as_leader(&self, batches: &mut [u8], leader_epoch: i32) -> Result<AppendInfo>;
    /// Appends batches fetched from the leader, with their offsets and epochs.
    fn append_replicated(&self, batches: &[u8]) -> Result<AppendInfo>;
    fn read(&self, offset: i64, max_bytes: usize) -> Result<Bytes>;
    fn offsets(&self) -> LogOffsets;
    fn log_start_offset(&self) -> i64 {
        self.offsets().log_start_offset
    }
    fn log_end_offset(&self) -> i64 {
        self.offsets().log_end_offset
    }
    fn flushed_offset(&self) -> i64 {
        self.offsets().flushed_offset
    }
    /// Makes everything appended so far durable; returns the flushed offset.
    fn flush(&self) -> Result<i64>;
    /// Flushes if the interval flush policy says it is time; returns the flushed offset.
    fn flush_if_due(&self) -> Result<i64>;
    fn truncate_to(&self, offset: i64) -> Result<()>;
    /// Empties the log and restarts it at `offset` (a follower far behind the leader's start).
    fn truncate_fully_and_start_at(&self, offset: i64) -> Result<()>;
    /// Moves the log start up to `offset`, deleting segments that lie wholly below it.
    fn advance_log_start(&self, offset: i64) -> Result<()>;
    /// Deletes the oldest segments that the retention settings no longer want, among those that
    /// lie wholly below `upper_bound` (the high watermark: uncommitted data is never deleted).
    fn apply_retention(&self, upper_bound: i64) -> Result<RetentionOutcome>;
    /// First offset whose record timestamp is at or after `timestamp`, with that timestamp.
    fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>>;
    /// Records that `epoch` starts at the current log end (a replica becoming leader).
    fn assign_epoch(&self, epoch: i32) -> Result<()>;
    fn epochs(&self) -> Vec<EpochEntry>;
    fn latest_epoch(&self) -> Option<i32>;
    /// Kafka's OffsetsForLeaderEpoch answer, see [`EpochCache::end_offset_for`].
    fn end_offset_for_epoch(&self, epoch: i32) -> Option<EpochEntry>;
    /// Durably records the high watermark, for the next open.
    fn checkpoint_high_watermark(&self, high_watermark: i64) -> Result<()>;
    /// Compacts the sealed segments that lie wholly below `up_to` (the caller's HW; the
    /// active segment never): each keeps, of the records below `up_to`, only the latest of
    /// each key; a latest tombstone goes once its batch's max timestamp is more than
    /// `config.tombstone_retention_ms` before `now_ms`; records without a key always stay.
    /// Offsets, leader epochs and producer fields are kept; a segment's last batch and each
    /// producer's last batches stay at least as a bare header. Runs without blocking appends,
    /// reads or truncation; a segment that changed meanwhile is left for the next run.
    fn compact(
        &self,
        up_to: i64,
        now_ms: i64,
        config: &CompactionConfig,
    ) -> Result<CompactionReport>;
    /// Below this offset records may have been removed, from this log by compaction or from
    /// the log it was copied from ([`raise_compaction_horizon`](Log::raise_compaction_horizon)):
    /// a key's superseded records, or its expired tombstone, whose latest record is below it.
    /// So the log is consistent only as a whole up to here: a prefix ending below it is a
    /// state that never existed (docs/tables.md, "Compaction"), and a replica whose log ends
    /// in between cannot catch up by fetching from its end, it must copy the log from the
    /// start. 0 for a log never compacted. Never lowered, not by truncation either (the
    /// prefix left is no more whole), so it may exceed the log end: a copy under way, or a
    /// crash or truncation that cut what was copied.
    fn compaction_horizon(&self) -> i64;
    /// Durably raises the compaction horizon to `offset` (never lowers it): a follower about to
    /// append batches copied from a compacted log raises it to that log's horizon, which may
    /// exceed the log end until the copy gets there.
    fn raise_compaction_horizon(&self, offset: i64) -> Result<()>;
    /// Flushes; the log may be dropped after this.
    fn close(&self) -> Result<()>;
}

struct LogState<F> {
    segments: BTreeMap<i64, Segment<F>>,
    log_start_offset: i64,
    epochs: EpochCache,
    high_watermark: i64,
    /// As checkpointed; may exceed the log end after `raise_compaction_horizon`.
    compaction_horizon: i64,
    /// [`GAPS_FILE`] is on disk.
    may_have_gaps: bool,
}

impl<F: SegmentFile> LogState<F> {
    fn active(&self) -> &Segment<F> {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }
    fn active_mut(&mut self) -> &mut Segment<F> {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }
    fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }
    fn check_invariants(&self) {
        let leo = self.log_end_offset();
        assert!(
            self.log_start_offset <= leo,
            "log start {} > LEO {leo}",
            self.log_start_offset
        );
        assert!(
            self.high_watermark <= leo,
            "HW {} > LEO {leo}",
            self.high_watermark
        );
        if let Some(latest) = self.epochs.latest() {
            assert!(
                latest.start_offset <= leo,
                "epoch {latest:?} starts past LEO {leo}"
            );
        }
    }
}

/// The log engine over a directory of segment files.
pub struct SegmentedLog<D: Directory> {
    dir: D,
    /// `dir.describe()`, for messages.
    place: String,
    config: LogConfig,
    clock: Arc<dyn Clock>,
    state: RwLock<LogState<D::File>>,
    /// Serializes fsyncs, so that appenders waiting here share the next one.
    flush_lock: Mutex<()>,
    /// Serializes HW checkpoint writes with truncation, which may lower the checkpoint.
    checkpoint_lock: Mutex<()>,
    /// Set when a failed append could not be undone: the log then refuses changes.
    poisoned: std::sync::atomic::AtomicBool,
    flushed_offset: AtomicI64,
    last_flush_ms: AtomicI64,
    /// fsyncs of segment data so far: how well group commit works.
    sync_count: AtomicU64,
    /// Bytes recovery removed when this log was opened (a torn or corrupt tail, and segments
    /// after it): a replica that lost data must say so when it registers.
    recovery_removed_bytes: u64,
    /// One compaction at a time.
    compaction_lock: Mutex<()>,
    /// Bumped by every truncation: a compaction that read the log before one abandons its swap
    /// (its key map may name records that are gone).
    truncations: AtomicU64,
}

/// A log on the local file system.
pub type DiskLog = SegmentedLog<OsDir>;
/// A log in memory that loses unsynced data when its [`MemDir`] crashes: the simulator's.
pub type MemLog = SegmentedLog<MemDir>;

impl DiskLog {
    /// Opens the log in `path`, creating the directory and an empty log if there is none.
    pub fn open_path(path: impl AsRef<std::path::Path>, config: LogConfig) -> Result<DiskLog> {
        let path = path.as_ref();
        let dir = OsDir::create_all(path).context(&path.display().to_string(), || {
            "creating the log directory".into()
        })?;
        SegmentedLog::open(dir, config, Arc::new(SystemClock))
    }
}

/// A temporary file this engine's atomic writes leave behind when a crash interrupts them.
fn is_own_temp_file(name: &str) -> bool {
    let Some(target) = name.strip_suffix(TEMP_SUFFIX) else {
        return false;
    };
    [
        MARKER_FILE,
        EPOCH_FILE,
        HIGH_WATERMARK_FILE,
        LOG_START_FILE,
        COMPACTION_HORIZON_FILE,
        GAPS_FILE,
    ]
    .contains(&target)
        || segment::parse_file_name(target, INDEX_SUFFIX).is_some()
        || segment::parse_file_name(target, TIME_INDEX_SUFFIX).is_some()
}

/// A file a compaction was writing when a crash stopped it, before it committed the swap.
fn is_cleaned_file(name: &str) -> bool {
    let Some(target) = name.strip_suffix(CLEANED_SUFFIX) else {
        return false;
    };
    [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX]
        .iter()
        .any(|suffix| segment::parse_file_name(target, suffix).is_some())
}

fn parse_i64_checkpoint(dir: &str, file: &str, data: Option<Vec<u8>>) -> Result<Option<i64>> {
    let Some(data) = data else { return Ok(None) };
    let corrupt = |reason: String| StorageError::CorruptCheckpoint {
        dir: dir.to_string(),
        file: file.to_string(),
        reason,
    };
    let text = String::from_utf8(data).map_err(|_| corrupt("not UTF-8".into()))?;
    let value: i64 = text
        .trim_end_matches('\n')
        .parse()
        .map_err(|_| corrupt(format!("{text:?} is not an offset")))?;
    if value < 0 {
        return Err(corrupt(format!("negative offset {value}")));
    }
    Ok(Some(value))
}

impl<D: Directory> SegmentedLog<D> {
    /// Opens the log in `dir`, recovering it if the last run did not end cleanly; an empty
    /// directory becomes a new, empty log.
    pub fn open(dir: D, config: LogConfig, clock: Arc<dyn Clock>) -> Result<SegmentedLog<D>> {
        let place = dir.describe();
        config.validate().map_err(|reason| StorageError::NotALog {
            path: place.clone(),
            reason: format!("bad configuration: {reason}"),
        })?;
        let now = clock.now_ms();
        let mut names = dir
            .list()
            .context(&place, || "listing the directory".into())?;
        names.sort();
        // Checks the marker before touching anything: a directory that is not a log is left
        // exactly as it was.
        Self::check_marker(&dir, &place, &names)?;
        names.retain(|name| {
            if is_own_temp_file(name) {
                info!(log = %place, file = %name, "removing a checkpoint left half-written by a crash");
                let _ = dir.remove(name);
                false
            } else if is_cleaned_file(name) {
                info!(log = %place, file = %name, "removing a file of a compaction a crash interrupted before its swap");
                let _ = dir.remove(name);
                false
            } else {
                true
            }
        });
        if Self::finish_swaps(&dir, &place, &names, now)? {
            names = dir
                .list()
                .context(&place, || "listing the directory".into())?;
            names.sort();
        }

        let log_start_checkpoint = parse_i64_checkpoint(
            &place,
            LOG_START_FILE,
            dir.read(LOG_START_FILE)
                .context(&place, || "reading the log start checkpoint".into())?,
        )?;
        let high_watermark_checkpoint = parse_i64_checkpoint(
            &place,
            HIGH_WATERMARK_FILE,
            dir.read(HIGH_WATERMARK_FILE)
                .context(&place, || "reading the HW checkpoint".into())?,
        )?;
        let saved_epochs = match dir
            .read(EPOCH_FILE)
            .context(&place, || "reading the epoch checkpoint".into())?
        {
            None => None,
            Some(data) => {
                let text =
                    String::from_utf8(data).map_err(|_| StorageError::CorruptCheckpoint {
                        dir: place.clone(),
                        file: EPOCH_FILE.into(),
                        reason: "not UTF-8".into(),
                    })?;
                Some(EpochCache::decode(&text).map_err(|reason| {
                    StorageError::CorruptCheckpoint {
                        dir: place.clone(),
                        file: EPOCH_FILE.into(),
                        reason,
                    }
                })?)
            }
        };
        let rebuild_epochs = saved_epochs.is_none();
        let mut epochs = saved_epochs.clone().unwrap_or_default();

        let may_have_gaps = names.iter().any(|n| n == GAPS_FILE);
        let bases: Vec<i64> = names
            .iter()
            .filter_map(|n| segment::parse_file_name(n, LOG_SUFFIX))
            .collect();
        // Index files whose segment is gone are residue of a crash during deletion.
        for name in &names {
            for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                if let Some(base) = segment::parse_file_name(name, suffix) {
                    if !bases.contains(&base) {
                        let _ = dir.remove(name);
                    }
                }
            }
        }

        let interval = config.index_interval_bytes;
        let mut segments: BTreeMap<i64, Segment<D::File>> = BTreeMap::new();
        let mut damaged = false;
        // What recovery removed: bytes cut from damaged segments and whole segments after them.
        let mut bytes_removed: u64 = 0;
        let mut last_batch_epoch: Option<i32> = None;
        for (i, &base) in bases.iter().enumerate() {
            let log_name = segment::file_name(base, LOG_SUFFIX);
            if damaged {
                warn!(log = %place, segment = %log_name, "deleting a segment that follows damaged data");
                bytes_removed += dir.open(&log_name).and_then(|f| f.len()).unwrap_or(0);
                Self::remove_segment_files(&dir, &place, base)?;
                continue;
            }
            if let Some(prev) = segments.values().next_back() {
                // Compaction leaves gaps, so a segment may start after the previous one ends.
                if base < prev.next_offset || (!may_have_gaps && base != prev.next_offset) {
                    warn!(log = %place, segment = %log_name, expected = prev.next_offset,
                        "segment starts before the previous one ends; deleting it and every later segment");
                    damaged = true;
                    bytes_removed += dir.open(&log_name).and_then(|f| f.len()).unwrap_or(0);
                    Self::remove_segment_files(&dir, &place, base)?;
                    continue;
                }
            }
            let file = dir
                .open(&log_name)
                .context(&place, || format!("opening {log_name}"))?;
            let is_last = i + 1 == bases.len();
            // Epochs lie outside the CRC, so they are checked against the epoch checkpoint
            // (written before any batch of a new epoch) and for going backwards.
            let mut note_epoch = |h: &BatchHeader| -> std::result::Result<(), String> {
                if let Some(expected) = saved_epochs
                    .as_ref()
                    .and_then(|c| c.epoch_for_offset(h.base_offset))
                {
                    if expected != h.leader_epoch {
                        return Err(format!(
                            "batch has leader epoch {}, but the epoch checkpoint says {expected}",
                            h.leader_epoch
                        ));
                    }
                }
                if last_batch_epoch.is_some_and(|previous| h.leader_epoch < previous) {
                    return Err(format!(
                        "batch has leader epoch {}, older than the batch before it ({:?})",
                        h.leader_epoch, last_batch_epoch
                    ));
                }
                last_batch_epoch = Some(h.leader_epoch);
                if h.leader_epoch >= 0 && epochs.latest_epoch().is_none_or(|e| h.leader_epoch > e) {
                    epochs
                        .assign(h.leader_epoch, h.base_offset)
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            };
            let (segment, damage) = if is_last || rebuild_epochs {
                // The active segment may hold a torn or unsynced tail: check every byte.
                Segment::scan(
                    base,
                    file,
                    interval,
                    true,
                    may_have_gaps,
                    now,
                    &mut note_epoch,
                )
                .context(&place, || format!("scanning {log_name}"))?
            } else {
                let index = dir
                    .read(&segment::file_name(base, INDEX_SUFFIX))
                    .context(&place, || "reading an index".into())?;
                let time_index = dir
                    .read(&segment::file_name(base, TIME_INDEX_SUFFIX))
                    .context(&place, || "reading a time index".into())?;
                let loaded = match (index, time_index) {
                    (Some(index), Some(time_index)) => Segment::load(
                        base,
                        file,
                        &index,
                        &time_index,
                        interval,
                        may_have_gaps,
                        now,
                    )
                    .context(&place, || format!("loading {log_name}"))?,
                    (index, _) => Err((
                        file,
                        format!(
                            "{} missing",
                            if index.is_none() {
                                "offset index"
                            } else {
                                "time index"
                            }
                        ),
                    )),
                };
                match loaded {
                    Ok(segment) => (segment, None),
                    Err((file, reason)) => {
                        warn!(log = %place, segment = %log_name, %reason, "rebuilding the segment's indexes");
                        let rebuilt = Segment::scan(
                            base,
                            file,
                            interval,
                            true,
                            may_have_gaps,
                            now,
                            &mut note_epoch,
                        )
                        .context(&place, || format!("scanning {log_name}"))?;
                        if rebuilt.1.is_none() {
                            Self::write_indexes(&dir, &place, &rebuilt.0)?;
                        }
                        rebuilt
                    }
                }
            };
            if let Some(damage) = damage {
                let file_len = segment
                    .file
                    .len()
                    .context(&place, || format!("sizing {log_name}"))?;
                warn!(
                    log = %place,
                    segment = %log_name,
                    position = damage.position,
                    offset = damage.offset,
                    bytes_cut = file_len - damage.position,
                    reason = %damage.reason,
                    "recovery cut the log at the first bad batch; everything before it is intact"
                );
                segment
                    .file
                    .set_len(damage.position)
                    .and_then(|_| segment.file.sync_all())
                    .context(&place, || format!("cutting {log_name}"))?;
                bytes_removed += file_len - damage.position;
                damaged = true;
            }
            segments.insert(base, segment);
        }
        if segments.is_empty() {
            let base = log_start_checkpoint.unwrap_or(0);
            let name = segment::file_name(base, LOG_SUFFIX);
            let file = dir
                .create(&name)
                .context(&place, || format!("creating {name}"))?;
            segments.insert(base, Segment::new(base, file, now));
        }
        dir.sync()
            .context(&place, || "syncing the directory".into())?;

        let log_end_offset = segments.values().next_back().map_or(0, |s| s.next_offset);
        let first_base = segments.keys().next().copied().unwrap_or(0);
        let log_start_offset = log_start_checkpoint
            .unwrap_or(first_base)
            .max(first_base)
            .min(log_end_offset);
        if log_start_checkpoint.is_some_and(|c| c != log_start_offset) {
            // Recovery cut below the recorded start: record where the log starts now.
            dir.write_atomic(LOG_START_FILE, format!("{log_start_offset}\n").as_bytes())
                .context(&place, || "writing the log start checkpoint".into())?;
        }
        // Start first: an entry moved up to a start that equals the end owns no offsets.
        epochs.truncate_from_start(log_start_offset);
        epochs.truncate_from_end(log_end_offset);
        if saved_epochs.as_ref() != Some(&epochs) {
            dir.write_atomic(EPOCH_FILE, epochs.encode().as_bytes())
                .context(&place, || "writing the epoch checkpoint".into())?;
        }
        let high_watermark = high_watermark_checkpoint
            .unwrap_or(log_start_offset)
            .clamp(log_start_offset, log_end_offset);
        if high_watermark_checkpoint.is_some_and(|c| c != high_watermark) {
            // Recovery cut below the checkpointed HW: left as it is, the file would later
            // cover new, uncommitted data at those offsets.
            dir.write_atomic(
                HIGH_WATERMARK_FILE,
                format!("{high_watermark}\n").as_bytes(),
            )
            .context(&place, || "writing the HW checkpoint".into())?;
        }
        let horizon_checkpoint = parse_i64_checkpoint(
            &place,
            COMPACTION_HORIZON_FILE,
            dir.read(COMPACTION_HORIZON_FILE)
                .context(&place, || "reading the compaction horizon".into())?,
        )?;
        // Kept even past the end (a copy that a crash or recovery cut short): the prefix left
        // is still not whole, and the table must not serve it (docs/tables.md).
        let compaction_horizon = horizon_checkpoint.unwrap_or(0).max(0);
        // What was read back from the file may sit only in the page cache of a process that
        // died; sync it so that `flushed_offset` can start at the log end.
        let active = segments.values().next_back().expect("created above");
        active
            .file
            .sync_data()
            .context(&place, || "syncing the active segment".into())?;

        let state = LogState {
            segments,
            log_start_offset,
            epochs,
            high_watermark,
            compaction_horizon,
            may_have_gaps,
        };
        state.check_invariants();
        Ok(SegmentedLog {
            dir,
            place,
            config,
            clock,
            state: RwLock::new(state),
            flush_lock: Mutex::new(()),
            checkpoint_lock: Mutex::new(()),
            poisoned: std::sync::atomic::AtomicBool::new(false),
            flushed_offset: AtomicI64::new(log_end_offset),
            last_flush_ms: AtomicI64::new(now),
            sync_count: AtomicU64::new(0),
            recovery_removed_bytes: bytes_removed,
            compaction_lock: Mutex::new(()),
            truncations: AtomicU64::new(0),
        })
    }

    /// Finishes the swaps a crash interrupted after a compaction committed them: a
    /// `<base>.log.swap` file replaces every segment from `base` to its end. Returns whether
    /// it changed the directory.
    fn finish_swaps(dir: &D, place: &str, names: &[String], now: i64) -> Result<bool> {
        let mut changed = false;
        for name in names {
            let Some(base) = name
                .strip_suffix(SWAP_SUFFIX)
                .and_then(|target| segment::parse_file_name(target, LOG_SUFFIX))
            else {
                continue;
            };
            let file = dir
                .open(name)
                .context(place, || format!("opening {name}"))?;
            // Synced before it was committed: the scan only finds where it ends.
            let (swap, _) = Segment::scan(base, file, u64::MAX, false, true, now, |_| Ok(()))
                .context(place, || format!("scanning {name}"))?;
            let end = swap.next_offset;
            drop(swap);
            for other in names {
                if let Some(b) = segment::parse_file_name(other, LOG_SUFFIX) {
                    if b >= base && b < end.max(base + 1) {
                        Self::remove_segment_files(dir, place, b)?;
                    }
                }
            }
            let target = segment::file_name(base, LOG_SUFFIX);
            dir.rename(name, &target)
                .context(place, || format!("renaming {name} to {target}"))?;
            dir.sync()
                .context(place, || "syncing the directory".into())?;
            info!(log = %place, segment = %target, end, "finished a compaction swap a crash interrupted");
            changed = true;
        }
        Ok(changed)
    }

    fn check_marker(dir: &D, place: &str, names: &[String]) -> Result<()> {
        if names.iter().any(|n| n == MARKER_FILE) {
            let content = dir
                .read(MARKER_FILE)
                .context(place, || "reading the marker".into())?
                .unwrap_or_default();
            if content != MARKER_CONTENT.as_bytes() {
                return Err(StorageError::NotALog {
                    path: place.to_string(),
                    reason: format!(
                        "marker file {MARKER_FILE} holds {:?}, expected {MARKER_CONTENT:?}",
                        String::from_utf8_lossy(&content)
                    ),
                });
            }
            return Ok(());
        }
        let others: Vec<&String> = names.iter().filter(|n| !is_own_temp_file(n)).collect();
        if let Some(other) = others.first() {
            return Err(StorageError::NotALog {
                path: place.to_string(),
                reason: format!(
                    "no {MARKER_FILE} marker, and it holds {} other file(s), such as {other:?}",
                    others.len()
                ),
            });
        }
        dir.write_atomic(MARKER_FILE, MARKER_CONTENT.as_bytes())
            .context(place, || "creating the marker".into())
    }

    fn remove_segment_files(dir: &D, place: &str, base: i64) -> Result<()> {
        for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            let name = segment::file_name(base, suffix);
            dir.remove(&name)
                .context(place, || format!("removing {name}"))?;
        }
        Ok(())
    }

    fn write_indexes(dir: &D, place: &str, segment: &Segment<D::File>) -> Result<()> {
        let base = segment.base_offset;
        dir.write_atomic(
            &segment::file_name(base, INDEX_SUFFIX),
            &segment.index.encode(),
        )
        .context(place, || "writing an offset index".into())?;
        dir.write_atomic(
            &segment::file_name(base, TIME_INDEX_SUFFIX),
            &segment.time_index.encode(),
        )
        .context(place, || "writing a time index".into())
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Bytes that recovery removed when the log was opened; 0 after a clean shutdown.
    pub fn recovery_removed_bytes(&self) -> u64 {
        self.recovery_removed_bytes
    }

    /// fsyncs of segment data since open.
    pub fn sync_count(&self) -> u64 {
        self.sync_count.load(Ordering::Relaxed)
    }

    /// Number of segments, for tests and metrics.
    pub fn segment_count(&self) -> usize {
        self.state.read().segments.len()
    }

    /// Total bytes of segment data.
    pub fn size_bytes(&self) -> u64 {
        self.state.read().segments.values().map(|s| s.size).sum()
    }

    fn persist_epochs(&self, state: &LogState<D::File>) -> Result<()> {
        self.dir
            .write_atomic(EPOCH_FILE, state.epochs.encode().as_bytes())
            .context(&self.place, || "writing the epoch checkpoint".into())
    }

    /// Validates the batches of an append without touching the log.
    fn validate_batches(&self, batches: &[u8]) -> Result<Vec<(usize, BatchHeader)>> {
        if batches.is_empty() {
            return Err(StorageError::EmptyAppend);
        }
        let mut headers = Vec::new();
        let mut position = 0;
        while position < batches.len() {
            let rest = &batches[position..];
            let invalid = |source| StorageError::InvalidBatch { position, source };
            // Magic first: garbage should read as garbage, not as a huge batch.
            let header = BatchHeader::parse(rest).map_err(invalid)?;
            if header.magic != batch::MAGIC_V2 {
                return Err(invalid(BatchError::BadMagic(header.magic)));
            }
            if header.size() > self.config.max_batch_bytes as i64 {
                return Err(StorageError::BatchTooLarge {
                    size: header.size().max(0) as usize,
                    max: self.config.max_batch_bytes,
                });
            }
            let header = batch::validate(rest)
                .map_err(|source| StorageError::InvalidBatch { position, source })?;
            headers.push((position, header));
            position += header.size() as usize;
        }
        Ok(headers)
    }

    /// Writes one batch at the end of the log, rolling first if the active segment is full.
    fn append_one(
        &self,
        state: &mut LogState<D::File>,
        bytes: &[u8],
        header: &BatchHeader,
    ) -> Result<()> {
        let now = self.clock.now_ms();
        let active = state.active();
        let full = active.size + bytes.len() as u64 > self.config.segment_bytes;
        let old = active
            .first_append_ms
            .is_some_and(|first| now - first >= self.config.segment_ms);
        if !active.is_empty() && (full || old || !active.fits_offsets(header)) {
            self.roll(state)?;
        }
        if header.leader_epoch >= 0
            && state
                .epochs
                .assign(header.leader_epoch, header.base_offset)?
        {
            self.persist_epochs(state)?;
        }
        let place = &self.place;
        state
            .active_mut()
            .append(bytes, header, self.config.index_interval_bytes, now)
            .context(place, || {
                format!("appending at offset {}", header.base_offset)
            })
    }

    /// Seals the active segment (synced, indexes written) and starts a new one at the log end.
    fn roll(&self, state: &mut LogState<D::File>) -> Result<()> {
        let base = state.log_end_offset();
        self.roll_to(state, base)
    }

    /// Seals the active segment and starts a new one at `base` (≥ the log end): the log then
    /// ends at `base` even with no batch there, durably (the new file's name says so).
    fn roll_to(&self, state: &mut LogState<D::File>, base: i64) -> Result<()> {
        debug_assert!(base >= state.log_end_offset());
        let place = &self.place;
        let active = state.active_mut();
        active
            .file
            .sync_data()
            .context(place, || "syncing a segment before rolling".into())?;
        self.sync_count.fetch_add(1, Ordering::Relaxed);
        active.seal();
        Self::write_indexes(&self.dir, place, state.active())?;
        let name = segment::file_name(base, LOG_SUFFIX);
        let file = self
            .dir
            .create(&name)
            .context(place, || format!("creating {name}"))?;
        // The new segment's directory entry must be durable before data in it is counted as
        // flushed: an fsync of the file alone does not persist its name.
        self.dir
            .sync()
            .context(place, || "syncing the directory".into())?;
        state
            .segments
            .insert(base, Segment::new(base, file, self.clock.now_ms()));
        self.flushed_offset.fetch_max(base, Ordering::SeqCst);
        Ok(())
    }

    /// Makes everything below `target` durable, sharing the fsync with concurrent callers.
    fn flush_to(&self, target: i64) -> Result<i64> {
        let flushed = self.flushed_offset.load(Ordering::SeqCst);
        if flushed >= target {
            return Ok(flushed);
        }
        let _guard = self.flush_lock.lock();
        // Whoever held the lock may have synced past our target while we waited.
        let flushed = self.flushed_offset.load(Ordering::SeqCst);
        if flushed >= target {
            return Ok(flushed);
        }
        let (file, log_end_offset) = {
            let state = self.state.read();
            (Arc::clone(&state.active().file), state.log_end_offset())
        };
        file.sync_data()
            .context(&self.place, || "syncing the active segment".into())?;
        self.sync_count.fetch_add(1, Ordering::Relaxed);
        self.last_flush_ms
            .store(self.clock.now_ms(), Ordering::SeqCst);
        Ok(self
            .flushed_offset
            .fetch_max(log_end_offset, Ordering::SeqCst)
            .max(log_end_offset))
    }

    fn after_append(&self, info: &AppendInfo) -> Result<()> {
        match self.config.flush {
            FlushPolicy::Always => {
                let flushed = self.flush_to(info.log_end_offset)?;
                if flushed < info.log_end_offset {
                    // A truncation removed the batch before it was synced: it is not durable.
                    return Err(StorageError::TruncatedBeforeFlush {
                        offset: info.first_offset,
                    });
                }
                Ok(())
            }
            FlushPolicy::IntervalMs(_) => self.flush_if_due().map(|_| ()),
            FlushPolicy::Never => Ok(()),
        }
    }

    /// Puts the log back as it was before a failed append: cut back to `offset`, and the epoch
    /// cache as it was (an append of a new epoch may have replaced an empty epoch's entry).
    /// If even that fails, the log is poisoned: every later change is refused until a reopen
    /// recovers it from what is on disk.
    fn undo_append(&self, state: &mut LogState<D::File>, offset: i64, epochs_before: EpochCache) {
        let truncated = self.truncate_locked(state, offset);
        let restored = if state.epochs != epochs_before {
            state.epochs = epochs_before;
            self.persist_epochs(state)
        } else {
            Ok(())
        };
        if let Err(e) = truncated.and(restored) {
            warn!(log = %self.place, offset, error = %e, "could not undo a failed append; the log refuses changes until it is reopened");
            self.poisoned.store(true, Ordering::SeqCst);
        }
    }

    fn check_not_poisoned(&self) -> Result<()> {
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(StorageError::Poisoned {
                dir: self.place.clone(),
            });
        }
        Ok(())
    }

    fn truncate_locked(&self, state: &mut LogState<D::File>, offset: i64) -> Result<()> {
        let place = &self.place;
        // The segment holding `offset` becomes the active one; every later segment goes.
        let keep = state
            .segments
            .range(..=offset)
            .next_back()
            .or_else(|| state.segments.iter().next())
            .map(|(base, _)| *base)
            .expect("a log always has a segment");
        let later: Vec<i64> = state.segments.range(keep + 1..).map(|(b, _)| *b).collect();
        if !later.is_empty() {
            for base in later {
                state.segments.remove(&base);
                Self::remove_segment_files(&self.dir, place, base)?;
            }
            self.dir
                .sync()
                .context(place, || "syncing the directory".into())?;
        }
        let interval = self.config.index_interval_bytes;
        let active = state.active_mut();
        // Whether `offset` falls inside a batch (the end then lands below it) or in a gap
        // compaction left (the end stays at `offset`, as the replication core's model has it).
        let inside_batch = active
            .locate(offset)
            .context(place, || format!("locating offset {offset}"))?
            .is_some_and(|(_, header)| header.base_offset < offset);
        let removed = active
            .truncate_to(offset, interval)
            .context(place, || format!("truncating to offset {offset}"))?;
        if !inside_batch && state.log_end_offset() < offset {
            self.roll_to(state, offset)?;
        }
        let log_end_offset = state.log_end_offset();
        if removed > 0 {
            info!(log = %place, offset, log_end_offset, bytes = removed, "truncated the log");
        }
        if state.epochs.truncate_from_end(log_end_offset) {
            self.persist_epochs(state)?;
        }
        if state.log_start_offset > log_end_offset {
            // The cut went below the start (into a batch that straddles it): the start follows.
            state.log_start_offset = log_end_offset;
            self.write_log_start(log_end_offset)?;
        }
        if state.high_watermark > log_end_offset {
            // A stale file would bring back a HW over offsets that are gone, or that later hold
            // different, uncommitted data.
            state.high_watermark = log_end_offset;
            self.write_high_watermark(log_end_offset)?;
        }
        self.flushed_offset
            .fetch_min(log_end_offset, Ordering::SeqCst);
        state.check_invariants();
        Ok(())
    }

    /// Records, durably and before any gap is written, that the log may have offset gaps.
    /// Called with the state lock, which every writer of [`GAPS_FILE`] holds.
    fn note_gaps(&self, state: &mut LogState<D::File>) -> Result<()> {
        if !state.may_have_gaps {
            self.dir
                .write_atomic(GAPS_FILE, b"compacted\n")
                .context(&self.place, || format!("writing {GAPS_FILE}"))?;
            state.may_have_gaps = true;
        }
        Ok(())
    }

    fn write_compaction_horizon(&self, offset: i64) -> Result<()> {
        self.dir
            .write_atomic(COMPACTION_HORIZON_FILE, format!("{offset}\n").as_bytes())
            .context(&self.place, || "writing the compaction horizon".into())
    }

    fn write_high_watermark(&self, offset: i64) -> Result<()> {
        self.dir
            .write_atomic(HIGH_WATERMARK_FILE, format!("{offset}\n").as_bytes())
            .context(&self.place, || "writing the HW checkpoint".into())
    }

    /// Deletes whole segments from the front of the log, files first, so that the segment map
    /// never names a deleted file; then moves the start past them. On an error the log stays
    /// consistent, with the segments deleted so far gone.
    fn delete_front_segments(
        &self,
        state: &mut LogState<D::File>,
        segments: &[(i64, u64)],
    ) -> Result<()> {
        let mut result = Ok(());
        for (base, _) in segments {
            if let Err(e) = Self::remove_segment_files(&self.dir, &self.place, *base) {
                result = Err(e);
                break;
            }
            state.segments.remove(base);
        }
        if !segments.is_empty() {
            let synced = self
                .dir
                .sync()
                .context(&self.place, || "syncing the directory".into());
            result = result.and(synced);
        }
        let first_base = *state
            .segments
            .keys()
            .next()
            .expect("the active segment is never deleted from the front");
        if first_base > state.log_start_offset {
            state.log_start_offset = first_base;
            state.high_watermark = state.high_watermark.max(first_base);
            if state.epochs.truncate_from_start(first_base) {
                self.persist_epochs(state)?;
            }
        }
        state.check_invariants();
        result
    }

    fn write_log_start(&self, offset: i64) -> Result<()> {
        self.dir
            .write_atomic(LOG_START_FILE, format!("{offset}\n").as_bytes())
            .context(&self.place, || "writing the log start checkpoint".into())
    }

    fn out_of_range(state: &LogState<D::File>, offset: i64) -> StorageError {
        StorageError::OffsetOutOfRange {
            offset,
            log_start_offset: state.log_start_offset,
            log_end_offset: state.log_end_offset(),
        }
    }

    /// The directory, for the simulator's crashes and for tests.
    pub fn dir(&self) -> &D {
        &self.dir
    }
}

impl<D: Directory> Log for SegmentedLog<D> {
    fn append_as_leader(&self, batches: &mut [u8], leader_epoch: i32) -> Result<AppendInfo> {
        if leader_epoch < 0 {
            return Err(StorageError::InvalidArgument(format!(
                "leader epoch {leader_epoch} is negative"
            )));
        }
        self.check_not_poisoned()?;
        let headers = self.validate_batches(batches)?;
        for (position, header) in &headers {
            if header.record_count < 1 || header.last_offset_delta != header.record_count - 1 {
                return Err(StorageError::InvalidBatch {
                    position: *position,
                    source: BatchError::BadRecordCount {
                        count: header.record_count,
                        last_offset_delta: header.last_offset_delta,
                    },
                });
            }
        }
        let info = {
            let mut state = self.state.write();
            if let Some(latest) = state.epochs.latest() {
                if leader_epoch < latest.epoch {
                    return Err(crate::epoch::NonMonotonicEpoch {
                        epoch: leader_epoch,
                        start_offset: state.log_end_offset(),
                        latest_epoch: latest.epoch,
                        latest_start_offset: latest.start_offset,
                    }
                    .into());
                }
            }
            let first_offset = state.log_end_offset();
            let epochs_before = state.epochs.clone();
            let mut offset = first_offset;
            let mut record_count = 0;
            for (position, header) in &headers {
                let size = header.size() as usize;
                let bytes = &mut batches[*position..*position + size];
                batch::set_base_offset(bytes, offset);
                batch::set_leader_epoch(bytes, leader_epoch);
                let mut header = *header;
                header.base_offset = offset;
                header.leader_epoch = leader_epoch;
                if let Err(e) = self.append_one(&mut state, bytes, &header) {
                    self.undo_append(&mut state, first_offset, epochs_before);
                    return Err(e);
                }
                offset = header.next_offset();
                record_count += header.record_count as i64;
            }
            AppendInfo {
                first_offset,
                last_offset: offset - 1,
                batch_count: headers.len(),
                record_count,
                bytes: batches.len(),
                log_end_offset: offset,
            }
        };
        self.after_append(&info)?;
        Ok(info)
    }

    fn append_replicated(&self, batches: &[u8]) -> Result<AppendInfo> {
        self.check_not_poisoned()?;
        let headers = self.validate_batches(batches)?;
        let info = {
            let mut state = self.state.write();
            let first_offset = state.log_end_offset();
            let epochs_before = state.epochs.clone();
            let mut expected = first_offset;
            let mut latest_epoch = state.epochs.latest();
            for (_, header) in &headers {
                // A gap is fine (the leader's log is compacted); going back is not.
                if header.base_offset < expected {
                    return Err(StorageError::NonContiguous {
                        expected,
                        got: header.base_offset,
                    });
                }
                if let Some(latest) = latest_epoch {
                    if header.leader_epoch < latest.epoch {
                        return Err(crate::epoch::NonMonotonicEpoch {
                            epoch: header.leader_epoch,
                            start_offset: header.base_offset,
                            latest_epoch: latest.epoch,
                            latest_start_offset: latest.start_offset,
                        }
                        .into());
                    }
                }
                if header.leader_epoch >= 0
                    && latest_epoch.is_none_or(|l| header.leader_epoch > l.epoch)
                {
                    latest_epoch = Some(EpochEntry {
                        epoch: header.leader_epoch,
                        start_offset: header.base_offset,
                    });
                }
                expected = header.next_offset();
            }
            if expected - first_offset
                != headers
                    .iter()
                    .map(|(_, h)| h.next_offset() - h.base_offset)
                    .sum::<i64>()
            {
                self.note_gaps(&mut state)?;
            }
            let mut record_count = 0;
            for (position, header) in &headers {
                let bytes = &batches[*position..*position + header.size() as usize];
                if let Err(e) = self.append_one(&mut state, bytes, header) {
                    self.undo_append(&mut state, first_offset, epochs_before);
                    return Err(e);
                }
                record_count += header.record_count as i64;
            }
            AppendInfo {
                first_offset: headers.first().map_or(first_offset, |(_, h)| h.base_offset),
                last_offset: expected - 1,
                batch_count: headers.len(),
                record_count,
                bytes: batches.len(),
                log_end_offset: expected,
            }
        };
        self.after_append(&info)?;
        Ok(info)
    }

    fn read(&self, offset: i64, max_bytes: usize) -> Result<Bytes> {
        let state = self.state.read();
        let log_end_offset = state.log_end_offset();
        if offset < state.log_start_offset || offset > log_end_offset {
            return Err(Self::out_of_range(&state, offset));
        }
        let start = state
            .segments
            .range(..=offset)
            .next_back()
            .map_or(i64::MIN, |(b, _)| *b);
        for segment in state.segments.range(start..).map(|(_, s)| s) {
            let found = segment
                .locate(offset)
                .context(&self.place, || format!("locating offset {offset}"))?;
            if let Some((position, _)) = found {
                return segment
                    .read(position, max_bytes)
                    .context(&self.place, || format!("reading at offset {offset}"));
            }
        }
        Ok(Bytes::new())
    }

    fn offsets(&self) -> LogOffsets {
        let state = self.state.read();
        LogOffsets {
            log_start_offset: state.log_start_offset,
            log_end_offset: state.log_end_offset(),
            flushed_offset: self
                .flushed_offset
                .load(Ordering::SeqCst)
                .min(state.log_end_offset()),
            high_watermark: state.high_watermark,
        }
    }

    fn flush(&self) -> Result<i64> {
        let log_end_offset = self.state.read().log_end_offset();
        self.flush_to(log_end_offset)
    }

    fn flush_if_due(&self) -> Result<i64> {
        if let FlushPolicy::IntervalMs(interval) = self.config.flush {
            let since = self.clock.now_ms() - self.last_flush_ms.load(Ordering::SeqCst);
            if since >= interval {
                return self.flush();
            }
        }
        Ok(self.flushed_offset.load(Ordering::SeqCst))
    }

    fn truncate_to(&self, offset: i64) -> Result<()> {
        self.check_not_poisoned()?;
        if offset < 0 {
            return Err(StorageError::InvalidArgument(format!(
                "cannot truncate to negative offset {offset}"
            )));
        }
        let flush_guard = self.flush_lock.lock();
        let checkpoint_guard = self.checkpoint_lock.lock();
        let mut state = self.state.write();
        self.truncations.fetch_add(1, Ordering::SeqCst);
        if offset >= state.log_end_offset() {
            // Nothing to cut, but an epoch that starts at the end owns no offsets: forget it,
            // as Kafka does, or a follower that briefly led could never take the leader's
            // older epoch after it (NonMonotonicEpoch forever).
            let log_end_offset = state.log_end_offset();
            if state.epochs.truncate_from_end(log_end_offset) {
                self.persist_epochs(&state)?;
            }
            return Ok(());
        }
        if offset < state.log_start_offset {
            drop(state);
            drop(checkpoint_guard);
            drop(flush_guard);
            return self.truncate_fully_and_start_at(offset);
        }
        self.truncate_locked(&mut state, offset)
    }

    fn truncate_fully_and_start_at(&self, offset: i64) -> Result<()> {
        self.check_not_poisoned()?;
        if offset < 0 {
            return Err(StorageError::InvalidArgument(format!(
                "a log cannot start at negative offset {offset}"
            )));
        }
        let _flush_guard = self.flush_lock.lock();
        let _checkpoint_guard = self.checkpoint_lock.lock();
        let mut state = self.state.write();
        self.truncations.fetch_add(1, Ordering::SeqCst);
        let place = &self.place;
        // Old segments go first, durably: a crash before the new start is recorded reopens an
        // empty log at the old start (the follower then asks again), never old data.
        let bases: Vec<i64> = state.segments.keys().copied().collect();
        for base in bases {
            Self::remove_segment_files(&self.dir, place, base)?;
            state.segments.remove(&base);
        }
        self.dir
            .sync()
            .context(place, || "syncing the directory".into())?;
        state.epochs = EpochCache::new();
        self.persist_epochs(&state)?;
        self.write_log_start(offset)?;
        self.write_high_watermark(offset)?;
        let name = segment::file_name(offset, LOG_SUFFIX);
        let file = self
            .dir
            .create(&name)
            .context(place, || format!("creating {name}"))?;
        self.dir
            .sync()
            .context(place, || "syncing the directory".into())?;
        state
            .segments
            .insert(offset, Segment::new(offset, file, self.clock.now_ms()));
        state.log_start_offset = offset;
        state.high_watermark = offset;
        self.flushed_offset.store(offset, Ordering::SeqCst);
        info!(log = %place, offset, "emptied the log; it now starts at {offset}");
        state.check_invariants();
        Ok(())
    }

    fn advance_log_start(&self, offset: i64) -> Result<()> {
        self.check_not_poisoned()?;
        let mut state = self.state.write();
        if offset <= state.log_start_offset {
            return Ok(());
        }
        if offset > state.log_end_offset() {
            return Err(Self::out_of_range(&state, offset));
        }
        self.write_log_start(offset)?;
        let active_base = state.active().base_offset;
        let below: Vec<(i64, u64)> = state
            .segments
            .values()
            .filter(|s| s.next_offset <= offset && s.base_offset != active_base)
            .map(|s| (s.base_offset, s.size))
            .collect();
        self.delete_front_segments(&mut state, &below)?;
        // With gaps the first segment left may start past `offset`: the start is there then.
        state.log_start_offset = state.log_start_offset.max(offset);
        state.high_watermark = state.high_watermark.max(state.log_start_offset);
        if state.epochs.truncate_from_start(offset) {
            self.persist_epochs(&state)?;
        }
        state.check_invariants();
        Ok(())
    }

    fn apply_retention(&self, upper_bound: i64) -> Result<RetentionOutcome> {
        self.check_not_poisoned()?;
        let now = self.clock.now_ms();
        let mut state = self.state.write();
        let upper_bound = upper_bound.min(state.log_end_offset());
        let active_base = state.active().base_offset;
        let mut total: u64 = state.segments.values().map(|s| s.size).sum();
        let mut doomed = Vec::new();
        for segment in state.segments.values() {
            if segment.base_offset == active_base || segment.next_offset > upper_bound {
                break;
            }
            let by_size = self
                .config
                .retention_bytes
                .is_some_and(|limit| total - segment.size >= limit);
            let by_age = self
                .config
                .retention_ms
                .is_some_and(|limit| now - segment.newest_ms() > limit);
            if !(by_size || by_age) {
                break;
            }
            total -= segment.size;
            doomed.push((segment.base_offset, segment.size));
        }
        let mut outcome = RetentionOutcome {
            log_start_offset: state.log_start_offset,
            ..RetentionOutcome::default()
        };
        if doomed.is_empty() {
            return Ok(outcome);
        }
        let deleted = self.delete_front_segments(&mut state, &doomed);
        outcome.segments_deleted = doomed.len();
        outcome.bytes_deleted = doomed.iter().map(|(_, size)| size).sum();
        outcome.log_start_offset = state.log_start_offset;
        deleted?;
        info!(log = %self.place, segments = outcome.segments_deleted, bytes = outcome.bytes_deleted,
            log_start_offset = outcome.log_start_offset, "retention deleted segments");
        Ok(outcome)
    }

    fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>> {
        let state = self.state.read();
        let log_start = state.log_start_offset;
        let place = &self.place;
        for segment in state.segments.values() {
            if segment.max_timestamp < timestamp || segment.next_offset <= log_start {
                continue;
            }
            let from = segment
                .time_index
                .last_below(timestamp)
                .map_or(segment.base_offset, |e| {
                    segment.base_offset + e.relative_offset as i64
                })
                .max(log_start);
            let Some((mut position, _)) = segment
                .locate(from)
                .context(place, || format!("locating offset {from}"))?
            else {
                continue;
            };
            while position < segment.size {
                let header = segment
                    .read_header(position)
                    .context(place, || "reading a batch header".into())?;
                if header.max_timestamp >= timestamp && header.next_offset() > log_start {
                    let bytes = segment
                        .read(position, header.size() as usize)
                        .context(place, || "reading a batch".into())?;
                    if let Ok(records) = batch::decode_records(&bytes) {
                        for record in records {
                            let offset = header.base_offset + record.offset_delta as i64;
                            let ts = header.base_timestamp + record.timestamp_delta;
                            if ts >= timestamp && offset >= log_start {
                                return Ok(Some((offset, ts)));
                            }
                        }
                    }
                    // Compressed: the batch is the finest grain without decompressing.
                    return Ok(Some((
                        header.base_offset.max(log_start),
                        header.max_timestamp,
                    )));
                }
                position += header.size() as u64;
            }
        }
        Ok(None)
    }

    fn assign_epoch(&self, epoch: i32) -> Result<()> {
        let mut state = self.state.write();
        let log_end_offset = state.log_end_offset();
        if state.epochs.assign(epoch, log_end_offset)? {
            self.persist_epochs(&state)?;
        }
        Ok(())
    }

    fn epochs(&self) -> Vec<EpochEntry> {
        self.state.read().epochs.entries().to_vec()
    }

    fn latest_epoch(&self) -> Option<i32> {
        self.state.read().epochs.latest_epoch()
    }

    fn end_offset_for_epoch(&self, epoch: i32) -> Option<EpochEntry> {
        let state = self.state.read();
        state.epochs.end_offset_for(epoch, state.log_end_offset())
    }

    fn checkpoint_high_watermark(&self, high_watermark: i64) -> Result<()> {
        // Truncation takes this lock too, so it cannot lower the HW between the check below
        // and the write, leaving a file above the log end.
        let _checkpoint_guard = self.checkpoint_lock.lock();
        {
            let state = self.state.read();
            if high_watermark < state.log_start_offset || high_watermark > state.log_end_offset() {
                return Err(Self::out_of_range(&state, high_watermark));
            }
        }
        // Written without the state lock, so that appends and reads go on during its fsyncs.
        // A truncation in between can leave the file above the log end; opening clamps it.
        self.dir
            .write_atomic(
                HIGH_WATERMARK_FILE,
                format!("{high_watermark}\n").as_bytes(),
            )
            .context(&self.place, || "writing the HW checkpoint".into())?;
        let mut state = self.state.write();
        state.high_watermark = high_watermark.min(state.log_end_offset());
        Ok(())
    }

    fn compact(
        &self,
        up_to: i64,
        now_ms: i64,
        config: &CompactionConfig,
    ) -> Result<CompactionReport> {
        self.compact_below(up_to, now_ms, config)
    }

    fn compaction_horizon(&self) -> i64 {
        self.state.read().compaction_horizon
    }

    fn raise_compaction_horizon(&self, offset: i64) -> Result<()> {
        self.check_not_poisoned()?;
        let _checkpoint_guard = self.checkpoint_lock.lock();
        if offset <= self.state.read().compaction_horizon {
            return Ok(());
        }
        // Durable before the copied batches are appended, so no crash leaves them uncovered.
        self.write_compaction_horizon(offset)?;
        let mut state = self.state.write();
        state.compaction_horizon = state.compaction_horizon.max(offset);
        Ok(())
    }

    fn close(&self) -> Result<()> {
        self.flush().map(|_| ())
    }
}
