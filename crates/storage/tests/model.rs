//! Property test: random sequences of append / roll (by size and by age) / truncate /
//! retention / log-start moves / reopen / crash give the same log as a simple model: a list of
//! segments, each a list of batches, following the rules the contract states. Compaction is
//! modelled on records: latest record per key below `up_to`, tombstones by age; a batch it
//! rewrites is compared by its records and offsets, the others byte for byte.

mod common;

use common::{read_all, DiskHarness, Harness, MemHarness};
use proptest::prelude::*;
use std::collections::HashMap;

use tandem_storage::{
    BatchBuilder, Clock, CompactionConfig, FlushPolicy, Log, LogConfig, ManualClock,
};

/// (offset, key, value) of one record.
type ModelRecord = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

const TOMBSTONE_RETENTION_MS: i64 = 20_000;

#[derive(Debug, Clone)]
enum Op {
    Append {
        records: usize,
        value_len: usize,
        new_epoch: bool,
    },
    Advance {
        ms: i64,
    },
    Truncate {
        at: u16,
    },
    Retention {
        bound: u16,
    },
    AdvanceStart {
        to: u16,
    },
    Reopen,
    Crash {
        keep: u16,
    },
    /// This replica becomes leader of the next epoch.
    AssignEpoch,
    CheckpointHw {
        at: u16,
    },
    Compact {
        up_to: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1..5usize, 0..300usize, prop::bool::weighted(0.1))
            .prop_map(|(records, value_len, new_epoch)| Op::Append { records, value_len, new_epoch }),
        2 => (0..40_000i64).prop_map(|ms| Op::Advance { ms }),
        1 => any::<u16>().prop_map(|at| Op::Truncate { at }),
        1 => any::<u16>().prop_map(|bound| Op::Retention { bound }),
        1 => any::<u16>().prop_map(|to| Op::AdvanceStart { to }),
        1 => Just(Op::Reopen),
        1 => any::<u16>().prop_map(|keep| Op::Crash { keep }),
        1 => Just(Op::AssignEpoch),
        2 => any::<u16>().prop_map(|at| Op::CheckpointHw { at }),
        2 => any::<u16>().prop_map(|up_to| Op::Compact { up_to }),
    ]
}

#[derive(Debug, Clone)]
struct ModelBatch {
    base: i64,
    next: i64,
    max_timestamp: i64,
    bytes: Vec<u8>,
    records: Vec<ModelRecord>,
    /// Compaction rewrote it: compare its records, not its bytes.
    rewritten: bool,
    /// Bytes it takes in the log (less than `bytes` once rewritten).
    size: u64,
}

#[derive(Debug, Clone)]
struct ModelSegment {
    base: i64,
    batches: Vec<ModelBatch>,
    first_append_ms: Option<i64>,
    /// The age of a segment without batches (the log's `last_append_ms`: last append, or
    /// creation, or open).
    last_append_ms: i64,
}

impl ModelSegment {
    fn size(&self) -> u64 {
        self.batches.iter().map(|b| b.size).sum()
    }
    fn next(&self) -> i64 {
        self.batches.last().map_or(self.base, |b| b.next)
    }
}

struct Model {
    segments: Vec<ModelSegment>,
    log_start: i64,
    high_watermark: i64,
    config: LogConfig,
}

impl Model {
    fn end(&self) -> i64 {
        self.segments.last().map_or(0, |s| s.next())
    }

    fn append(&mut self, batch: ModelBatch, now: i64) {
        let config = &self.config;
        let active = self.segments.last().expect("a segment");
        let full = active.size() + batch.size > config.segment_bytes;
        let old = active
            .first_append_ms
            .is_some_and(|first| now - first >= config.segment_ms);
        if !active.batches.is_empty() && (full || old) {
            let base = active.next();
            self.segments.push(ModelSegment {
                base,
                batches: vec![],
                first_append_ms: None,
                last_append_ms: now,
            });
        }
        let active = self.segments.last_mut().expect("a segment");
        active.first_append_ms.get_or_insert(now);
        active.last_append_ms = now;
        active.batches.push(batch);
    }

    fn truncate(&mut self, offset: i64, now: i64) {
        let keep = self
            .segments
            .iter()
            .rposition(|s| s.base <= offset)
            .unwrap_or(0);
        let end = self.end();
        self.segments.truncate(keep + 1);
        let inside_batch = self.segments[keep]
            .batches
            .iter()
            .any(|b| b.base < offset && offset < b.next);
        self.segments[keep].batches.retain(|b| b.next <= offset);
        if offset < end && !inside_batch && self.end() < offset {
            // Truncated into a gap: the log ends at the offset, in a new segment there.
            self.segments.push(ModelSegment {
                base: offset,
                batches: vec![],
                first_append_ms: None,
                last_append_ms: now,
            });
        }
        self.log_start = self.log_start.min(self.end());
        self.high_watermark = self.high_watermark.min(self.end());
    }

    fn retention(&mut self, bound: i64, now: i64) {
        let bound = bound.min(self.end());
        let mut total: u64 = self.segments.iter().map(|s| s.size()).sum();
        while self.segments.len() > 1 {
            let first = &self.segments[0];
            if first.next() > bound {
                break;
            }
            let by_size = self
                .config
                .retention_bytes
                .is_some_and(|r| total - first.size() >= r);
            let newest = first
                .batches
                .iter()
                .map(|b| b.max_timestamp)
                .max()
                .unwrap_or(first.last_append_ms);
            let by_age = self.config.retention_ms.is_some_and(|r| now - newest > r);
            if !(by_size || by_age) {
                break;
            }
            total -= first.size();
            self.segments.remove(0);
        }
        self.log_start = self.log_start.max(self.segments[0].base);
        self.high_watermark = self.high_watermark.max(self.log_start);
    }

    fn advance_start(&mut self, offset: i64) {
        if offset <= self.log_start {
            return;
        }
        while self.segments.len() > 1 && self.segments[0].next() <= offset {
            self.segments.remove(0);
        }
        self.log_start = offset.max(self.segments[0].base);
        self.high_watermark = self.high_watermark.max(self.log_start);
    }

    /// Compaction: the latest record of each key below `up_to` (over every record there),
    /// kept in sealed segments wholly below it; a latest tombstone goes once older than the
    /// retention; a segment's last batch stays, emptied if need be.
    fn compact(&mut self, up_to: i64, now: i64) {
        let mut latest: HashMap<Vec<u8>, i64> = HashMap::new();
        for b in self.segments.iter().flat_map(|s| &s.batches) {
            for (offset, key, _) in &b.records {
                if let (Some(key), true) = (key, *offset < up_to) {
                    latest.insert(key.clone(), *offset);
                }
            }
        }
        let sealed = self.segments.len() - 1;
        for segment in self.segments[..sealed].iter_mut() {
            if segment.next() > up_to {
                break;
            }
            let last = segment.batches.len().saturating_sub(1);
            let mut kept_batches = Vec::new();
            for (i, mut b) in std::mem::take(&mut segment.batches).into_iter().enumerate() {
                let expired =
                    b.max_timestamp >= 0 && now - b.max_timestamp > TOMBSTONE_RETENTION_MS;
                let before = b.records.len();
                let spans = tandem_storage::batch::decode_records_with_spans(&bytes::Bytes::from(
                    b.bytes.clone(),
                ))
                .expect("a batch the model wrote");
                let keep: Vec<bool> = b
                    .records
                    .iter()
                    .map(|(offset, key, value)| match key {
                        None => true,
                        Some(key) => latest[key] == *offset && !(value.is_none() && expired),
                    })
                    .collect();
                let mut kept_bytes = tandem_storage::batch::HEADER_LEN as u64;
                for (k, (_, span)) in keep.iter().zip(&spans) {
                    if *k {
                        kept_bytes += span.len() as u64;
                    }
                }
                let mut index = 0;
                b.records.retain(|_| {
                    index += 1;
                    keep[index - 1]
                });
                if b.records.len() != before {
                    b.size = kept_bytes;
                    if b.records.is_empty() && i != last {
                        continue;
                    }
                    b.rewritten = true;
                }
                kept_batches.push(b);
            }
            segment.batches = kept_batches;
        }
    }

    /// The batches a reader sees: those holding an offset at or after the log start.
    fn visible(&self) -> Vec<&ModelBatch> {
        self.segments
            .iter()
            .flat_map(|s| &s.batches)
            .filter(|b| b.next > self.log_start)
            .collect()
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        segment_ms: 30_000,
        index_interval_bytes: 200,
        retention_bytes: Some(3000),
        retention_ms: Some(60_000),
        flush: FlushPolicy::Never,
        ..LogConfig::default()
    }
}

/// Picks an offset in [log start, log end] from a random fraction.
fn pick(fraction: u16, start: i64, end: i64) -> i64 {
    start + ((end - start) as i128 * fraction as i128 / u16::MAX as i128) as i64
}

/// `crashes` crashes the directory and returns the length the active segment file kept, when
/// the harness can crash (in memory); the log must then end at the last whole batch in it.
fn run<H: Harness>(
    h: &H,
    ops: &[Op],
    crashes: &dyn Fn(&H, u16, i64) -> Option<u64>,
) -> Result<(), TestCaseError> {
    let clock: &ManualClock = h.clock();
    let mut log = h.open(config());
    let mut model = Model {
        segments: vec![ModelSegment {
            base: 0,
            batches: vec![],
            first_append_ms: None,
            last_append_ms: clock.now_ms(),
        }],
        log_start: 0,
        high_watermark: 0,
        config: config(),
    };
    let mut epoch = 0;
    for (step, op) in ops.iter().enumerate() {
        let now = clock.now_ms();
        match op {
            Op::Append {
                records,
                value_len,
                new_epoch,
            } => {
                if *new_epoch {
                    epoch += 1;
                }
                let mut builder = BatchBuilder::new(now);
                let mut model_records = Vec::new();
                for i in 0..*records {
                    // A few keys, so that records supersede each other; some tombstones and
                    // some records without a key.
                    let key =
                        (value_len % 5 != 0).then(|| format!("k{}", (step + i) % 4).into_bytes());
                    let value = (value_len % 7 != 0).then(|| vec![step as u8; *value_len]);
                    builder.push(now + i as i64, key.as_deref(), value.as_deref());
                    model_records.push((i as i64, key, value));
                }
                let mut bytes = builder.build();
                let info = log.append_as_leader(&mut bytes, epoch).unwrap();
                prop_assert_eq!(info.first_offset, model.end());
                for r in &mut model_records {
                    r.0 += info.first_offset;
                }
                model.append(
                    ModelBatch {
                        base: info.first_offset,
                        next: info.last_offset + 1,
                        max_timestamp: now + *records as i64 - 1,
                        bytes: bytes.to_vec(),
                        size: bytes.len() as u64,
                        records: model_records,
                        rewritten: false,
                    },
                    now,
                );
            }
            Op::Advance { ms } => clock.advance(*ms),
            Op::Compact { up_to } => {
                let up_to = pick(*up_to, model.log_start, model.end());
                let config = CompactionConfig {
                    tombstone_retention_ms: TOMBSTONE_RETENTION_MS,
                    producer_batches_retained: 0,
                    // One segment per cleaned file: the model keeps its segment list.
                    max_segment_bytes: 1,
                };
                log.compact(up_to, now, &config).unwrap();
                model.compact(up_to, now);
            }
            Op::AssignEpoch => {
                epoch += 1;
                log.assign_epoch(epoch).unwrap();
            }
            Op::CheckpointHw { at } => {
                let hw = pick(*at, model.log_start, model.end());
                log.checkpoint_high_watermark(hw).unwrap();
                model.high_watermark = hw;
            }
            Op::Truncate { at } => {
                let offset = pick(*at, model.log_start, model.end());
                log.truncate_to(offset).unwrap();
                model.truncate(offset, now);
            }
            Op::Retention { bound } => {
                let bound = pick(*bound, model.log_start, model.end());
                log.apply_retention(bound).unwrap();
                model.retention(bound, now);
            }
            Op::AdvanceStart { to } => {
                let offset = pick(*to, model.log_start, model.end());
                log.advance_log_start(offset).unwrap();
                model.advance_start(offset);
            }
            Op::Reopen => {
                log.close().unwrap();
                let before = (log.offsets(), log.epochs());
                drop(log);
                log = h.open(config());
                let mut expected_epochs = before.1.clone();
                // An epoch that starts at the end wrote nothing; reopening forgets it (Kafka).
                expected_epochs.retain(|e| e.start_offset < before.0.log_end_offset);
                prop_assert_eq!(
                    log.offsets(),
                    before.0,
                    "offsets across a reopen at step {}",
                    step
                );
                prop_assert_eq!(
                    log.epochs(),
                    expected_epochs,
                    "epochs across a reopen at step {}",
                    step
                );
                for s in &mut model.segments {
                    s.first_append_ms = None;
                    s.last_append_ms = now;
                }
            }
            Op::Crash { keep } => {
                let flushed = log.flushed_offset();
                drop(log);
                let active = model.segments.last().expect("a segment").clone();
                let kept = crashes(h, *keep, active.base);
                log = h.open(config());
                // Only the unsynced tail of the active segment may be lost, to a batch boundary
                // at or above the flushed offset.
                let end = log.log_end_offset();
                prop_assert!(
                    end >= flushed,
                    "step {step}: flushed {flushed} but recovered to {end}"
                );
                if let Some(kept) = kept {
                    // Exactly the whole batches inside what the file kept: no intact batch cut.
                    let mut expected = active.base;
                    let mut bytes = 0u64;
                    for b in &active.batches {
                        bytes += b.size;
                        if bytes > kept {
                            break;
                        }
                        expected = b.next;
                    }
                    prop_assert_eq!(end, expected, "step {}: recovery cut intact batches", step);
                }
                model.truncate(end, now);
                for s in &mut model.segments {
                    s.first_append_ms = None;
                    s.last_append_ms = now;
                }
            }
        }
        prop_assert_eq!(
            log.log_start_offset(),
            model.log_start,
            "log start after step {} {:?}",
            step,
            op
        );
        prop_assert_eq!(
            log.offsets().high_watermark,
            model.high_watermark,
            "HW after step {} {:?}",
            step,
            op
        );
        prop_assert_eq!(
            log.log_end_offset(),
            model.end(),
            "log end after step {} {:?}",
            step,
            op
        );
        prop_assert_eq!(
            log.segment_count(),
            model.segments.len(),
            "segments after step {} {:?}",
            step,
            op
        );
        let got = read_all(&log);
        let want = model.visible();
        prop_assert_eq!(
            got.len(),
            want.len(),
            "batches after step {} {:?}",
            step,
            op
        );
        let mut epochs = tandem_storage::EpochCache::new();
        for e in log.epochs() {
            epochs.assign(e.epoch, e.start_offset).unwrap();
        }
        for ((header, bytes), expected) in got.iter().zip(&want) {
            prop_assert_eq!(
                (header.base_offset, header.next_offset()),
                (expected.base, expected.next),
                "batch offsets after step {}",
                step
            );
            if expected.rewritten {
                let records: Vec<ModelRecord> = tandem_storage::batch::decode_records(bytes)
                    .unwrap()
                    .into_iter()
                    .map(|r| {
                        (
                            header.base_offset + r.offset_delta as i64,
                            r.key.map(|k| k.to_vec()),
                            r.value.map(|v| v.to_vec()),
                        )
                    })
                    .collect();
                prop_assert_eq!(
                    &records,
                    &expected.records,
                    "records of the compacted batch at {} after step {}",
                    header.base_offset,
                    step
                );
            } else {
                prop_assert_eq!(
                    &bytes[..],
                    &expected.bytes[..],
                    "batch at {} after step {}",
                    header.base_offset,
                    step
                );
            }
            if let Some(e) = epochs.epoch_for_offset(header.base_offset) {
                if header.base_offset >= log.log_start_offset() {
                    prop_assert_eq!(
                        e,
                        header.leader_epoch,
                        "epoch cache disagrees at {}",
                        header.base_offset
                    );
                }
            }
        }
    }
    Ok(())
}

proptest! {
    // 48 cases in CI; PROPTEST_CASES=5000 for a deeper search.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]

    #[test]
    fn memory_log_matches_the_model(ops in prop::collection::vec(op(), 1..80)) {
        let h = MemHarness::new();
        run(&h, &ops, &|h: &MemHarness, keep, active_base| {
            h.dir.crash(&mut |_, unsynced| unsynced * keep as usize / u16::MAX as usize);
            let name = tandem_storage::segment::file_name(active_base, tandem_storage::segment::LOG_SUFFIX);
            h.dir.file_len(&name).map(|len| len as u64)
        })?;
    }

    #[test]
    fn disk_log_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        // A real directory cannot lose its page cache here: a crash is a reopen.
        let h = DiskHarness::new();
        run(&h, &ops, &|_: &DiskHarness, _, _| None)?;
    }
}
