//! Kafka record batch v2: the unit Tandem stores on disk and sends on the wire, byte for byte.
//!
//! ```text
//!  0  base offset            i64   ┐ outside the CRC: the leader assigns these
//!  8  batch length           i32   │ (bytes after this field)
//! 12  partition leader epoch i32   ┘
//! 16  magic (= 2)            i8
//! 17  crc (CRC32C)           u32   covers bytes 21..end
//! 21  attributes             i16   compression (bits 0-2), timestamp type, txn, control
//! 23  last offset delta      i32
//! 27  base (first) timestamp i64
//! 35  max timestamp          i64
//! 43  producer id            i64
//! 51  producer epoch         i16
//! 53  base sequence          i32
//! 57  record count           i32
//! 61  records...
//! ```
//!
//! Because the base offset and the leader epoch lie outside the CRC, a leader assigns them by
//! overwriting 12 bytes in place: a client's batch is never re-encoded.

use bytes::{BufMut, Bytes, BytesMut};

pub const BASE_OFFSET_OFFSET: usize = 0;
pub const BATCH_LENGTH_OFFSET: usize = 8;
pub const LEADER_EPOCH_OFFSET: usize = 12;
pub const MAGIC_OFFSET: usize = 16;
pub const CRC_OFFSET: usize = 17;
pub const ATTRIBUTES_OFFSET: usize = 21;
pub const LAST_OFFSET_DELTA_OFFSET: usize = 23;
pub const BASE_TIMESTAMP_OFFSET: usize = 27;
pub const MAX_TIMESTAMP_OFFSET: usize = 35;
pub const PRODUCER_ID_OFFSET: usize = 43;
pub const PRODUCER_EPOCH_OFFSET: usize = 51;
pub const BASE_SEQUENCE_OFFSET: usize = 53;
pub const RECORD_COUNT_OFFSET: usize = 57;
/// Size of the fixed batch header; records follow.
pub const HEADER_LEN: usize = 61;
/// Base offset and batch length: the bytes not counted by the batch length field.
pub const LOG_OVERHEAD: usize = 12;
pub const MAGIC_V2: i8 = 2;
/// Producer id of a batch from a producer that is not idempotent.
pub const NO_PRODUCER_ID: i64 = -1;
pub const NO_PRODUCER_EPOCH: i16 = -1;
pub const NO_SEQUENCE: i32 = -1;
/// Timestamp of a record or batch that carries none.
pub const NO_TIMESTAMP: i64 = -1;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// Why bytes are not a valid batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("{available} bytes cannot hold a batch header of {HEADER_LEN} bytes")]
    TooShort { available: usize },
    #[error("unsupported magic {0} (only record batch v2 is stored)")]
    BadMagic(i8),
    #[error("batch length field {0} is out of range")]
    BadLength(i32),
    #[error("batch declares {declared} bytes but only {available} are present")]
    Truncated { declared: usize, available: usize },
    #[error("CRC32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("record count {count} does not match last offset delta {last_offset_delta}")]
    BadRecordCount { count: i32, last_offset_delta: i32 },
    #[error("malformed record: {0}")]
    MalformedRecord(&'static str),
}

/// Compression codec named by the low bits of the attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
    Unknown(u8),
}

/// The decoded fixed header of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

impl BatchHeader {
    /// Decodes the fixed header. Checks only that enough bytes are present for it.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < HEADER_LEN {
            return Err(BatchError::TooShort {
                available: buf.len(),
            });
        }
        Ok(BatchHeader {
            base_offset: be_i64(buf, BASE_OFFSET_OFFSET),
            batch_length: be_i32(buf, BATCH_LENGTH_OFFSET),
            leader_epoch: be_i32(buf, LEADER_EPOCH_OFFSET),
            magic: buf[MAGIC_OFFSET] as i8,
            crc: be_i32(buf, CRC_OFFSET) as u32,
            attributes: be_i16(buf, ATTRIBUTES_OFFSET),
            last_offset_delta: be_i32(buf, LAST_OFFSET_DELTA_OFFSET),
            base_timestamp: be_i64(buf, BASE_TIMESTAMP_OFFSET),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP_OFFSET),
            producer_id: be_i64(buf, PRODUCER_ID_OFFSET),
            producer_epoch: be_i16(buf, PRODUCER_EPOCH_OFFSET),
            base_sequence: be_i32(buf, BASE_SEQUENCE_OFFSET),
            record_count: be_i32(buf, RECORD_COUNT_OFFSET),
        })
    }

    /// Bytes the whole batch occupies, header included. Zero or less means a bad length.
    pub fn size(&self) -> i64 {
        self.batch_length as i64 + LOG_OVERHEAD as i64
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }
    /// The offset right after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }
    pub fn compression(&self) -> Compression {
        match (self.attributes & COMPRESSION_MASK) as u8 {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => Compression::Unknown(other),
        }
    }
    /// LogAppendTime rather than CreateTime.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
}

/// CRC32C over the bytes the batch CRC covers (attributes to the end).
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..])
}

/// Reads the base offset and total size of the batch at the front of `buf`, from its first
/// 12 bytes alone; what a scan needs to step to the next batch.
pub fn peek_size(buf: &[u8]) -> Option<(i64, i64)> {
    if buf.len() < LOG_OVERHEAD {
        return None;
    }
    Some((
        be_i64(buf, BASE_OFFSET_OFFSET),
        be_i32(buf, BATCH_LENGTH_OFFSET) as i64 + LOG_OVERHEAD as i64,
    ))
}

/// Fully validates the single batch that starts `buf` and returns its header.
/// `buf` may extend past the batch; only the declared length is checked.
pub fn validate(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    if header.magic != MAGIC_V2 {
        return Err(BatchError::BadMagic(header.magic));
    }
    if (header.batch_length as i64) < (HEADER_LEN - LOG_OVERHEAD) as i64 {
        return Err(BatchError::BadLength(header.batch_length));
    }
    let size = header.size() as usize;
    if buf.len() < size {
        return Err(BatchError::Truncated {
            declared: size,
            available: buf.len(),
        });
    }
    let computed = compute_crc(&buf[..size]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    if header.record_count < 0
        || header.last_offset_delta < 0
        || header.last_offset_delta < header.record_count - 1
    {
        return Err(BatchError::BadRecordCount {
            count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

/// Splits a buffer of whole, concatenated batches, validating each one.
pub fn split_batches(buf: &[u8]) -> impl Iterator<Item = Result<(BatchHeader, &[u8]), BatchError>> {
    let mut rest = buf;
    let mut failed = false;
    std::iter::from_fn(move || {
        if rest.is_empty() || failed {
            return None;
        }
        match validate(rest) {
            Ok(header) => {
                let (batch, tail) = rest.split_at(header.size() as usize);
                rest = tail;
                Some(Ok((header, batch)))
            }
            Err(e) => {
                failed = true;
                Some(Err(e))
            }
        }
    })
}

/// Overwrites the base offset of the batch at the front of `batch`. Outside the CRC.
pub fn set_base_offset(batch: &mut [u8], offset: i64) {
    batch[BASE_OFFSET_OFFSET..BASE_OFFSET_OFFSET + 8].copy_from_slice(&offset.to_be_bytes());
}

/// Overwrites the partition leader epoch of the batch at the front of `batch`. Outside the CRC.
pub fn set_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[LEADER_EPOCH_OFFSET..LEADER_EPOCH_OFFSET + 4].copy_from_slice(&epoch.to_be_bytes());
}

// ---- varints (zigzag, as in protobuf and Kafka) ----

fn put_varlong(out: &mut BytesMut, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn get_varlong(buf: &[u8], pos: &mut usize) -> Result<i64, BatchError> {
    let mut value: u64 = 0;
    let mut shift = 0;
    loop {
        let byte = *buf
            .get(*pos)
            .ok_or(BatchError::MalformedRecord("varint runs past the end"))?;
        *pos += 1;
        if shift > 63 {
            return Err(BatchError::MalformedRecord("varint too long"));
        }
        value |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    Ok(((value >> 1) as i64) ^ -((value & 1) as i64))
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Result<i32, BatchError> {
    let v = get_varlong(buf, pos)?;
    i32::try_from(v).map_err(|_| BatchError::MalformedRecord("varint overflows i32"))
}

fn get_bytes(buf: &Bytes, pos: &mut usize) -> Result<Option<Bytes>, BatchError> {
    let len = get_varint(buf, pos)?;
    if len < 0 {
        return Ok(None);
    }
    let end = pos
        .checked_add(len as usize)
        .filter(|end| *end <= buf.len())
        .ok_or(BatchError::MalformedRecord("field runs past the end"))?;
    let out = buf.slice(*pos..end);
    *pos = end;
    Ok(Some(out))
}

fn put_bytes(out: &mut BytesMut, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varlong(out, -1),
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.put_slice(b);
        }
    }
}

/// One record header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

/// One decoded record of an uncompressed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<RecordHeader>,
}

/// Decodes the records of an uncompressed batch. Compressed batches are stored and served
/// verbatim; decoding them is the business of whoever needs their records.
pub fn decode_records(batch: &Bytes) -> Result<Vec<Record>, BatchError> {
    Ok(decode_records_with_spans(batch)?
        .into_iter()
        .map(|(record, _)| record)
        .collect())
}

/// [`decode_records`], with the bytes each record occupies in `batch` (its length varint
/// included): what compaction copies when it rewrites a batch with fewer records.
pub fn decode_records_with_spans(
    batch: &Bytes,
) -> Result<Vec<(Record, std::ops::Range<usize>)>, BatchError> {
    let header = validate(batch)?;
    if header.compression() != Compression::None {
        return Err(BatchError::MalformedRecord(
            "records of a compressed batch cannot be decoded here",
        ));
    }
    let body = batch.slice(HEADER_LEN..header.size() as usize);
    let mut pos = 0;
    let mut records = Vec::with_capacity(header.record_count.max(0) as usize);
    for _ in 0..header.record_count {
        let start = pos;
        let len = get_varint(&body, &mut pos)?;
        if len < 0 {
            return Err(BatchError::MalformedRecord("negative record length"));
        }
        let end = pos
            .checked_add(len as usize)
            .filter(|end| *end <= body.len())
            .ok_or(BatchError::MalformedRecord("record runs past the batch"))?;
        let rec = body.slice(pos..end);
        let mut p = 1; // attributes byte, unused in v2
        if rec.is_empty() {
            return Err(BatchError::MalformedRecord("empty record"));
        }
        let timestamp_delta = get_varlong(&rec, &mut p)?;
        let offset_delta = get_varint(&rec, &mut p)?;
        let key = get_bytes(&rec, &mut p)?;
        let value = get_bytes(&rec, &mut p)?;
        let header_count = get_varint(&rec, &mut p)?;
        if header_count < 0 {
            return Err(BatchError::MalformedRecord("negative header count"));
        }
        let mut headers = Vec::new();
        for _ in 0..header_count {
            let key =
                get_bytes(&rec, &mut p)?.ok_or(BatchError::MalformedRecord("null header key"))?;
            let value = get_bytes(&rec, &mut p)?;
            headers.push(RecordHeader { key, value });
        }
        if p != rec.len() {
            return Err(BatchError::MalformedRecord(
                "record length disagrees with its fields",
            ));
        }
        records.push((
            Record {
                offset_delta,
                timestamp_delta,
                key,
                value,
                headers,
            },
            HEADER_LEN + start..HEADER_LEN + end,
        ));
        pos = end;
    }
    if pos != body.len() {
        return Err(BatchError::MalformedRecord("bytes after the last record"));
    }
    Ok(records)
}

/// A copy of the valid batch `original` holding only the records at `kept` (byte ranges of
/// `original`, in order, from [`decode_records_with_spans`]), as Kafka's cleaner writes it:
/// the same base offset, leader epoch, attributes, last offset delta (so the batch still ends
/// at the same offset), timestamps and producer id / epoch / base sequence; a new record count,
/// length and CRC32C. With no records kept it is the bare header Kafka keeps for a producer's
/// last batch.
pub fn rewrite_with_records(original: &[u8], kept: &[std::ops::Range<usize>]) -> BytesMut {
    let records_len: usize = kept.iter().map(|r| r.len()).sum();
    let mut out = BytesMut::with_capacity(HEADER_LEN + records_len);
    out.extend_from_slice(&original[..HEADER_LEN]);
    for range in kept {
        out.extend_from_slice(&original[range.clone()]);
    }
    let length = (HEADER_LEN - LOG_OVERHEAD + records_len) as i32;
    out[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4].copy_from_slice(&length.to_be_bytes());
    out[RECORD_COUNT_OFFSET..RECORD_COUNT_OFFSET + 4]
        .copy_from_slice(&(kept.len() as i32).to_be_bytes());
    let crc = compute_crc(&out);
    out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Builds an uncompressed v2 batch: what a producer does before sending, and what tests,
/// the CLI and the client use.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    count: i32,
    records: BytesMut,
}

impl BatchBuilder {
    /// A batch whose timestamps are deltas from `base_timestamp` (milliseconds since the epoch).
    pub fn new(base_timestamp: i64) -> BatchBuilder {
        BatchBuilder {
            base_timestamp,
            max_timestamp: base_timestamp,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            count: 0,
            records: BytesMut::new(),
        }
    }

    /// Marks the batch as sent by an idempotent producer.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    pub fn len(&self) -> i32 {
        self.count
    }
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// Bytes the batch would take if built now.
    pub fn size_estimate(&self) -> usize {
        HEADER_LEN + self.records.len()
    }

    /// Appends a record with no headers.
    pub fn push(&mut self, timestamp: i64, key: Option<&[u8]>, value: Option<&[u8]>) {
        self.push_with_headers(timestamp, key, value, &[]);
    }

    pub fn push_with_headers(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) {
        let mut body = BytesMut::new();
        body.put_i8(0);
        put_varlong(&mut body, timestamp - self.base_timestamp);
        put_varlong(&mut body, self.count as i64);
        put_bytes(&mut body, key);
        put_bytes(&mut body, value);
        put_varlong(&mut body, headers.len() as i64);
        for (k, v) in headers {
            put_bytes(&mut body, Some(k));
            put_bytes(&mut body, *v);
        }
        put_varlong(&mut self.records, body.len() as i64);
        self.records.put_slice(&body);
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self.count += 1;
    }

    /// The finished batch with base offset 0 and leader epoch -1: the leader assigns both.
    pub fn build(self) -> BytesMut {
        let mut out = BytesMut::with_capacity(HEADER_LEN + self.records.len());
        out.put_i64(0);
        out.put_i32((HEADER_LEN - LOG_OVERHEAD + self.records.len()) as i32);
        out.put_i32(-1);
        out.put_i8(MAGIC_V2);
        out.put_u32(0); // CRC, filled below
        out.put_i16(0);
        out.put_i32((self.count - 1).max(0));
        out.put_i64(self.base_timestamp);
        out.put_i64(self.max_timestamp);
        out.put_i64(self.producer_id);
        out.put_i16(self.producer_epoch);
        out.put_i32(self.base_sequence);
        out.put_i32(self.count);
        out.put_slice(&self.records);
        let crc = compute_crc(&out);
        out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BytesMut {
        let mut b = BatchBuilder::new(1_000).producer(7, 1, 40);
        b.push(1_000, Some(b"k1"), Some(b"v1"));
        b.push_with_headers(1_005, None, Some(b"v2"), &[(b"h", Some(b"x"))]);
        b.push(999, Some(b"k3"), None);
        b.build()
    }

    #[test]
    fn built_batch_validates_and_decodes() {
        let batch = sample();
        let h = validate(&batch).unwrap();
        assert_eq!(h.record_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.base_timestamp, 1_000);
        assert_eq!(h.max_timestamp, 1_005);
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (7, 1, 40)
        );
        let records = decode_records(&batch.freeze()).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(records[1].key, None);
        assert_eq!(records[1].headers[0].key.as_ref(), b"h");
        assert_eq!(records[1].timestamp_delta, 5);
        assert_eq!(records[2].value, None);
        assert_eq!(records[2].timestamp_delta, -1);
        assert_eq!(records[2].offset_delta, 2);
    }

    #[test]
    fn base_offset_and_epoch_lie_outside_the_crc() {
        let mut batch = sample();
        set_base_offset(&mut batch, 1234);
        set_leader_epoch(&mut batch, 9);
        let h = validate(&batch).unwrap();
        assert_eq!(
            (h.base_offset, h.leader_epoch, h.last_offset()),
            (1234, 9, 1236)
        );
    }

    #[test]
    fn every_flipped_byte_inside_the_crc_is_detected() {
        let batch = sample();
        for i in MAGIC_OFFSET..batch.len() {
            let mut bad = batch.clone();
            bad[i] ^= 0x40;
            assert!(validate(&bad).is_err(), "flip at {i} went unnoticed");
        }
    }

    #[test]
    fn truncated_batches_are_rejected_at_every_length() {
        let batch = sample();
        for len in 0..batch.len() {
            assert!(validate(&batch[..len]).is_err(), "length {len} accepted");
        }
    }

    #[test]
    fn varlong_round_trips_extremes() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            i32::MAX as i64,
            i64::MIN,
            i64::MAX,
        ] {
            let mut out = BytesMut::new();
            put_varlong(&mut out, v);
            let mut pos = 0;
            assert_eq!(get_varlong(&out, &mut pos).unwrap(), v);
            assert_eq!(pos, out.len());
        }
    }

    #[test]
    fn a_rewritten_batch_keeps_its_header_and_chosen_records() {
        let mut original = sample();
        set_base_offset(&mut original, 500);
        set_leader_epoch(&mut original, 4);
        let original = original.freeze();
        let spans = decode_records_with_spans(&original).unwrap();
        let kept = vec![spans[0].1.clone(), spans[2].1.clone()];
        let rewritten = rewrite_with_records(&original, &kept).freeze();
        let before = validate(&original).unwrap();
        let after = validate(&rewritten).unwrap();
        assert_eq!(after.record_count, 2);
        assert_eq!(
            (after.base_offset, after.leader_epoch, after.last_offset()),
            (
                before.base_offset,
                before.leader_epoch,
                before.last_offset()
            )
        );
        assert_eq!(
            (after.producer_id, after.producer_epoch, after.base_sequence),
            (7, 1, 40)
        );
        let records = decode_records(&rewritten).unwrap();
        assert_eq!(records[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(records[1].offset_delta, 2);
        let empty = rewrite_with_records(&original, &[]);
        let header = validate(&empty).unwrap();
        assert_eq!((header.record_count, header.last_offset()), (0, 502));
        assert_eq!(empty.len(), HEADER_LEN);
    }

    #[test]
    fn split_stops_at_the_first_bad_batch() {
        let mut two = sample();
        two.extend_from_slice(&sample());
        assert_eq!(split_batches(&two).filter(|r| r.is_ok()).count(), 2);
        let cut = &two[..two.len() - 1];
        let results: Vec<_> = split_batches(cut).collect();
        assert_eq!(results.len(), 2);
        assert!(results[1].is_err());
    }
}
