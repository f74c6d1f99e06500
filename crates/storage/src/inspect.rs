//! Read-only inspection of a log directory: what `tandem log dump` prints and
//! `tandem log check` verifies, like Kafka's dump-log tool. Nothing here writes, so it is safe
//! on the directory of a running node and on a damaged log that recovery would cut.

use std::fs::File;
use std::path::Path;

use crate::batch::{self, BatchHeader, HEADER_LEN};
use crate::epoch::EpochCache;
use crate::error::{IoContext, Result, StorageError};
use crate::fs::{Directory, OsDir, SegmentFile, TEMP_SUFFIX};
use crate::index::OffsetIndex;
use crate::log::{EPOCH_FILE, HIGH_WATERMARK_FILE, LOG_START_FILE, MARKER_FILE};
use crate::segment::{self, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX};

/// One batch as found on disk.
#[derive(Debug, Clone)]
pub struct BatchInfo {
    pub segment: String,
    pub position: u64,
    pub header: BatchHeader,
    pub crc_ok: bool,
}

/// The outcome of inspecting a directory.
#[derive(Debug, Default)]
pub struct Report {
    pub segments: usize,
    pub batches: u64,
    pub records: u64,
    pub bytes: u64,
    pub first_offset: Option<i64>,
    pub log_end_offset: Option<i64>,
    pub epochs: Vec<(i32, i64)>,
    pub high_watermark: Option<i64>,
    pub log_start_offset: Option<i64>,
    /// Everything that is wrong, each with where it is. Empty means the log is sound.
    pub problems: Vec<String>,
    /// Harmless findings, such as a checkpoint left half-written by a crash.
    pub notes: Vec<String>,
}

impl Report {
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Reads every file of the log in `path`, calling `on_batch` for each batch in offset order.
pub fn inspect(path: &Path, mut on_batch: impl FnMut(&BatchInfo)) -> Result<Report> {
    let place = path.display().to_string();
    let dir = OsDir::existing(path).map_err(|e| StorageError::NotALog {
        path: place.clone(),
        reason: e.to_string(),
    })?;
    let mut names = dir
        .list()
        .context(&place, || "listing the directory".into())?;
    names.sort();
    if !names.iter().any(|n| n == MARKER_FILE) {
        return Err(StorageError::NotALog {
            path: place,
            reason: format!("no {MARKER_FILE} marker file"),
        });
    }
    let mut report = Report::default();
    for name in &names {
        if name.ends_with(TEMP_SUFFIX) {
            report.notes.push(format!(
                "{name}: checkpoint left half-written by a crash; the next open removes it"
            ));
        }
    }

    let read_offset = |file: &str, report: &mut Report| -> Option<i64> {
        let data = dir.read(file).ok().flatten()?;
        match String::from_utf8_lossy(&data).trim_end().parse::<i64>() {
            Ok(v) if v >= 0 => Some(v),
            _ => {
                report.problems.push(format!(
                    "{file}: not an offset: {:?}",
                    String::from_utf8_lossy(&data)
                ));
                None
            }
        }
    };
    report.high_watermark = read_offset(HIGH_WATERMARK_FILE, &mut report);
    report.log_start_offset = read_offset(LOG_START_FILE, &mut report);
    let epochs = match dir
        .read(EPOCH_FILE)
        .context(&place, || "reading the epoch file".into())?
    {
        None => {
            report
                .notes
                .push(format!("{EPOCH_FILE} missing; the next open rebuilds it"));
            None
        }
        Some(data) => match EpochCache::decode(&String::from_utf8_lossy(&data)) {
            Ok(cache) => Some(cache),
            Err(reason) => {
                report.problems.push(format!("{EPOCH_FILE}: {reason}"));
                None
            }
        },
    };
    if let Some(cache) = &epochs {
        report.epochs = cache
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect();
    }

    let may_have_gaps = names.iter().any(|n| n == crate::log::GAPS_FILE);
    let bases: Vec<i64> = names
        .iter()
        .filter_map(|n| segment::parse_file_name(n, LOG_SUFFIX))
        .collect();
    let mut expected: Option<i64> = None;
    for (i, &base) in bases.iter().enumerate() {
        let name = segment::file_name(base, LOG_SUFFIX);
        report.segments += 1;
        if let Some(expected) = expected {
            // Compaction and a follower copying a compacted log leave gaps: a segment may start
            // after the previous one ends, never before.
            if base < expected || (!may_have_gaps && base != expected) {
                report.problems.push(format!(
                    "{name}: segment starts at {base}, before the previous one ends at {expected}"
                ));
            }
        }
        let file = File::open(path.join(&name)).context(&place, || format!("opening {name}"))?;
        let end = inspect_segment(
            &name,
            base,
            &file,
            &mut report,
            &mut on_batch,
            epochs.as_ref(),
            may_have_gaps,
        )?;
        report.first_offset.get_or_insert(base);
        expected = Some(end);
        let is_last = i + 1 == bases.len();
        if !is_last {
            check_sealed_indexes(&dir, base, file, &mut report)?;
        }
    }
    report.log_end_offset = expected;
    if let (Some(hw), Some(leo)) = (report.high_watermark, report.log_end_offset) {
        if hw > leo {
            report.notes.push(format!(
                "{HIGH_WATERMARK_FILE}: {hw} is past the log end {leo}; the next open clamps it"
            ));
        }
    }
    if let (Some((_, start)), Some(leo)) = (report.epochs.last(), report.log_end_offset) {
        if *start > leo {
            report.problems.push(format!(
                "{EPOCH_FILE}: latest epoch starts at {start}, past the log end {leo}"
            ));
        }
    }
    Ok(report)
}

/// Walks one segment file batch by batch; returns the offset after its last good batch.
fn inspect_segment(
    name: &str,
    base: i64,
    file: &File,
    report: &mut Report,
    on_batch: &mut impl FnMut(&BatchInfo),
    epochs: Option<&EpochCache>,
    may_have_gaps: bool,
) -> Result<i64> {
    let len = SegmentFile::len(file).context(name, || "sizing the segment".into())?;
    let mut position = 0u64;
    let mut next_offset = base;
    while position < len {
        let remaining = len - position;
        if remaining < HEADER_LEN as u64 {
            report.problems.push(format!(
                "{name} at byte {position}: torn batch header ({remaining} bytes); recovery cuts here"
            ));
            break;
        }
        let mut head = [0u8; HEADER_LEN];
        SegmentFile::read_at(file, position, &mut head).context(name, || "reading".into())?;
        let header = match BatchHeader::parse(&head) {
            Ok(h) => h,
            Err(e) => {
                report
                    .problems
                    .push(format!("{name} at byte {position}: {e}"));
                break;
            }
        };
        let size = header.size();
        if size < HEADER_LEN as i64 || size as u64 > remaining {
            report.problems.push(format!(
                "{name} at byte {position}: batch declares {size} bytes, {remaining} remain; recovery cuts here"
            ));
            break;
        }
        let mut whole = vec![0u8; size as usize];
        SegmentFile::read_at(file, position, &mut whole).context(name, || "reading".into())?;
        let crc_ok = batch::validate(&whole).is_ok();
        if !crc_ok {
            let reason = batch::validate(&whole)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            report.problems.push(format!(
                "{name} at byte {position} (offset {}): {reason}",
                header.base_offset
            ));
        }
        if header.base_offset < next_offset || (!may_have_gaps && header.base_offset != next_offset)
        {
            report.problems.push(format!(
                "{name} at byte {position}: batch starts at offset {}, expected {next_offset} or later",
                header.base_offset
            ));
        }
        if let Some(cache) = epochs {
            let known = cache.epoch_for_offset(header.base_offset);
            if known.is_some() && known != Some(header.leader_epoch) {
                report.problems.push(format!(
                    "{name} at byte {position}: batch at offset {} has epoch {}, the epoch file says {:?}",
                    header.base_offset, header.leader_epoch, known
                ));
            }
        }
        on_batch(&BatchInfo {
            segment: name.to_string(),
            position,
            header,
            crc_ok,
        });
        report.batches += 1;
        report.records += header.record_count.max(0) as u64;
        report.bytes += size as u64;
        position += size as u64;
        next_offset = header.next_offset();
    }
    Ok(next_offset)
}

/// A sealed segment's saved indexes must match what its batches say.
fn check_sealed_indexes(dir: &OsDir, base: i64, file: File, report: &mut Report) -> Result<()> {
    let place = dir.describe();
    let index_name = segment::file_name(base, INDEX_SUFFIX);
    let Some(saved) = dir
        .read(&index_name)
        .context(&place, || "reading an index".into())?
    else {
        report
            .notes
            .push(format!("{index_name} missing; the next open rebuilds it"));
        return Ok(());
    };
    if dir
        .read(&segment::file_name(base, TIME_INDEX_SUFFIX))
        .context(&place, || "reading a time index".into())?
        .is_none()
    {
        report.notes.push(format!(
            "{} missing; the next open rebuilds it",
            segment::file_name(base, TIME_INDEX_SUFFIX)
        ));
    }
    let len = SegmentFile::len(&file).context(&place, || "sizing".into())?;
    let saved = match OffsetIndex::decode(&saved, len) {
        Ok(index) => index,
        Err(reason) => {
            report
                .problems
                .push(format!("{index_name}: {reason}; the next open rebuilds it"));
            return Ok(());
        }
    };
    for entry in saved.entries() {
        let mut head = [0u8; HEADER_LEN];
        let points_at_batch = SegmentFile::read_at(&file, entry.position as u64, &mut head).is_ok()
            && BatchHeader::parse(&head)
                .is_ok_and(|h| h.base_offset == base + entry.relative_offset as i64);
        if !points_at_batch {
            report.problems.push(format!(
                "{index_name}: entry offset {} -> byte {} does not point at that batch; the next open rebuilds it",
                base + entry.relative_offset as i64,
                entry.position
            ));
            break;
        }
    }
    Ok(())
}
