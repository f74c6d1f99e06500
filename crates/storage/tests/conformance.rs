//! The `Log` contract, checked the same way against both implementations: the on-disk log
//! (real files in a temporary directory) and the in-memory log of the simulator.

mod common;

use common::{batch, read_all, sized_batch, DiskHarness, Harness, MemHarness};
use tandem_storage::batch::{self as batches, BatchError};
use tandem_storage::{Clock, FlushPolicy, Log, LogConfig, StorageError};

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        ..LogConfig::default()
    }
}

fn append_assigns_offsets_and_reads_them_back(h: &impl Harness) {
    let log = h.open(LogConfig::default());
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    let mut a = batch("a", 3, 10);
    let info = log.append_as_leader(&mut a, 1).unwrap();
    assert_eq!(
        (info.first_offset, info.last_offset, info.record_count),
        (0, 2, 3)
    );
    let mut b = batch("b", 2, 20);
    assert_eq!(log.append_as_leader(&mut b, 1).unwrap().first_offset, 3);
    assert_eq!(log.log_end_offset(), 5);
    // The caller's buffer now carries the assigned offset and epoch, and still checks out.
    let header = batches::validate(&b).unwrap();
    assert_eq!((header.base_offset, header.leader_epoch), (3, 1));

    let all = read_all(&log);
    assert_eq!(all.len(), 2);
    assert_eq!(&all[1].1[..], &b[..], "stored verbatim");
    // A read from inside a batch starts with the batch that holds the offset.
    let from_4 = log.read(4, 1 << 20).unwrap();
    assert_eq!(batches::validate(&from_4).unwrap().base_offset, 3);
    assert!(
        log.read(5, 1 << 20).unwrap().is_empty(),
        "reading at the end gives nothing"
    );
    for bad in [-1, 6, 100] {
        assert!(
            matches!(log.read(bad, 100), Err(StorageError::OffsetOutOfRange { offset, .. }) if offset == bad)
        );
    }
}

fn read_respects_max_bytes_but_returns_at_least_one_batch(h: &impl Harness) {
    let log = h.open(LogConfig::default());
    let mut sizes = Vec::new();
    for i in 0..5 {
        let mut b = sized_batch(100, i);
        sizes.push(b.len());
        log.append_as_leader(&mut b, 0).unwrap();
    }
    assert_eq!(
        log.read(0, 1).unwrap().len(),
        sizes[0],
        "one batch even if larger than max"
    );
    assert_eq!(
        log.read(0, sizes[0] * 2 + 5).unwrap().len(),
        sizes[0] * 2,
        "whole batches only"
    );
    assert_eq!(
        log.read(0, 1 << 20).unwrap().len(),
        sizes.iter().sum::<usize>()
    );
}

fn replicated_appends_keep_offsets_and_must_be_contiguous(h: &impl Harness) {
    let leader = MemHarness::new().open(LogConfig::default());
    let mut b = batch("x", 4, 0);
    leader.append_as_leader(&mut b, 3).unwrap();
    let mut c = batch("y", 2, 0);
    leader.append_as_leader(&mut c, 4).unwrap();
    let fetched = leader.read(0, 1 << 20).unwrap();

    let follower = h.open(LogConfig::default());
    let info = follower.append_replicated(&fetched).unwrap();
    assert_eq!(
        (info.first_offset, info.last_offset, info.batch_count),
        (0, 5, 2)
    );
    assert_eq!(follower.read(0, 1 << 20).unwrap(), fetched, "byte for byte");
    assert_eq!(follower.epochs(), leader.epochs());
    // Data the follower already has is refused and changes nothing.
    let err = follower.append_replicated(&fetched).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::NonContiguous {
                expected: 6,
                got: 0
            }
        ),
        "{err}"
    );
    assert_eq!(follower.log_end_offset(), 6);
}

fn epochs_are_recorded_and_never_go_back(h: &impl Harness) {
    let log = h.open(LogConfig::default());
    log.append_as_leader(&mut batch("a", 2, 0), 1).unwrap();
    log.assign_epoch(3).unwrap();
    log.append_as_leader(&mut batch("b", 2, 0), 3).unwrap();
    log.append_as_leader(&mut batch("c", 2, 0), 5).unwrap();
    let epochs: Vec<_> = log
        .epochs()
        .iter()
        .map(|e| (e.epoch, e.start_offset))
        .collect();
    assert_eq!(epochs, vec![(1, 0), (3, 2), (5, 4)]);
    let err = log
        .append_as_leader(&mut batch("old", 1, 0), 4)
        .unwrap_err();
    assert!(matches!(err, StorageError::NonMonotonicEpoch(_)), "{err}");
    assert!(log.assign_epoch(2).is_err());
    assert_eq!(log.log_end_offset(), 6, "a refused append writes nothing");
    let q = |e| {
        log.end_offset_for_epoch(e)
            .map(|x| (x.epoch, x.start_offset))
    };
    assert_eq!(q(5), Some((5, 6)));
    assert_eq!(q(4), Some((3, 4)));
    assert_eq!(q(1), Some((1, 2)));
    assert_eq!(q(9), None);
    drop(log);
    let log = h.open(LogConfig::default());
    assert_eq!(log.epochs().len(), 3, "the epoch cache survives a reopen");
}

fn segments_roll_by_size_and_by_age(h: &impl Harness) {
    let log = h.open(small_segments());
    for i in 0..20 {
        log.append_as_leader(&mut sized_batch(200, i), 0).unwrap();
    }
    let by_size = log.segment_count();
    assert!(
        by_size >= 5,
        "20 batches of ~270 bytes in 1 KiB segments: {by_size} segments"
    );
    let before = read_all(&log);
    assert_eq!(before.len(), 20);

    let config = LogConfig {
        segment_ms: 60_000,
        ..LogConfig::default()
    };
    drop(log);
    let log = h.open(config.clone());
    log.append_as_leader(&mut sized_batch(10, 0), 0).unwrap();
    h.clock().advance(59_999);
    log.append_as_leader(&mut sized_batch(10, 0), 0).unwrap();
    assert_eq!(
        log.segment_count(),
        by_size,
        "younger than segment_ms: no roll"
    );
    h.clock().advance(1);
    log.append_as_leader(&mut sized_batch(10, 0), 0).unwrap();
    assert_eq!(log.segment_count(), by_size + 1, "rolled by age");
    let all = read_all(&log);
    assert_eq!(all.len(), 23);
    assert_eq!(&all[..20], &before[..], "rolling changes no data");
    drop(log);
    assert_eq!(read_all(&h.open(config)), all, "and reopening neither");
}

fn truncation_drops_whole_batches_and_persists(h: &impl Harness) {
    let log = h.open(small_segments());
    for i in 0..12 {
        log.append_as_leader(&mut batch("v", 3, i), (i / 4) as i32)
            .unwrap();
    }
    assert_eq!(log.log_end_offset(), 36);
    let all = read_all(&log);
    // Offset 20 is inside the batch 18..=20: that whole batch goes.
    log.truncate_to(20).unwrap();
    assert_eq!(log.log_end_offset(), 18);
    assert_eq!(read_all(&log), all[..6].to_vec());
    let epochs: Vec<_> = log
        .epochs()
        .iter()
        .map(|e| (e.epoch, e.start_offset))
        .collect();
    assert_eq!(
        epochs,
        vec![(0, 0), (1, 12)],
        "epoch 2 started at 24: forgotten"
    );
    log.truncate_to(100).unwrap();
    assert_eq!(
        log.log_end_offset(),
        18,
        "truncating past the end is a no-op"
    );
    // Appends continue from the new end.
    log.append_as_leader(&mut batch("w", 1, 0), 7).unwrap();
    assert_eq!(log.log_end_offset(), 19);
    drop(log);
    let log = h.open(small_segments());
    assert_eq!(log.log_end_offset(), 19, "the truncation is durable");
    assert_eq!(read_all(&log)[..6].to_vec(), all[..6].to_vec());
    log.truncate_to(0).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    assert!(log.epochs().is_empty());
}

fn truncate_fully_restarts_the_log_elsewhere(h: &impl Harness) {
    let log = h.open(small_segments());
    for i in 0..6 {
        log.append_as_leader(&mut sized_batch(300, i), 2).unwrap();
    }
    log.truncate_fully_and_start_at(500).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (500, 500));
    assert!(log.epochs().is_empty());
    assert!(matches!(
        log.read(0, 10),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    drop(log);
    let log = h.open(small_segments());
    assert_eq!(
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.segment_count()
        ),
        (500, 500, 1)
    );
}

fn retention_deletes_whole_old_segments_below_the_bound(h: &impl Harness) {
    let config = LogConfig {
        retention_bytes: Some(2048),
        retention_ms: None,
        ..small_segments()
    };
    let log = h.open(config);
    for i in 0..30 {
        log.append_as_leader(&mut sized_batch(200, i), 0).unwrap();
    }
    let total = log.size_bytes();
    let all = read_all(&log);
    assert_eq!(
        log.apply_retention(0).unwrap().segments_deleted,
        0,
        "nothing below the bound"
    );
    let outcome = log.apply_retention(log.log_end_offset()).unwrap();
    assert!(outcome.segments_deleted > 0);
    assert!(log.size_bytes() >= 2048, "keeps at least retention_bytes");
    assert!(
        log.size_bytes() < 2048 + 1024,
        "deletes whole segments until the next would go below"
    );
    assert_eq!(log.size_bytes(), total - outcome.bytes_deleted);
    let start = log.log_start_offset();
    assert_eq!(start, outcome.log_start_offset);
    assert!(matches!(
        log.read(start - 1, 10),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    let rest = read_all(&log);
    assert_eq!(
        rest[..],
        all[all.len() - rest.len()..],
        "the newest batches stay"
    );
    assert_eq!(
        rest[0].0.base_offset, start,
        "segments deleted whole: the start is a batch start"
    );

    // By age: segments whose newest timestamp is older than retention_ms.
    let config = LogConfig {
        retention_bytes: None,
        retention_ms: Some(1000),
        ..small_segments()
    };
    drop(log);
    let log = h.open(config);
    let now = h.clock().now_ms();
    for i in 0..10 {
        log.append_as_leader(&mut sized_batch(300, now - 5000 + i), 0)
            .unwrap();
    }
    for i in 0..4 {
        log.append_as_leader(&mut sized_batch(300, now + i), 0)
            .unwrap();
    }
    log.apply_retention(log.log_end_offset()).unwrap();
    let kept = read_all(&log);
    assert!(
        kept.iter().all(|(h, _)| h.max_timestamp >= now - 5000),
        "sanity"
    );
    assert!(
        kept.len() >= 4 && kept.len() < 14,
        "old segments went, new ones stayed: {}",
        kept.len()
    );
    assert!(kept
        .iter()
        .rev()
        .take(4)
        .all(|(h, _)| h.max_timestamp >= now));
}

fn log_start_can_move_inside_a_segment(h: &impl Harness) {
    let log = h.open(small_segments());
    for i in 0..10 {
        log.append_as_leader(&mut batch("v", 2, i), 1).unwrap();
    }
    log.advance_log_start(7).unwrap();
    assert_eq!(log.log_start_offset(), 7);
    assert!(matches!(
        log.read(6, 10),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert_eq!(
        batches::validate(&log.read(7, 10).unwrap())
            .unwrap()
            .base_offset,
        6,
        "batch holding 7"
    );
    assert!(matches!(
        log.advance_log_start(21),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    log.advance_log_start(3).unwrap();
    assert_eq!(log.log_start_offset(), 7, "never moves back");
    drop(log);
    let log = h.open(small_segments());
    assert_eq!(log.log_start_offset(), 7, "checkpointed");
    assert_eq!(log.epochs()[0].start_offset, 7);
}

fn offsets_are_found_by_timestamp(h: &impl Harness) {
    let log = h.open(small_segments());
    // Batches of 3 records at 1000, 1010, ... with records 1 ms apart.
    for i in 0..20 {
        log.append_as_leader(&mut batch("t", 3, 1000 + i * 10), 0)
            .unwrap();
    }
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 1000)));
    assert_eq!(log.offset_for_timestamp(1000).unwrap(), Some((0, 1000)));
    assert_eq!(log.offset_for_timestamp(1001).unwrap(), Some((1, 1001)));
    assert_eq!(
        log.offset_for_timestamp(1003).unwrap(),
        Some((3, 1010)),
        "next batch"
    );
    assert_eq!(log.offset_for_timestamp(1152).unwrap(), Some((47, 1152)));
    assert_eq!(
        log.offset_for_timestamp(1193).unwrap(),
        None,
        "after everything"
    );
    drop(log);
    let log = h.open(small_segments());
    assert_eq!(
        log.offset_for_timestamp(1152).unwrap(),
        Some((47, 1152)),
        "after reopen"
    );
}

fn flush_policies_report_the_flushed_offset(h: &impl Harness) {
    let log = h.open(LogConfig {
        flush: FlushPolicy::Never,
        ..LogConfig::default()
    });
    log.append_as_leader(&mut batch("a", 2, 0), 0).unwrap();
    assert_eq!(log.flushed_offset(), 0);
    assert_eq!(log.flush().unwrap(), 2);
    assert_eq!(log.flushed_offset(), 2);
    drop(log);

    let log = h.open(LogConfig {
        flush: FlushPolicy::Always,
        ..LogConfig::default()
    });
    log.append_as_leader(&mut batch("b", 2, 0), 0).unwrap();
    assert_eq!(
        log.flushed_offset(),
        4,
        "always: durable before the append returns"
    );
    drop(log);

    let log = h.open(LogConfig {
        flush: FlushPolicy::IntervalMs(100),
        ..LogConfig::default()
    });
    log.append_as_leader(&mut batch("c", 1, 0), 0).unwrap();
    assert_eq!(log.flushed_offset(), 4);
    assert_eq!(log.flush_if_due().unwrap(), 4, "not yet due");
    h.clock().advance(100);
    assert_eq!(log.flush_if_due().unwrap(), 5);
    log.append_as_leader(&mut batch("d", 1, 0), 0).unwrap();
    h.clock().advance(150);
    log.append_as_leader(&mut batch("e", 1, 0), 0).unwrap();
    assert_eq!(
        log.flushed_offset(),
        7,
        "an append that finds the interval passed flushes"
    );
}

fn high_watermark_checkpoint_survives_reopen(h: &impl Harness) {
    let log = h.open(LogConfig::default());
    log.append_as_leader(&mut batch("a", 5, 0), 0).unwrap();
    assert_eq!(log.offsets().high_watermark, 0);
    log.checkpoint_high_watermark(3).unwrap();
    assert!(matches!(
        log.checkpoint_high_watermark(6),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    drop(log);
    let log = h.open(LogConfig::default());
    assert_eq!(log.offsets().high_watermark, 3);
    assert_eq!(
        log.log_end_offset(),
        5,
        "recovery never cuts to the high watermark"
    );
}

fn bad_appends_are_typed_errors_and_change_nothing(h: &impl Harness) {
    let log = h.open(LogConfig {
        max_batch_bytes: 500,
        ..LogConfig::default()
    });
    log.append_as_leader(&mut batch("ok", 1, 0), 0).unwrap();
    let err = log
        .append_as_leader(&mut sized_batch(600, 0), 0)
        .unwrap_err();
    assert!(
        matches!(err, StorageError::BatchTooLarge { max: 500, .. }),
        "{err}"
    );
    assert!(matches!(
        log.append_as_leader(&mut [], 0),
        Err(StorageError::EmptyAppend)
    ));
    let mut corrupt = batch("c", 2, 0);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    let err = log.append_as_leader(&mut corrupt, 0).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::InvalidBatch {
                source: BatchError::CrcMismatch { .. },
                ..
            }
        ),
        "{err}"
    );
    // A good batch followed by garbage: nothing of it is written.
    let mut mixed = batch("good", 1, 0);
    mixed.extend_from_slice(b"garbage that is not a batch at all, definitely not one, no.......");
    let err = log.append_as_leader(&mut mixed, 0).unwrap_err();
    assert!(
        matches!(err, StorageError::InvalidBatch { position, .. } if position > 0),
        "{err}"
    );
    let mut garbage = vec![0xffu8; 80];
    assert!(log.append_replicated(&garbage).is_err());
    assert!(log.append_as_leader(&mut garbage, 0).is_err());
    assert_eq!(log.log_end_offset(), 1);
    assert_eq!(read_all(&log).len(), 1);
}

fn reopen_gives_back_the_same_log(h: &impl Harness) {
    let config = LogConfig {
        index_interval_bytes: 64,
        ..small_segments()
    };
    let log = h.open(config.clone());
    for i in 0..40 {
        log.append_as_leader(&mut batch("r", 1 + (i % 4) as usize, i), (i / 10) as i32)
            .unwrap();
    }
    log.checkpoint_high_watermark(30).unwrap();
    log.close().unwrap();
    let before = (
        read_all(&log),
        log.offsets(),
        log.epochs(),
        log.segment_count(),
    );
    drop(log);
    let log = h.open(config);
    let after = (
        read_all(&log),
        log.offsets(),
        log.epochs(),
        log.segment_count(),
    );
    assert_eq!(before, after);
    // Reads that go through the reloaded indexes land on the right batches.
    for (header, bytes) in &before.0 {
        for offset in header.base_offset..header.next_offset() {
            let read = log.read(offset, 1).unwrap();
            assert_eq!(&read, bytes, "offset {offset}");
        }
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod disk {
            $( #[test] fn $case() { super::$case(&super::DiskHarness::new()) } )*
        }
        mod memory {
            $( #[test] fn $case() { super::$case(&super::MemHarness::new()) } )*
        }
    };
}

conformance!(
    append_assigns_offsets_and_reads_them_back,
    read_respects_max_bytes_but_returns_at_least_one_batch,
    replicated_appends_keep_offsets_and_must_be_contiguous,
    epochs_are_recorded_and_never_go_back,
    segments_roll_by_size_and_by_age,
    truncation_drops_whole_batches_and_persists,
    truncate_fully_restarts_the_log_elsewhere,
    retention_deletes_whole_old_segments_below_the_bound,
    log_start_can_move_inside_a_segment,
    offsets_are_found_by_timestamp,
    flush_policies_report_the_flushed_offset,
    high_watermark_checkpoint_survives_reopen,
    bad_appends_are_typed_errors_and_change_nothing,
    reopen_gives_back_the_same_log,
    truncation_lowers_the_checkpointed_high_watermark,
    an_empty_epoch_at_the_end_is_forgotten_by_truncation,
    caller_mistakes_are_typed_errors,
);

fn truncation_lowers_the_checkpointed_high_watermark(h: &impl Harness) {
    let log = h.open(LogConfig::default());
    for _ in 0..4 {
        log.append_as_leader(&mut batch("a", 10, 0), 1).unwrap();
    }
    log.checkpoint_high_watermark(30).unwrap();
    log.truncate_to(20).unwrap();
    assert_eq!(log.offsets().high_watermark, 20);
    // New, uncommitted data at the offsets the old HW covered.
    log.append_as_leader(&mut batch("b", 20, 0), 2).unwrap();
    log.close().unwrap();
    let before = log.offsets();
    drop(log);
    let log = h.open(LogConfig::default());
    assert_eq!(
        log.offsets(),
        before,
        "a reopen must not resurrect HW 30 over epoch-2 data"
    );
    assert_eq!(log.offsets().high_watermark, 20);
}

fn an_empty_epoch_at_the_end_is_forgotten_by_truncation(h: &impl Harness) {
    // The leader: epoch 3 wrote 0..10, epoch 4 wrote 10..15, and it now leads epoch 6.
    let leader = MemHarness::new().open(LogConfig::default());
    leader.append_as_leader(&mut batch("x", 10, 0), 3).unwrap();
    leader.append_as_leader(&mut batch("y", 5, 0), 4).unwrap();
    leader.assign_epoch(6).unwrap();
    // A follower has 0..10, was briefly leader of epoch 5 (wrote nothing), follows again.
    let follower = h.open(LogConfig::default());
    follower
        .append_replicated(&leader.read(0, 1 << 20).unwrap()[..])
        .ok();
    follower.truncate_to(10).unwrap();
    follower.assign_epoch(5).unwrap();
    let answer = leader.end_offset_for_epoch(5).unwrap();
    assert_eq!((answer.epoch, answer.start_offset), (4, 15));
    follower
        .truncate_to(answer.start_offset.min(follower.log_end_offset()))
        .unwrap();
    assert_eq!(follower.latest_epoch(), Some(3), "epoch 5 owned no offsets");
    let rest = leader.read(10, 1 << 20).unwrap();
    follower
        .append_replicated(&rest)
        .expect("the leader's epoch 4 is accepted");
    assert_eq!(follower.log_end_offset(), 15);
    assert_eq!(
        follower.epochs(),
        leader.epochs()[..2].to_vec(),
        "epoch 6 has no data yet"
    );
}

fn caller_mistakes_are_typed_errors(h: &impl Harness) {
    let log = h.open(LogConfig::default());
    log.append_as_leader(&mut batch("a", 2, 0), 1).unwrap();
    assert!(matches!(
        log.append_as_leader(&mut batch("b", 1, 0), -1),
        Err(StorageError::InvalidArgument(_))
    ));
    assert!(matches!(
        log.truncate_fully_and_start_at(-1),
        Err(StorageError::InvalidArgument(_))
    ));
    assert!(matches!(
        log.truncate_to(-5),
        Err(StorageError::InvalidArgument(_))
    ));
    assert_eq!(log.log_end_offset(), 2);
}

/// Compaction: the same cases on disk and in memory.
mod compaction {
    use std::collections::BTreeMap;

    use super::common::{read_all, Harness};
    use tandem_storage::batch::{self as batches, BatchBuilder, BatchHeader};
    use tandem_storage::{CompactionConfig, Log, LogConfig, StorageError};

    /// One record of a table: key, value (None = tombstone).
    type Put = (Option<&'static str>, Option<String>);

    pub(super) fn table_config() -> LogConfig {
        LogConfig {
            segment_bytes: 1024,
            index_interval_bytes: 64,
            ..LogConfig::default()
        }
    }

    pub(super) fn compaction_config() -> CompactionConfig {
        CompactionConfig {
            tombstone_retention_ms: 1_000,
            producer_batches_retained: 5,
            max_segment_bytes: 1024,
        }
    }

    /// Appends `puts` as one batch stamped `timestamp`, as leader of epoch 1.
    pub(super) fn put(log: &dyn Log, timestamp: i64, puts: &[Put]) -> BatchHeader {
        let mut b = BatchBuilder::new(timestamp);
        for (key, value) in puts {
            b.push(
                timestamp,
                key.map(str::as_bytes),
                value.as_deref().map(str::as_bytes),
            );
        }
        let mut bytes = b.build();
        log.append_as_leader(&mut bytes, 1).expect("append");
        batches::validate(&bytes).expect("valid")
    }

    /// Every record the log holds: (offset, key, value).
    pub(super) fn records(log: &dyn Log) -> Vec<(i64, Option<String>, Option<String>)> {
        let text = |b: Option<bytes::Bytes>| b.map(|b| String::from_utf8_lossy(&b).into_owned());
        let mut out = Vec::new();
        for (header, raw) in read_all(log) {
            for record in batches::decode_records(&raw).expect("decodable") {
                out.push((
                    header.base_offset + record.offset_delta as i64,
                    text(record.key),
                    text(record.value),
                ));
            }
        }
        out
    }

    /// The table the records imply: latest value per key, tombstones delete.
    pub(super) fn table(
        records: &[(i64, Option<String>, Option<String>)],
    ) -> BTreeMap<String, String> {
        let mut table = BTreeMap::new();
        for (_, key, value) in records {
            let Some(key) = key else { continue };
            match value {
                Some(v) => table.insert(key.clone(), v.clone()),
                None => table.remove(key),
            };
        }
        table
    }

    fn v(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    /// Three versions of a, b deleted long ago, c deleted just now, a record without a key.
    pub(super) fn write_table(log: &dyn Log, old_ms: i64, now_ms: i64) {
        put(log, old_ms, &[(Some("a"), v("a1")), (Some("b"), v("b1"))]);
        put(log, old_ms, &[(None, v("no key")), (Some("c"), v("c1"))]);
        put(log, old_ms, &[(Some("a"), v("a2")), (Some("b"), None)]);
        for i in 0..12 {
            put(log, old_ms, &[(Some("filler"), Some(format!("{i:0>40}")))]);
        }
        put(log, now_ms, &[(Some("a"), v("a3")), (Some("c"), None)]);
        for i in 0..12 {
            put(log, now_ms, &[(Some("d"), Some(format!("{i:0>40}")))]);
        }
    }

    pub(super) fn keeps_the_latest_record_per_key_at_its_offset(h: &impl Harness) {
        let log = h.open(table_config());
        let now = 10_000_000;
        write_table(&log, now - 5_000, now);
        assert!(log.segment_count() > 3);
        let before = records(&log);
        let active_before = log.read(log.log_end_offset() - 1, 1 << 20).unwrap();
        let up_to = log.log_end_offset();
        let report = log.compact(up_to, now, &compaction_config()).unwrap();
        let after = records(&log);

        // The model: latest per key among all records below up_to; tombstones only once older
        // than the retention; records without a key always.
        let mut latest: BTreeMap<Option<String>, i64> = BTreeMap::new();
        for (offset, key, _) in &before {
            latest.insert(key.clone(), *offset);
        }
        let sealed_end = after.last().map_or(0, |_| log.log_end_offset());
        let _ = sealed_end;
        let expected: Vec<_> = before
            .iter()
            .filter(|(offset, key, value)| {
                let in_active = *offset >= active_start(&log);
                key.is_none()
                    || in_active
                    || (latest[key] == *offset && !(value.is_none() && *offset < 18))
            })
            .cloned()
            .collect();
        assert_eq!(
            after, expected,
            "exactly the latest records, at their offsets"
        );
        assert_eq!(table(&after), table(&before), "the table is unchanged");
        assert!(after.contains(&(1 + 1, None, v("no key"))));
        assert!(
            !after
                .iter()
                .any(|(_, k, val)| k.as_deref() == Some("b") && val.is_none()),
            "the expired tombstone of b is gone"
        );
        assert!(
            after
                .iter()
                .any(|(_, k, val)| k.as_deref() == Some("c") && val.is_none()),
            "the fresh tombstone of c stays"
        );
        assert_eq!(log.log_end_offset(), up_to, "the log end does not move");
        assert_eq!(
            log.read(log.log_end_offset() - 1, 1 << 20).unwrap(),
            active_before,
            "the active segment is untouched, byte for byte"
        );
        assert!(report.segments_rewritten > 0);
        assert!(report.bytes_after < report.bytes_before);
        assert_eq!(report.records_removed as usize, before.len() - after.len());
        assert_eq!(report.tombstones_removed, 1);
        // The horizon: past the latest record of every key that lost one.
        let removed: Vec<_> = before.iter().filter(|r| !after.contains(r)).collect();
        let horizon = removed
            .iter()
            .map(|(_, key, _)| latest[key] + 1)
            .max()
            .unwrap();
        assert!(horizon >= 20, "c's tombstone at 19 superseded c1");
        assert_eq!(report.compaction_horizon, horizon);
        // Every batch is still a valid v2 batch with its epoch; headers keep their offsets.
        for (header, raw) in read_all(&log) {
            assert_eq!(batches::validate(&raw).unwrap(), header);
            assert_eq!(header.leader_epoch, 1);
        }
        // The same after a reopen, and a second compaction finds nothing left to do.
        drop(log);
        let log = h.open(table_config());
        assert_eq!(records(&log), after);
        assert_eq!(log.compaction_horizon(), horizon);
        let again = log.compact(up_to, now, &compaction_config()).unwrap();
        assert_eq!(again.records_removed, 0);
        assert_eq!(records(&log), after);
    }

    fn active_start(log: &dyn Log) -> i64 {
        // The active segment starts where the last sealed one ends: find the last batch whose
        // read from the end comes back alone.
        let end = log.log_end_offset();
        let mut start = end;
        for (header, _) in read_all(log).iter().rev() {
            let from = log.read(header.base_offset, 1 << 20).unwrap();
            let last = batches::split_batches(&from).last().unwrap().unwrap().0;
            if last.next_offset() != end {
                break;
            }
            start = header.base_offset;
        }
        start
    }

    pub(super) fn gaps_are_read_truncated_and_replicated(h: &impl Harness) {
        let log = h.open(table_config());
        let now = 10_000_000;
        write_table(&log, now - 5_000, now);
        log.compact(log.log_end_offset(), now, &compaction_config())
            .unwrap();
        let kept: Vec<i64> = read_all(&log).iter().map(|(h, _)| h.base_offset).collect();
        let gap = (1..kept.len())
            .find(|i| kept[*i] > kept[*i - 1] + 2)
            .expect("compaction left a gap");
        let inside = kept[gap] - 1;
        // A read inside a gap returns the next batch.
        let read = log.read(inside, 1).unwrap();
        assert_eq!(batches::validate(&read).unwrap().base_offset, kept[gap]);
        // offset_for_timestamp still answers.
        assert!(log.offset_for_timestamp(0).unwrap().is_some());
        // A follower copies the compacted log, gaps and all, byte for byte.
        let follower = h.open_other(table_config());
        let mut offset = 0;
        while offset < log.log_end_offset() {
            let bytes = log.read(offset, 300).unwrap();
            let info = follower.append_replicated(&bytes).unwrap();
            offset = info.log_end_offset;
        }
        assert_eq!(follower.log_end_offset(), log.log_end_offset());
        assert_eq!(records(&follower), records(&log));
        drop(follower);
        let follower = h.open_other(table_config());
        assert_eq!(records(&follower), records(&log), "gaps survive a reopen");
        // Going back is still refused.
        let first = log.read(0, 1).unwrap();
        assert!(matches!(
            follower.append_replicated(&first),
            Err(StorageError::NonContiguous { .. })
        ));
        // Retention deletes whole segments of a log with gaps from the front.
        drop(follower);
        let follower = h.open_other(LogConfig {
            retention_bytes: Some(1),
            ..table_config()
        });
        let segments = follower.segment_count();
        let outcome = follower.apply_retention(follower.log_end_offset()).unwrap();
        assert_eq!(outcome.segments_deleted, segments - 1);
        assert_eq!(follower.log_start_offset(), outcome.log_start_offset);
        // Truncating inside a gap leaves the log end there, durably.
        log.truncate_to(inside).unwrap();
        assert_eq!(log.log_end_offset(), inside);
        drop(log);
        let log = h.open(table_config());
        assert_eq!(log.log_end_offset(), inside);
        assert_eq!(
            read_all(&log).last().unwrap().0.base_offset,
            kept[gap - 1],
            "the batches before the gap stay"
        );
    }

    pub(super) fn tombstones_wait_for_their_retention_and_the_horizon_persists(h: &impl Harness) {
        let log = h.open(table_config());
        let t = 10_000_000;
        put(&log, t, &[(Some("x"), v("1"))]);
        put(&log, t, &[(Some("x"), None)]);
        for i in 0..30 {
            put(&log, t, &[(Some("y"), Some(format!("{i:0>40}")))]);
        }
        let config = compaction_config();
        let end = log.log_end_offset();
        let early = log
            .compact(end, t + config.tombstone_retention_ms, &config)
            .unwrap();
        assert_eq!(
            early.tombstones_removed, 0,
            "not older than the retention yet"
        );
        // x's put went (its delete supersedes it), and older puts of y.
        let early_horizon = early.compaction_horizon;
        assert!(early_horizon >= 2, "{early:?}");
        let late = log
            .compact(end, t + config.tombstone_retention_ms + 1, &config)
            .unwrap();
        assert_eq!(late.tombstones_removed, 1);
        assert_eq!(late.compaction_horizon, early_horizon);
        assert!(!records(&log)
            .iter()
            .any(|(_, k, _)| k.as_deref() == Some("x")));
        drop(log);
        let log = h.open(table_config());
        assert_eq!(log.compaction_horizon(), early_horizon, "durable");
        // Truncation below the horizon leaves it (the prefix left is not whole either); a
        // follower's raise goes up only, past the end too (a copy under way), durably.
        log.truncate_to(1).unwrap();
        assert_eq!(log.compaction_horizon(), early_horizon);
        log.raise_compaction_horizon(0).unwrap();
        assert_eq!(log.compaction_horizon(), early_horizon);
        log.raise_compaction_horizon(50).unwrap();
        assert_eq!(log.compaction_horizon(), 50, "past the log end");
        drop(log);
        let log = h.open(table_config());
        assert_eq!(log.compaction_horizon(), 50);
        log.truncate_fully_and_start_at(0).unwrap();
        assert_eq!(
            log.compaction_horizon(),
            50,
            "not even an emptied log forgets it"
        );
    }

    /// Sim seed 12: compaction removed a superseded delete and raised no horizon, so a prefix
    /// of the cleaned log (the key's put, its delete gone, the put replacing it not reached)
    /// looked like a state of the table that never existed.
    pub(super) fn the_horizon_covers_every_record_removed(h: &impl Harness) {
        let log = h.open(table_config());
        let t = 10_000_000;
        put(&log, t, &[(Some("k"), v("old"))]);
        put(&log, t, &[(Some("k"), None)]);
        for i in 0..30 {
            put(
                &log,
                t,
                &[(Some(if i % 2 == 0 { "y" } else { "z" }), v("filler"))],
            );
        }
        let replaced_at = put(&log, t, &[(Some("k"), v("new"))]).base_offset;
        put(&log, t, &[(None, v("no key"))]);
        let end = log.log_end_offset();
        assert!(log.segment_count() > 1);
        // No tombstone is old enough to go: only superseded records do.
        let report = log.compact(end, t, &compaction_config()).unwrap();
        assert_eq!(report.tombstones_removed, 1, "k's delete, superseded");
        assert!(!records(&log)
            .iter()
            .any(|(_, k, val)| k.as_deref() == Some("k") && val.is_none()));
        assert_eq!(
            report.compaction_horizon,
            replaced_at + 1,
            "whole again only once k's new put is in"
        );
        assert_eq!(log.compaction_horizon(), replaced_at + 1);
        drop(log);
        let log = h.open(table_config());
        assert_eq!(log.compaction_horizon(), replaced_at + 1, "durable");
        // Compacting again removes nothing more, and moves nothing.
        let again = log.compact(end, t, &compaction_config()).unwrap();
        assert_eq!(again.records_removed, 0);
        assert_eq!(again.compaction_horizon, replaced_at + 1);
    }

    pub(super) fn producer_last_batches_and_segment_ends_stay(h: &impl Harness) {
        let log = h.open(table_config());
        let t = 10_000_000;
        let append = |seq: i32, key: &str| {
            let mut b = BatchBuilder::new(t).producer(42, 3, seq);
            b.push(t, Some(key.as_bytes()), Some(&[b'v'; 40]));
            let mut bytes = b.build();
            log.append_as_leader(&mut bytes, 1).unwrap();
        };
        for seq in 0..40 {
            append(seq, "same");
        }
        put(&log, t, &[(Some("other"), v("x"))]);
        let config = CompactionConfig {
            producer_batches_retained: 2,
            ..compaction_config()
        };
        log.compact(log.log_end_offset(), t, &config).unwrap();
        let producer: Vec<BatchHeader> = read_all(&log)
            .into_iter()
            .map(|(h, _)| h)
            .filter(|h| h.producer_id == 42)
            .collect();
        let last_two: Vec<i32> = producer
            .iter()
            .rev()
            .take(2)
            .map(|h| h.base_sequence)
            .collect();
        assert_eq!(
            last_two,
            vec![39, 38],
            "the producer's last batches are there"
        );
        for h in &producer {
            assert_eq!(h.producer_epoch, 3);
            assert_eq!(
                h.base_sequence as i64, h.base_offset,
                "sequence kept with offset"
            );
        }
        // Emptied batches stay only at segment ends or for the producer; each keeps its end.
        assert!(producer.iter().any(|h| h.record_count == 0));
        assert!(producer.len() < 40);
    }

    pub(super) fn small_segments_are_merged(h: &impl Harness) {
        let log = h.open(table_config());
        let t = 10_000_000;
        for i in 0..60 {
            put(
                &log,
                t,
                &[(Some(["p", "q", "r"][i % 3]), Some(format!("{i:0>40}")))],
            );
        }
        let segments_before = log.segment_count();
        let before = records(&log);
        let config = CompactionConfig {
            max_segment_bytes: 4096,
            ..compaction_config()
        };
        log.compact(log.log_end_offset(), t, &config).unwrap();
        let report = log.compact(log.log_end_offset(), t, &config).unwrap();
        assert!(
            log.segment_count() < segments_before,
            "{} segments, were {segments_before} ({report:?})",
            log.segment_count()
        );
        assert_eq!(table(&records(&log)), table(&before));
        drop(log);
        let log = h.open(table_config());
        assert_eq!(table(&records(&log)), table(&before));
    }
}

use compaction::{
    gaps_are_read_truncated_and_replicated, keeps_the_latest_record_per_key_at_its_offset,
    producer_last_batches_and_segment_ends_stay, small_segments_are_merged,
    the_horizon_covers_every_record_removed,
    tombstones_wait_for_their_retention_and_the_horizon_persists,
};

mod compaction_conformance {
    use super::*;
    conformance!(
        keeps_the_latest_record_per_key_at_its_offset,
        gaps_are_read_truncated_and_replicated,
        tombstones_wait_for_their_retention_and_the_horizon_persists,
        producer_last_batches_and_segment_ends_stay,
        small_segments_are_merged,
        the_horizon_covers_every_record_removed,
    );
}
