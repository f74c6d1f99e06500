//! One segment: a file of contiguous batches starting at `base_offset`, with its sparse
//! offset and time indexes kept in memory (and written beside it when it is sealed).

use std::io;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::batch::{self, BatchHeader, HEADER_LEN, LOG_OVERHEAD};
use crate::fs::SegmentFile;
use crate::index::{OffsetEntry, OffsetIndex, TimeEntry, TimeIndex};

pub const LOG_SUFFIX: &str = ".log";
pub const INDEX_SUFFIX: &str = ".index";
pub const TIME_INDEX_SUFFIX: &str = ".timeindex";

pub fn file_name(base_offset: i64, suffix: &str) -> String {
    format!("{base_offset:020}{suffix}")
}

/// Parses `00000000000000000042.log` into 42.
pub fn parse_file_name(name: &str, suffix: &str) -> Option<i64> {
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Where and why a scan found the segment's valid batches to end before the file does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Byte position of the first bad byte's batch: everything before it is intact.
    pub position: u64,
    /// The offset the bad batch should have started at.
    pub offset: i64,
    pub reason: String,
}

pub struct Segment<F> {
    pub base_offset: i64,
    pub file: Arc<F>,
    /// Bytes of whole, valid batches; the file is exactly this long.
    pub size: u64,
    /// Offset after the last batch; `base_offset` when empty.
    pub next_offset: i64,
    pub index: OffsetIndex,
    pub time_index: TimeIndex,
    /// Log bytes since the last offset index entry.
    bytes_since_index_entry: u64,
    /// Largest batch timestamp in the segment, or `NO_TIMESTAMP`.
    pub max_timestamp: i64,
    offset_of_max_timestamp: i64,
    /// Wall-clock time of the first append since the segment was created or opened: rolling
    /// by age counts from it. Client timestamps are not used, so a producer with an old clock
    /// cannot make every batch roll a segment.
    pub first_append_ms: Option<i64>,
    /// Wall-clock time of the last append, or of opening: the age of a segment whose batches
    /// carry no timestamps.
    pub last_append_ms: i64,
}

impl<F: SegmentFile> Segment<F> {
    pub fn new(base_offset: i64, file: F, now_ms: i64) -> Segment<F> {
        Segment {
            base_offset,
            file: Arc::new(file),
            size: 0,
            next_offset: base_offset,
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index_entry: 0,
            max_timestamp: batch::NO_TIMESTAMP,
            offset_of_max_timestamp: base_offset,
            first_append_ms: None,
            last_append_ms: now_ms,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    pub fn relative(&self, offset: i64) -> u32 {
        debug_assert!(offset >= self.base_offset && offset - self.base_offset <= u32::MAX as i64);
        (offset - self.base_offset) as u32
    }

    /// Whether `header` can go in this segment without overflowing relative offsets.
    pub fn fits_offsets(&self, header: &BatchHeader) -> bool {
        header.last_offset() - self.base_offset <= i32::MAX as i64
    }

    /// Newest timestamp of the segment's data, for retention by age.
    pub fn newest_ms(&self) -> i64 {
        if self.max_timestamp >= 0 {
            self.max_timestamp
        } else {
            self.last_append_ms
        }
    }

    /// Writes one validated batch at the end. On an I/O error the file is cut back and the
    /// segment is unchanged.
    pub fn append(
        &mut self,
        batch: &[u8],
        header: &BatchHeader,
        index_interval_bytes: u64,
        now_ms: i64,
    ) -> io::Result<()> {
        // Offsets may jump (a gap left by compaction), never go back.
        debug_assert!(header.base_offset >= self.next_offset);
        if let Err(e) = self.file.write_at(self.size, batch) {
            // Best effort: a partial write must not stay in front of the next append.
            let _ = self.file.set_len(self.size);
            return Err(e);
        }
        self.first_append_ms.get_or_insert(now_ms);
        self.last_append_ms = now_ms;
        self.track(header, index_interval_bytes);
        Ok(())
    }

    /// Accounts for the batch `header` written at `self.size`: offsets, size and indexes.
    fn track(&mut self, header: &BatchHeader, index_interval_bytes: u64) {
        let position = self.size;
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.offset_of_max_timestamp = header.base_offset;
        }
        if position > 0 && self.bytes_since_index_entry >= index_interval_bytes {
            self.index.push(OffsetEntry {
                relative_offset: self.relative(header.base_offset),
                position: position as u32,
            });
            self.push_time_entry();
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += header.size() as u64;
        self.size += header.size() as u64;
        self.next_offset = header.next_offset();
    }

    fn push_time_entry(&mut self) {
        if self.max_timestamp >= 0 {
            self.time_index.maybe_push(TimeEntry {
                timestamp: self.max_timestamp,
                relative_offset: self.relative(self.offset_of_max_timestamp),
            });
        }
    }

    /// Called when the segment stops being active: the final time entry lets a reopened log
    /// know the segment's largest timestamp without scanning it.
    pub fn seal(&mut self) {
        self.push_time_entry();
    }

    /// Reads the header of the batch at `position`, checking that its length is plausible:
    /// sealed segments are not CRC-checked at open, so bit rot can reach here, and a bad length
    /// must be an error, not a loop that never advances.
    pub fn read_header(&self, position: u64) -> io::Result<BatchHeader> {
        let mut buf = [0u8; HEADER_LEN];
        self.file.read_at(position, &mut buf)?;
        let header =
            BatchHeader::parse(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.check_size(position, header.size())?;
        Ok(header)
    }

    fn check_size(&self, position: u64, size: i64) -> io::Result<u64> {
        if size < HEADER_LEN as i64 || position.saturating_add(size as u64) > self.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "batch at byte {position} of segment {} declares {size} bytes; the segment is damaged (run `tandem log check`)",
                    self.base_offset
                ),
            ));
        }
        Ok(size as u64)
    }

    /// Position of the first batch that holds `offset` or anything after it; `None` if the
    /// segment ends at or before `offset`.
    pub fn locate(&self, offset: i64) -> io::Result<Option<(u64, BatchHeader)>> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        let mut position = if offset <= self.base_offset {
            0
        } else {
            self.index
                .floor(self.relative(offset))
                .map_or(0, |e| e.position as u64)
        };
        while position < self.size {
            let header = self.read_header(position)?;
            if header.next_offset() > offset {
                return Ok(Some((position, header)));
            }
            position += header.size() as u64;
        }
        Ok(None)
    }

    /// Whole batches from `position`, as many as fit in `max_bytes`, but at least one.
    pub fn read(&self, position: u64, max_bytes: usize) -> io::Result<Bytes> {
        let available = (self.size - position) as usize;
        let want = available.min(max_bytes.max(LOG_OVERHEAD));
        let mut buf = BytesMut::zeroed(want);
        self.file.read_at(position, &mut buf)?;
        let mut end = 0usize;
        while let Some((_, size)) = batch::peek_size(&buf[end..]) {
            let size = self.check_size(position + end as u64, size)? as usize;
            if end + size > buf.len() {
                break;
            }
            end += size;
        }
        if end == 0 {
            // The first batch alone is larger than max_bytes: return it whole, so that a
            // reader always makes progress.
            let (_, size) = batch::peek_size(&buf).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "batch header cut short")
            })?;
            let size = self.check_size(position, size)? as usize;
            let mut whole = BytesMut::zeroed(size);
            self.file.read_at(position, &mut whole)?;
            return Ok(whole.freeze());
        }
        buf.truncate(end);
        Ok(buf.freeze())
    }

    /// Rebuilds the segment by scanning its file from the start, validating every batch
    /// (CRC included when `check_crc`, and whatever `check_batch` adds, such as epochs).
    /// Stops at the first bad batch and reports it; the segment then covers only the intact
    /// prefix, and the caller decides whether to cut.
    pub fn scan(
        base_offset: i64,
        file: F,
        index_interval_bytes: u64,
        check_crc: bool,
        allow_gaps: bool,
        now_ms: i64,
        mut check_batch: impl FnMut(&BatchHeader) -> Result<(), String>,
    ) -> io::Result<(Segment<F>, Option<Damage>)> {
        let mut segment = Segment::new(base_offset, file, now_ms);
        let file_len = segment.file.len()?;
        let mut scanner = Scanner::new(file_len);
        scanner.allow_gaps = allow_gaps;
        let damage = loop {
            match scanner.next(&*segment.file, segment.next_offset, check_crc)? {
                ScanStep::End => break None,
                ScanStep::Batch(header) => match check_batch(&header) {
                    Ok(()) => segment.track(&header, index_interval_bytes),
                    Err(reason) => {
                        break Some(Damage {
                            position: segment.size,
                            offset: segment.next_offset,
                            reason,
                        })
                    }
                },
                ScanStep::Bad(reason) => {
                    break Some(Damage {
                        position: segment.size,
                        offset: segment.next_offset,
                        reason,
                    })
                }
            }
        };
        Ok((segment, damage))
    }

    /// Opens a sealed segment from its saved indexes, scanning only from the last index entry
    /// to the end. `None` when the indexes are unusable or the tail does not scan cleanly: the
    /// caller then rebuilds with [`Segment::scan`].
    pub fn load(
        base_offset: i64,
        file: F,
        index_bytes: &[u8],
        time_index_bytes: &[u8],
        index_interval_bytes: u64,
        allow_gaps: bool,
        now_ms: i64,
    ) -> io::Result<Result<Segment<F>, (F, String)>> {
        let file_len = file.len()?;
        let index = match OffsetIndex::decode(index_bytes, file_len) {
            Ok(index) => index,
            Err(reason) => return Ok(Err((file, format!("offset index: {reason}")))),
        };
        let mut segment = Segment::new(base_offset, file, now_ms);
        if let Some(last) = index.last() {
            segment.size = last.position as u64;
            segment.next_offset = base_offset + last.relative_offset as i64;
            segment.offset_of_max_timestamp = segment.next_offset;
        }
        let has_entry = index.last().is_some();
        segment.index = index;
        if has_entry && segment.size < file_len {
            // An index entry names the exact base offset of the batch at its position; one
            // that does not match belongs to another file (say, the segment before compaction
            // rewrote it), so the index is not used.
            let mut buf = [0u8; HEADER_LEN];
            let at_entry = segment
                .file
                .read_at(segment.size, &mut buf)
                .ok()
                .and_then(|_| BatchHeader::parse(&buf).ok());
            if at_entry.is_none_or(|h| h.base_offset != segment.next_offset) {
                let file = Arc::try_unwrap(segment.file)
                    .map_err(|_| io::Error::other("segment file still shared while loading"))?;
                return Ok(Err((
                    file,
                    "the last index entry does not name a batch of this file".into(),
                )));
            }
        }
        let mut scanner = Scanner::new(file_len);
        scanner.allow_gaps = allow_gaps;
        scanner.position = segment.size;
        loop {
            match scanner.next(&*segment.file, segment.next_offset, false)? {
                ScanStep::End => break,
                ScanStep::Batch(header) => segment.track(&header, index_interval_bytes),
                ScanStep::Bad(reason) => {
                    let file = Arc::try_unwrap(segment.file)
                        .map_err(|_| io::Error::other("segment file still shared while loading"))?;
                    return Ok(Err((
                        file,
                        format!("tail after the last index entry: {reason}"),
                    )));
                }
            }
        }
        let max_relative = segment.relative(segment.next_offset.max(base_offset));
        let time_index = match TimeIndex::decode(time_index_bytes, max_relative) {
            Ok(t) => t,
            Err(reason) => {
                let file = Arc::try_unwrap(segment.file)
                    .map_err(|_| io::Error::other("segment file still shared while loading"))?;
                return Ok(Err((file, format!("time index: {reason}"))));
            }
        };
        if let Some(last) = time_index.last() {
            if last.timestamp > segment.max_timestamp {
                segment.max_timestamp = last.timestamp;
                segment.offset_of_max_timestamp = base_offset + last.relative_offset as i64;
            }
        }
        segment.time_index = time_index;
        Ok(Ok(segment))
    }

    /// Drops every batch that holds `offset` or a later one; returns the bytes removed.
    /// The in-memory state is rebuilt from a header scan of what remains.
    pub fn truncate_to(&mut self, offset: i64, index_interval_bytes: u64) -> io::Result<u64> {
        let Some((position, _)) = self.locate(offset)? else {
            return Ok(0);
        };
        let removed = self.size - position;
        self.file.set_len(position)?;
        self.file.sync_all()?;
        self.rebuild(index_interval_bytes)?;
        Ok(removed)
    }

    /// Recomputes offsets, size and indexes from the file's batch headers.
    fn rebuild(&mut self, index_interval_bytes: u64) -> io::Result<()> {
        let mut fresh = Segment {
            base_offset: self.base_offset,
            file: Arc::clone(&self.file),
            size: 0,
            next_offset: self.base_offset,
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index_entry: 0,
            max_timestamp: batch::NO_TIMESTAMP,
            offset_of_max_timestamp: self.base_offset,
            first_append_ms: self.first_append_ms,
            last_append_ms: self.last_append_ms,
        };
        let mut scanner = Scanner::new(self.file.len()?);
        // What the log itself accepted before: gaps included.
        scanner.allow_gaps = true;
        loop {
            match scanner.next(&*fresh.file, fresh.next_offset, false)? {
                ScanStep::End => break,
                ScanStep::Batch(header) => fresh.track(&header, index_interval_bytes),
                ScanStep::Bad(reason) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "segment {} changed under the log: {reason}",
                            self.base_offset
                        ),
                    ))
                }
            }
        }
        *self = fresh;
        Ok(())
    }
}

/// What one step of a scan found.
pub enum ScanStep {
    Batch(BatchHeader),
    End,
    /// The bytes at the scan position are not a valid next batch; why.
    Bad(String),
}

/// Sequential, buffered reader of the batches in a segment file.
pub struct Scanner {
    pub position: u64,
    /// Accept a batch that starts after the previous one ends (a log compaction touched):
    /// otherwise offsets must be contiguous, which catches a flipped base offset, a field the
    /// CRC does not cover.
    pub allow_gaps: bool,
    file_len: u64,
    window: Vec<u8>,
    window_start: u64,
}

const SCAN_WINDOW: usize = 1 << 20;

impl Scanner {
    pub fn new(file_len: u64) -> Scanner {
        Scanner {
            position: 0,
            allow_gaps: false,
            file_len,
            window: Vec::new(),
            window_start: 0,
        }
    }

    /// `len` bytes from the current position, reading a new window when needed.
    fn bytes<F: SegmentFile>(&mut self, file: &F, len: usize) -> io::Result<&[u8]> {
        let start = self.position;
        let in_window = start >= self.window_start
            && start + len as u64 <= self.window_start + self.window.len() as u64;
        if !in_window {
            let want = (self.file_len - start).min(len.max(SCAN_WINDOW) as u64) as usize;
            self.window.resize(want, 0);
            file.read_at(start, &mut self.window)?;
            self.window_start = start;
        }
        let from = (start - self.window_start) as usize;
        Ok(&self.window[from..from + len])
    }

    /// Reads and checks the next batch, which must start at `expected_offset`.
    pub fn next<F: SegmentFile>(
        &mut self,
        file: &F,
        expected_offset: i64,
        check_crc: bool,
    ) -> io::Result<ScanStep> {
        let remaining = self.file_len - self.position;
        if remaining == 0 {
            return Ok(ScanStep::End);
        }
        if remaining < HEADER_LEN as u64 {
            return Ok(ScanStep::Bad(format!(
                "torn batch header: {remaining} bytes where {HEADER_LEN} are needed"
            )));
        }
        let header = match BatchHeader::parse(self.bytes(file, HEADER_LEN)?) {
            Ok(h) => h,
            Err(e) => return Ok(ScanStep::Bad(e.to_string())),
        };
        let size = header.size();
        if size < HEADER_LEN as i64 {
            return Ok(ScanStep::Bad(format!(
                "batch length {} is too small",
                header.batch_length
            )));
        }
        if size as u64 > remaining {
            return Ok(ScanStep::Bad(format!(
                "torn batch: declares {size} bytes, {remaining} remain in the file"
            )));
        }
        // A compacted log has gaps: a batch may start after the previous one ends, never
        // before it.
        if header.base_offset < expected_offset
            || (!self.allow_gaps && header.base_offset != expected_offset)
        {
            return Ok(ScanStep::Bad(format!(
                "batch starts at offset {}, expected {expected_offset}",
                header.base_offset
            )));
        }
        let checked = if check_crc {
            batch::validate(self.bytes(file, size as usize)?)
        } else if header.magic != batch::MAGIC_V2 {
            Err(batch::BatchError::BadMagic(header.magic))
        } else if header.last_offset_delta < 0 {
            Err(batch::BatchError::BadRecordCount {
                count: header.record_count,
                last_offset_delta: header.last_offset_delta,
            })
        } else {
            Ok(header)
        };
        match checked {
            Ok(header) => {
                self.position += size as u64;
                Ok(ScanStep::Batch(header))
            }
            Err(e) => Ok(ScanStep::Bad(e.to_string())),
        }
    }
}
