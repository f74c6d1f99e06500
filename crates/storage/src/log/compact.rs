//! Log compaction for key-value tables: keep the latest record of each key.
//!
//! ```text
//!  without the state lock                                   state lock (brief)
//!  1. snapshot the segment list (files are Arc'd)
//!  2. key map: read every batch below up_to          ──>  (nothing)
//!     key -> offset of its latest record
//!  3. horizon checkpoint, if any record goes (checkpoint lock)
//!  4. per group of adjacent sealed segments:
//!     write <base>.log.cleaned (+ .index/.timeindex.cleaned), fsync;
//!     remove the group's old index files, fsync dir
//!                                                     5. still the same segments, no truncation?
//!                                                        one segment:  rename cleaned -> .log
//!                                                        several:      rename cleaned -> .log.swap,
//!                                                          fsync dir (commit), remove the others,
//!                                                          rename .swap -> .log
//!                                                        rename the indexes; swap in memory
//!  6. fsync dir
//! ```
//!
//! A crash before the commit leaves the old segments (the `.cleaned` files are removed at open,
//! missing indexes are rebuilt by a scan); after it, the next open finishes the swap from the
//! `.swap` file. Readers hold the state lock while they read, and an open handle keeps reading
//! the file it opened on both directories, so nobody reads a half-swapped segment.

use std::collections::{HashMap, VecDeque};
use std::io;

use bytes::{Bytes, BytesMut};

use super::*;
use crate::batch::{Compression, HEADER_LEN, LOG_OVERHEAD};

/// Bytes read per step.
const READ_WINDOW: usize = 1 << 20;

/// A segment as compaction saw it when it started.
struct SegmentView<F> {
    base_offset: i64,
    file: Arc<F>,
    size: u64,
    next_offset: i64,
    first_append_ms: Option<i64>,
    last_append_ms: i64,
}

/// The latest record of a key below `up_to`.
#[derive(Clone, Copy)]
struct Latest {
    offset: i64,
    /// A tombstone old enough to go.
    expired_tombstone: bool,
    /// An older record of the key lies in a segment being cleaned, so it goes.
    supersedes_cleaned: bool,
}

/// Why reading a segment stopped.
enum ReadProblem {
    Io(io::Error),
    Corrupt { position: u64, reason: String },
}

/// Sequential reader of a segment's batches, each checked whole (CRC included): compaction
/// rewrites CRCs, so it must never take in a batch that bit rot changed.
struct BatchReader<'a, F> {
    file: &'a F,
    position: u64,
    end: u64,
    window: Bytes,
    window_start: u64,
}

impl<'a, F: SegmentFile> BatchReader<'a, F> {
    fn new(file: &'a F, end: u64) -> Self {
        BatchReader {
            file,
            position: 0,
            end,
            window: Bytes::new(),
            window_start: 0,
        }
    }

    fn ensure(&mut self, len: usize) -> io::Result<usize> {
        let from = self.position.wrapping_sub(self.window_start) as usize;
        if self.position >= self.window_start && from + len <= self.window.len() {
            return Ok(from);
        }
        let want = (self.end - self.position).min(len.max(READ_WINDOW) as u64) as usize;
        let mut buf = BytesMut::zeroed(want);
        self.file.read_at(self.position, &mut buf)?;
        self.window = buf.freeze();
        self.window_start = self.position;
        Ok(0)
    }

    fn next(&mut self) -> std::result::Result<Option<(BatchHeader, Bytes)>, ReadProblem> {
        if self.position >= self.end {
            return Ok(None);
        }
        let position = self.position;
        let corrupt = |reason: String| ReadProblem::Corrupt { position, reason };
        let remaining = self.end - position;
        if remaining < HEADER_LEN as u64 {
            return Err(corrupt(format!("{remaining} bytes cannot hold a batch")));
        }
        let from = self.ensure(LOG_OVERHEAD).map_err(ReadProblem::Io)?;
        let (_, size) = batch::peek_size(&self.window[from..])
            .ok_or_else(|| corrupt("batch header cut short".into()))?;
        if size < HEADER_LEN as i64 || size as u64 > remaining {
            return Err(corrupt(format!(
                "batch declares {size} bytes, {remaining} remain"
            )));
        }
        let from = self.ensure(size as usize).map_err(ReadProblem::Io)?;
        let bytes = self.window.slice(from..from + size as usize);
        let header = batch::validate(&bytes).map_err(|e| corrupt(e.to_string()))?;
        self.position += size as u64;
        Ok(Some((header, bytes)))
    }
}

/// What happens to one batch of a segment being cleaned.
enum BatchFate {
    Keep,
    Drop,
    Rewrite(BytesMut),
}

/// Counters of one group's cleaning.
#[derive(Default)]
struct Cleaned {
    changed: bool,
    records_removed: u64,
    tombstones_removed: u64,
    bytes_read: u64,
}

impl<D: Directory> SegmentedLog<D> {
    fn corrupt(&self, base: i64, problem: ReadProblem) -> StorageError {
        match problem {
            ReadProblem::Io(source) => StorageError::Io {
                action: format!("reading segment {base} for compaction"),
                dir: self.place.clone(),
                source,
            },
            ReadProblem::Corrupt { position, reason } => StorageError::CorruptSegment {
                dir: self.place.clone(),
                segment: segment::file_name(base, LOG_SUFFIX),
                position,
                reason,
            },
        }
    }

    pub(super) fn compact_below(
        &self,
        up_to: i64,
        now_ms: i64,
        config: &CompactionConfig,
    ) -> Result<CompactionReport> {
        config.validate().map_err(StorageError::InvalidArgument)?;
        let _compaction_guard = self.compaction_lock.lock();
        self.check_not_poisoned()?;

        // 1. What the log is now. Sealed segments do not change unless a truncation or
        // retention removes them; the active one only grows past the size seen here.
        let (views, active_base, up_to, truncations) = {
            let state = self.state.read();
            let up_to = up_to
                .min(state.log_end_offset())
                .max(state.log_start_offset);
            let views: Vec<SegmentView<D::File>> = state
                .segments
                .values()
                .map(|s| SegmentView {
                    base_offset: s.base_offset,
                    file: Arc::clone(&s.file),
                    size: s.size,
                    next_offset: s.next_offset,
                    first_append_ms: s.first_append_ms,
                    last_append_ms: s.last_append_ms,
                })
                .collect();
            (
                views,
                state.active().base_offset,
                up_to,
                self.truncations.load(Ordering::SeqCst),
            )
        };
        let mut report = CompactionReport::default();
        // Sealed segments wholly below up_to: a prefix of the log.
        let cleanable: Vec<&SegmentView<D::File>> = views
            .iter()
            .take_while(|v| v.base_offset != active_base && v.next_offset <= up_to)
            .collect();
        let cleanable_end = cleanable.last().map_or(i64::MIN, |v| v.next_offset);

        // 2. The key map over every record below up_to, and each producer's last batches.
        let expired = |header: &BatchHeader| {
            header.max_timestamp >= 0
                && now_ms.saturating_sub(header.max_timestamp) > config.tombstone_retention_ms
        };
        let mut latest: HashMap<Bytes, Latest> = HashMap::new();
        let mut producers: HashMap<i64, VecDeque<i64>> = HashMap::new();
        for view in views.iter().filter(|v| v.base_offset < up_to) {
            let mut reader = BatchReader::new(&*view.file, view.size);
            while let Some((header, bytes)) = reader
                .next()
                .map_err(|p| self.corrupt(view.base_offset, p))?
            {
                if header.base_offset >= up_to {
                    break;
                }
                report.bytes_read += bytes.len() as u64;
                if header.has_producer_id() && config.producer_batches_retained > 0 {
                    let last = producers.entry(header.producer_id).or_default();
                    last.push_back(header.base_offset);
                    if last.len() > config.producer_batches_retained {
                        last.pop_front();
                    }
                }
                if header.compression() != Compression::None || header.is_control() {
                    continue; // kept whole; see docs/storage.md
                }
                let records = batch::decode_records(&bytes).map_err(|e| {
                    self.corrupt(
                        view.base_offset,
                        ReadProblem::Corrupt {
                            position: reader.position - bytes.len() as u64,
                            reason: e.to_string(),
                        },
                    )
                })?;
                let tombstones_expired = expired(&header);
                for record in records {
                    let offset = header.base_offset + record.offset_delta as i64;
                    let Some(key) = record.key else { continue };
                    if offset >= up_to {
                        break;
                    }
                    let entry = Latest {
                        offset,
                        expired_tombstone: record.value.is_none() && tombstones_expired,
                        supersedes_cleaned: false,
                    };
                    // Copied: a slice would keep the whole read window alive.
                    match latest.get_mut(key.as_ref()) {
                        Some(slot) => {
                            let supersedes_cleaned =
                                slot.supersedes_cleaned || slot.offset < cleanable_end;
                            *slot = Latest {
                                supersedes_cleaned,
                                ..entry
                            };
                        }
                        None => {
                            latest.insert(Bytes::copy_from_slice(&key), entry);
                        }
                    }
                }
            }
        }
        let producer_batches: std::collections::HashSet<i64> =
            producers.into_values().flatten().collect();

        // 3. The horizon first, durable before any segment without those records can be. A
        // prefix of the cleaned log is a state that never existed (a key's old record gone,
        // the record that replaced it not reached yet; a tombstone gone), so the horizon is
        // the first offset at which the log is whole again: past the latest record of every
        // key that loses one (sim seed 12: a horizon raised only for expired tombstones let a
        // follower stop in between).
        let consistent_from = latest
            .values()
            .filter(|l| l.supersedes_cleaned || (l.expired_tombstone && l.offset < cleanable_end))
            .map(|l| l.offset + 1)
            .max();
        if let Some(end) = consistent_from {
            let _checkpoint_guard = self.checkpoint_lock.lock();
            if end > self.state.read().compaction_horizon {
                self.write_compaction_horizon(end)?;
                let mut state = self.state.write();
                state.compaction_horizon = state.compaction_horizon.max(end);
            }
        }

        // 4–6. Clean and swap group by group.
        let max_bytes = config.max_segment_bytes;
        let mut groups: Vec<Vec<&SegmentView<D::File>>> = Vec::new();
        let mut after_empty = false;
        for view in cleanable {
            if view.size == 0 {
                // Nothing to clean (a segment a truncation into a gap sealed empty); it also
                // ends the group, so that a cleaned file still ends where its last input did.
                after_empty = true;
                continue;
            }
            let fits = !std::mem::take(&mut after_empty)
                && groups.last().is_some_and(|g| {
                    let first = g[0].base_offset;
                    let bytes: u64 = g.iter().map(|v| v.size).sum();
                    bytes + view.size <= max_bytes && view.next_offset - first <= i32::MAX as i64
                });
            match groups.last_mut() {
                Some(group) if fits => group.push(view),
                _ => groups.push(vec![view]),
            }
        }
        for group in groups {
            if self.truncations.load(Ordering::SeqCst) != truncations {
                report.segments_abandoned += group.len();
                continue;
            }
            self.clean_group(
                &group,
                &latest,
                &producer_batches,
                now_ms,
                truncations,
                &mut report,
                expired,
            )?;
        }
        report.compaction_horizon = self.compaction_horizon();
        if report.segments_rewritten > 0 {
            info!(log = %self.place, segments = report.segments_rewritten,
                written = report.segments_written, bytes_before = report.bytes_before,
                bytes_after = report.bytes_after, records_removed = report.records_removed,
                tombstones_removed = report.tombstones_removed,
                horizon = report.compaction_horizon, "compacted");
        }
        Ok(report)
    }

    /// What compaction does with one batch of a cleaned segment.
    fn batch_fate(
        header: &BatchHeader,
        bytes: &Bytes,
        latest: &HashMap<Bytes, Latest>,
        must_stay: bool,
        expired: bool,
        cleaned: &mut Cleaned,
    ) -> std::result::Result<BatchFate, BatchError> {
        if header.compression() != Compression::None || header.is_control() {
            return Ok(BatchFate::Keep);
        }
        let records = batch::decode_records_with_spans(bytes)?;
        let mut kept = Vec::with_capacity(records.len());
        for (record, span) in &records {
            let offset = header.base_offset + record.offset_delta as i64;
            let keep = match &record.key {
                None => true, // no key, nothing supersedes it
                Some(key) => {
                    let is_latest = latest.get(key.as_ref()).is_some_and(|l| l.offset == offset);
                    is_latest && !(record.value.is_none() && expired)
                }
            };
            if keep {
                kept.push(span.clone());
            } else {
                cleaned.records_removed += 1;
                if record.value.is_none() {
                    cleaned.tombstones_removed += 1;
                }
            }
        }
        Ok(if kept.len() == records.len() {
            BatchFate::Keep
        } else if kept.is_empty() && !must_stay {
            BatchFate::Drop
        } else {
            BatchFate::Rewrite(batch::rewrite_with_records(bytes, &kept))
        })
    }

    /// Cleans one group of adjacent sealed segments into one file and swaps it in.
    #[allow(clippy::too_many_arguments)]
    fn clean_group(
        &self,
        group: &[&SegmentView<D::File>],
        latest: &HashMap<Bytes, Latest>,
        producer_batches: &std::collections::HashSet<i64>,
        now_ms: i64,
        truncations: u64,
        report: &mut CompactionReport,
        expired: impl Fn(&BatchHeader) -> bool,
    ) -> Result<()> {
        let place = &self.place;
        let base = group[0].base_offset;
        let end = group[group.len() - 1].next_offset;
        let log_name = segment::file_name(base, LOG_SUFFIX);
        let cleaned_name = format!("{log_name}{CLEANED_SUFFIX}");
        let file = self
            .dir
            .create(&cleaned_name)
            .context(place, || format!("creating {cleaned_name}"))?;
        let interval = self.config.index_interval_bytes;
        let mut out = Segment::new(base, file, self.clock.now_ms());
        let mut cleaned = Cleaned {
            changed: group.len() > 1,
            ..Cleaned::default()
        };
        let result = (|| -> Result<()> {
            for view in group {
                let mut reader = BatchReader::new(&*view.file, view.size);
                while let Some((header, bytes)) = reader
                    .next()
                    .map_err(|p| self.corrupt(view.base_offset, p))?
                {
                    cleaned.bytes_read += bytes.len() as u64;
                    // The group's last batch keeps the end offset (followers reach the
                    // leader's log end); a producer's last batches keep its sequence state.
                    let must_stay = header.next_offset() == end
                        || producer_batches.contains(&header.base_offset);
                    let fate = Self::batch_fate(
                        &header,
                        &bytes,
                        latest,
                        must_stay,
                        expired(&header),
                        &mut cleaned,
                    )
                    .map_err(|e| {
                        self.corrupt(
                            view.base_offset,
                            ReadProblem::Corrupt {
                                position: reader.position - bytes.len() as u64,
                                reason: e.to_string(),
                            },
                        )
                    })?;
                    let written = match fate {
                        BatchFate::Keep => bytes,
                        BatchFate::Drop => {
                            cleaned.changed = true;
                            continue;
                        }
                        BatchFate::Rewrite(rewritten) => {
                            cleaned.changed = true;
                            rewritten.freeze()
                        }
                    };
                    let header = batch::validate(&written).map_err(|e| {
                        StorageError::InvalidArgument(format!("compaction wrote a bad batch: {e}"))
                    })?;
                    out.append(&written, &header, interval, now_ms)
                        .context(place, || format!("writing {cleaned_name}"))?;
                }
            }
            Ok(())
        })();
        report.bytes_read += cleaned.bytes_read;
        let discard = |this: &Self| {
            let _ = this.dir.remove(&cleaned_name);
        };
        if let Err(e) = result {
            discard(self);
            return Err(e);
        }
        if !cleaned.changed {
            discard(self);
            return Ok(());
        }
        debug_assert_eq!(out.next_offset, end, "the group's last batch is kept");
        // The segment's age is its inputs' (rolling by age, should a truncation make it active).
        out.first_append_ms = group.iter().filter_map(|v| v.first_append_ms).min();
        out.last_append_ms = group.iter().map(|v| v.last_append_ms).max().unwrap_or(0);
        out.seal();
        out.file
            .sync_data()
            .context(place, || format!("syncing {cleaned_name}"))?;
        let index_names = [
            (INDEX_SUFFIX, out.index.encode()),
            (TIME_INDEX_SUFFIX, out.time_index.encode()),
        ];
        for (suffix, bytes) in &index_names {
            let name = format!("{}{CLEANED_SUFFIX}", segment::file_name(base, suffix));
            let written = self.dir.create(&name).and_then(|f| {
                f.write_at(0, bytes)?;
                f.sync_data()
            });
            if let Err(e) = written {
                discard(self);
                return Err(e).context(place, || format!("writing {name}"));
            }
        }
        // Old indexes go durably before the new file can appear under the same name: an index
        // must never describe another file than its segment.
        for view in group {
            for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                let name = segment::file_name(view.base_offset, suffix);
                self.dir
                    .remove(&name)
                    .context(place, || format!("removing {name}"))?;
            }
        }
        self.dir
            .sync()
            .context(place, || "syncing the directory".into())?;

        // The swap, under the state lock.
        {
            let mut state = self.state.write();
            let active_base = state.active().base_offset;
            let unchanged = self.truncations.load(Ordering::SeqCst) == truncations
                && group.iter().all(|view| {
                    view.base_offset != active_base
                        && state.segments.get(&view.base_offset).is_some_and(|s| {
                            Arc::ptr_eq(&s.file, &view.file) && s.size == view.size
                        })
                });
            if !unchanged {
                drop(state);
                info!(log = %place, segment = %log_name, "abandoned compacting segments that changed meanwhile");
                discard(self);
                for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                    let _ = self.dir.remove(&format!(
                        "{}{CLEANED_SUFFIX}",
                        segment::file_name(base, suffix)
                    ));
                }
                report.segments_abandoned += group.len();
                return Ok(());
            }
            let swapped = self
                .note_gaps(&mut state)
                .and_then(|_| self.swap_files(group, &cleaned_name, &log_name));
            if let Err(e) = swapped {
                // Past the commit the directory and the segment map may disagree: refuse
                // changes until a reopen finishes the swap from what is on disk.
                warn!(log = %place, segment = %log_name, error = %e, "a compaction swap failed; the log refuses changes until it is reopened");
                self.poisoned.store(true, Ordering::SeqCst);
                return Err(e);
            }
            for view in group {
                state.segments.remove(&view.base_offset);
            }
            report.segments_rewritten += group.len();
            report.segments_written += 1;
            report.bytes_before += group.iter().map(|v| v.size).sum::<u64>();
            report.bytes_after += out.size;
            report.records_removed += cleaned.records_removed;
            report.tombstones_removed += cleaned.tombstones_removed;
            state.segments.insert(base, out);
            state.check_invariants();
        }
        self.dir
            .sync()
            .context(place, || "syncing the directory".into())
    }

    /// Puts the cleaned file (and its indexes) in place of the group's segments. Called with
    /// the state lock held; the commit point is the rename that makes the cleaned file visible
    /// under a name recovery acts on.
    fn swap_files(
        &self,
        group: &[&SegmentView<D::File>],
        cleaned_name: &str,
        log_name: &str,
    ) -> Result<()> {
        let place = &self.place;
        let base = group[0].base_offset;
        if group.len() == 1 {
            // One rename replaces the old file atomically.
            self.dir
                .rename(cleaned_name, log_name)
                .context(place, || format!("renaming {cleaned_name}"))?;
        } else {
            let swap_name = format!("{log_name}{SWAP_SUFFIX}");
            self.dir
                .rename(cleaned_name, &swap_name)
                .context(place, || format!("renaming {cleaned_name}"))?;
            self.dir
                .sync()
                .context(place, || "syncing the directory".into())?;
            for view in &group[1..] {
                let name = segment::file_name(view.base_offset, LOG_SUFFIX);
                self.dir
                    .remove(&name)
                    .context(place, || format!("removing {name}"))?;
            }
            self.dir
                .rename(&swap_name, log_name)
                .context(place, || format!("renaming {swap_name}"))?;
        }
        for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            let name = segment::file_name(base, suffix);
            self.dir
                .rename(&format!("{name}{CLEANED_SUFFIX}"), &name)
                .context(place, || format!("renaming the cleaned {name}"))?;
        }
        Ok(())
    }
}
