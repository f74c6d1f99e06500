//! Crashes, torn writes, bit rot, damaged indexes and checkpoints, full disks, and directories
//! that are not logs. The rule under test: data before the first bad byte is never lost, and
//! nothing after it is ever served.

mod common;

use std::path::{Path, PathBuf};

use common::{batch, read_all, DiskHarness, Harness, MemHarness};
use tandem_storage::inspect::inspect;
use tandem_storage::segment::{file_name, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX};
use tandem_storage::{FlushPolicy, Log, LogConfig, StorageError};

/// A small deterministic generator, so that every failure replays.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn segment_path(h: &DiskHarness, base: i64) -> PathBuf {
    h.temp.path().join(file_name(base, LOG_SUFFIX))
}

/// Writes `batches` batches into a fresh disk log and returns their (offset, position, bytes).
fn disk_log_with(h: &DiskHarness, batches: usize, config: &LogConfig) -> Vec<(i64, u64, Vec<u8>)> {
    let log = h.open(config.clone());
    for i in 0..batches {
        log.append_as_leader(&mut batch(&format!("b{i}"), 1 + i % 3, i as i64), 4)
            .unwrap();
    }
    log.close().unwrap();
    let mut position = 0;
    read_all(&log)
        .into_iter()
        .map(|(header, bytes)| {
            let item = (header.base_offset, position, bytes.to_vec());
            position += bytes.len() as u64;
            item
        })
        .collect()
}

fn assert_holds_exactly(
    h: &DiskHarness,
    config: &LogConfig,
    expected: &[(i64, u64, Vec<u8>)],
    context: &str,
) {
    let log = h.open(config.clone());
    let got: Vec<Vec<u8>> = read_all(&log)
        .into_iter()
        .map(|(_, b)| b.to_vec())
        .collect();
    let want: Vec<Vec<u8>> = expected.iter().map(|(_, _, b)| b.clone()).collect();
    assert_eq!(got, want, "{context}");
    let end = expected.last().map_or(0, |(offset, _, bytes)| {
        offset
            + tandem_storage::batch::validate(bytes)
                .unwrap()
                .last_offset_delta as i64
            + 1
    });
    assert_eq!(log.log_end_offset(), end, "{context}");
}

#[test]
fn a_torn_last_batch_is_cut_at_every_byte_position() {
    let h = DiskHarness::new();
    let config = LogConfig::default();
    let batches = disk_log_with(&h, 6, &config);
    let path = segment_path(&h, 0);
    let original = std::fs::read(&path).unwrap();
    let (_, last_start, _) = batches.last().unwrap().clone();
    for cut in last_start..original.len() as u64 {
        std::fs::write(&path, &original[..cut as usize]).unwrap();
        let reopened = h.open(config.clone());
        assert_eq!(
            reopened.recovery_removed_bytes(),
            cut - last_start,
            "recovery reports what it cut"
        );
        drop(reopened);
        std::fs::write(&path, &original[..cut as usize]).unwrap();
        assert_holds_exactly(&h, &config, &batches[..5], &format!("cut at byte {cut}"));
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            last_start,
            "the torn bytes are gone from disk"
        );
    }
    // And the whole file is still the whole log.
    std::fs::write(&path, &original).unwrap();
    assert_holds_exactly(&h, &config, &batches, "intact");
    assert_eq!(h.open(config.clone()).recovery_removed_bytes(), 0);
}

#[test]
fn a_flipped_byte_anywhere_cuts_the_log_at_its_batch() {
    let h = DiskHarness::new();
    let config = LogConfig::default();
    let batches = disk_log_with(&h, 8, &config);
    let path = segment_path(&h, 0);
    let original = std::fs::read(&path).unwrap();
    // Recovery rewrites the epoch checkpoint when it cuts; each round starts from the same state.
    let epoch_path = h.temp.path().join("leader-epoch-checkpoint");
    let original_epochs = std::fs::read(&epoch_path).unwrap();
    let mut rng = Rng(0x5eed);
    for round in 0..300 {
        // Mostly the last batch, sometimes an earlier one.
        let victim = if round % 3 == 0 {
            rng.below(batches.len() as u64) as usize
        } else {
            batches.len() - 1
        };
        let (_, start, bytes) = &batches[victim];
        let at = *start as usize + rng.below(bytes.len() as u64) as usize;
        let xor = 1u8 << rng.below(8);
        let mut damaged = original.clone();
        damaged[at] ^= xor;
        std::fs::write(&path, &damaged).unwrap();
        std::fs::write(&epoch_path, &original_epochs).unwrap();
        let report = inspect(h.temp.path(), |_| {}).unwrap();
        assert!(!report.is_sound(), "log check must notice byte {at} ^ {xor:#04x} (batch {victim} starts at {start}, len {})", bytes.len());
        assert_holds_exactly(
            &h,
            &config,
            &batches[..victim],
            &format!("byte {at} ^ {xor:#04x} in batch {victim}"),
        );
    }
}

#[test]
fn a_crash_loses_only_what_was_not_flushed() {
    for seed in 1..40u64 {
        let h = MemHarness::new();
        let mut rng = Rng(seed * 7919);
        let log = h.open(LogConfig {
            flush: FlushPolicy::Never,
            ..LogConfig::default()
        });
        let mut written = Vec::new();
        for i in 0..20 {
            let mut b = batch(&format!("s{seed}-{i}"), 1 + i % 4, i as i64);
            log.append_as_leader(&mut b, 1).unwrap();
            written.push(b.to_vec());
            if rng.below(4) == 0 {
                log.flush().unwrap();
            }
        }
        let flushed = log.flushed_offset();
        let before = read_all(&log);
        drop(log);
        // Torn: a random prefix of the unsynced bytes survives.
        h.dir
            .crash(&mut |_, unsynced| rng.below(unsynced as u64 + 1) as usize);
        let log = h.open(LogConfig::default());
        let after = read_all(&log);
        assert!(
            log.log_end_offset() >= flushed,
            "seed {seed}: flushed data lost"
        );
        assert_eq!(
            after[..],
            before[..after.len()],
            "seed {seed}: recovery gives a prefix"
        );
    }
}

#[test]
fn with_flush_always_a_crash_loses_nothing_acknowledged() {
    let h = MemHarness::new();
    let config = LogConfig {
        flush: FlushPolicy::Always,
        segment_bytes: 2048,
        ..LogConfig::default()
    };
    let log = h.open(config.clone());
    for i in 0..50 {
        log.append_as_leader(&mut batch("ack", 3, i), 2).unwrap();
    }
    let acknowledged = read_all(&log);
    drop(log);
    h.dir.crash_clean_cut();
    assert_eq!(read_all(&h.open(config)), acknowledged);
}

#[test]
fn checkpoints_survive_a_crash_between_write_and_rename() {
    let h = DiskHarness::new();
    let log = h.open(LogConfig::default());
    log.append_as_leader(&mut batch("a", 10, 0), 3).unwrap();
    log.checkpoint_high_watermark(5).unwrap();
    let epochs = log.epochs();
    drop(log);
    // What a crash after writing the temporary files, before the renames, leaves behind.
    std::fs::write(h.temp.path().join("high-watermark.tmp"), b"9").unwrap();
    std::fs::write(
        h.temp.path().join("leader-epoch-checkpoint.tmp"),
        b"0\n1\n7 ",
    )
    .unwrap();
    let report = inspect(h.temp.path(), |_| {}).unwrap();
    assert!(
        report.is_sound(),
        "residue is not corruption: {:?}",
        report.problems
    );
    assert_eq!(report.notes.len(), 2, "{:?}", report.notes);
    let log = h.open(LogConfig::default());
    assert_eq!(
        log.offsets().high_watermark,
        5,
        "the old checkpoint, not the torn new one"
    );
    assert_eq!(log.epochs(), epochs);
    assert!(
        !h.temp.path().join("high-watermark.tmp").exists(),
        "residue removed"
    );
    assert!(!h.temp.path().join("leader-epoch-checkpoint.tmp").exists());
}

#[test]
fn a_corrupt_checkpoint_is_a_clear_error_and_a_missing_one_is_rebuilt() {
    let h = DiskHarness::new();
    let log = h.open(LogConfig::default());
    log.append_as_leader(&mut batch("a", 2, 0), 1).unwrap();
    log.append_as_leader(&mut batch("b", 2, 0), 6).unwrap();
    let epochs = log.epochs();
    drop(log);
    let epoch_file = h.temp.path().join("leader-epoch-checkpoint");
    std::fs::write(&epoch_file, b"0\n2\n6 2\n1 0\n").unwrap();
    let err = h
        .try_open(LogConfig::default())
        .err()
        .expect("refuses a corrupt checkpoint");
    assert!(
        matches!(&err, StorageError::CorruptCheckpoint { file, .. } if file == "leader-epoch-checkpoint"),
        "{err}"
    );
    std::fs::remove_file(&epoch_file).unwrap();
    let log = h.open(LogConfig::default());
    assert_eq!(log.epochs(), epochs, "rebuilt from the batches");
    assert_eq!(log.log_end_offset(), 4);
    drop(log);
    std::fs::write(h.temp.path().join("high-watermark"), b"lots").unwrap();
    let err = h
        .try_open(LogConfig::default())
        .err()
        .expect("refuses a corrupt HW checkpoint");
    assert!(err.to_string().contains("high-watermark"), "{err}");
}

fn small() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 100,
        ..LogConfig::default()
    }
}

fn sealed_segment_bases(dir: &Path) -> Vec<i64> {
    let mut bases: Vec<i64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            tandem_storage::segment::parse_file_name(
                &e.unwrap().file_name().to_string_lossy(),
                LOG_SUFFIX,
            )
        })
        .collect();
    bases.sort();
    bases.pop();
    bases
}

#[test]
fn damaged_or_missing_indexes_are_rebuilt() {
    let h = DiskHarness::new();
    let log = h.open(small());
    for i in 0..40 {
        log.append_as_leader(&mut batch("i", 4, i), 0).unwrap();
    }
    let all = read_all(&log);
    drop(log);
    let sealed = sealed_segment_bases(h.temp.path());
    assert!(sealed.len() >= 3);
    let index = |base| h.temp.path().join(file_name(base, INDEX_SUFFIX));
    let original_index = std::fs::read(index(sealed[0])).unwrap();
    assert!(!original_index.is_empty(), "the test needs index entries");
    std::fs::remove_file(index(sealed[0])).unwrap();
    std::fs::write(index(sealed[1]), b"\x00\x00\x00\x05\x7f\xff\xff\xff").unwrap();
    std::fs::write(
        h.temp.path().join(file_name(sealed[2], TIME_INDEX_SUFFIX)),
        b"short",
    )
    .unwrap();
    let log = h.open(small());
    assert_eq!(read_all(&log), all);
    for (header, bytes) in &all {
        assert_eq!(&log.read(header.last_offset(), 1).unwrap(), bytes);
    }
    drop(log);
    assert_eq!(
        std::fs::read(index(sealed[0])).unwrap(),
        original_index,
        "rewritten identically"
    );
    assert!(inspect(h.temp.path(), |_| {}).unwrap().is_sound());
}

#[test]
fn corruption_in_a_sealed_segment_is_found_by_check_and_cut_by_a_rescan() {
    let h = DiskHarness::new();
    let log = h.open(small());
    for i in 0..40 {
        log.append_as_leader(&mut batch("s", 2, i), 0).unwrap();
    }
    let all = read_all(&log);
    drop(log);
    let sealed = sealed_segment_bases(h.temp.path());
    let victim = sealed[1];
    let path = segment_path(&h, victim);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x10; // inside the segment's last batch
    std::fs::write(&path, &bytes).unwrap();
    let report = inspect(h.temp.path(), |_| {}).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    // Without its index the segment is rescanned with CRCs, and the log ends before the bad batch.
    std::fs::remove_file(h.temp.path().join(file_name(victim, INDEX_SUFFIX))).unwrap();
    let log = h.open(small());
    let kept = read_all(&log);
    let bad = all
        .iter()
        .position(|(hd, _)| hd.next_offset() == sealed[2])
        .unwrap();
    assert_eq!(
        kept[..],
        all[..bad],
        "everything before the bad batch, nothing after"
    );
    assert_eq!(log.segment_count(), 2, "later segments are deleted");
    drop(log);
    assert!(inspect(h.temp.path(), |_| {}).unwrap().is_sound());
}

#[test]
fn a_full_disk_refuses_the_append_and_loses_nothing() {
    let h = MemHarness::new();
    let config = LogConfig {
        segment_bytes: 4096,
        ..LogConfig::default()
    };
    let log = h.open(config.clone());
    for i in 0..10 {
        log.append_as_leader(&mut batch("pre", 3, i), 0).unwrap();
    }
    h.dir.set_space_left(Some(700));
    let mut refused = None;
    for i in 0..100 {
        let before = (read_all(&log), log.log_end_offset());
        match log.append_as_leader(&mut batch("fill", 5, i), 0) {
            Ok(_) => continue,
            Err(e) => {
                assert!(e.is_disk_full(), "{e}");
                assert_eq!(
                    (read_all(&log), log.log_end_offset()),
                    before,
                    "a refused append leaves no trace"
                );
                refused = Some(i);
                break;
            }
        }
    }
    assert!(refused.is_some(), "the disk never filled");
    let kept = read_all(&log);
    h.dir.set_space_left(None);
    log.append_as_leader(&mut batch("after", 1, 0), 0).unwrap();
    drop(log);
    let log = h.open(config);
    let all = read_all(&log);
    assert_eq!(all[..kept.len()], kept[..]);
    assert_eq!(
        all.len(),
        kept.len() + 1,
        "appends resume once space is back"
    );
}

#[test]
fn a_directory_that_is_not_a_log_is_refused_untouched() {
    let h = DiskHarness::new();
    std::fs::write(h.temp.path().join("notes.txt"), b"my files").unwrap();
    let err = h.try_open(LogConfig::default()).err().expect("not a log");
    assert!(matches!(&err, StorageError::NotALog { .. }), "{err}");
    assert!(err.to_string().contains("notes.txt"), "{err}");
    assert_eq!(
        std::fs::read_dir(h.temp.path()).unwrap().count(),
        1,
        "nothing written"
    );
    assert!(matches!(
        inspect(h.temp.path(), |_| {}),
        Err(StorageError::NotALog { .. })
    ));
    assert!(matches!(
        inspect(&h.temp.path().join("missing"), |_| {}),
        Err(StorageError::NotALog { .. })
    ));

    let h = DiskHarness::new();
    drop(h.open(LogConfig::default()));
    std::fs::write(h.temp.path().join("tandem-log"), b"tandem-log 99\n").unwrap();
    let err = h
        .try_open(LogConfig::default())
        .err()
        .expect("unknown format version");
    assert!(err.to_string().contains("tandem-log 99"), "{err}");
}

#[test]
fn bad_settings_are_refused_with_the_reason() {
    let h = MemHarness::new();
    for (config, word) in [
        (
            LogConfig {
                segment_bytes: 10,
                ..LogConfig::default()
            },
            "segment_bytes",
        ),
        (
            LogConfig {
                segment_bytes: 1 << 40,
                ..LogConfig::default()
            },
            "segment_bytes",
        ),
        (
            LogConfig {
                flush: FlushPolicy::IntervalMs(0),
                ..LogConfig::default()
            },
            "interval",
        ),
        (
            LogConfig {
                index_interval_bytes: 0,
                ..LogConfig::default()
            },
            "index_interval",
        ),
    ] {
        let err = h.try_open(config).err().expect("refused");
        assert!(err.to_string().contains(word), "{err}");
    }
}

#[test]
fn concurrent_appenders_share_fsyncs_and_all_are_durable() {
    use std::sync::Arc;
    let h = MemHarness::new();
    h.dir.set_sync_delay(std::time::Duration::from_millis(2));
    let config = LogConfig {
        flush: FlushPolicy::Always,
        ..LogConfig::default()
    };
    let log = Arc::new(h.open(config.clone()));
    let (threads, per_thread) = (8, 25);
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    let info = log
                        .append_as_leader(&mut batch(&format!("t{t}-{i}"), 2, i), 0)
                        .unwrap();
                    // The append returned, so the batch must already be durable.
                    assert!(log.flushed_offset() > info.last_offset);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let appends = (threads * per_thread) as u64;
    let syncs = log.sync_count();
    assert!(
        syncs * 2 <= appends,
        "{syncs} fsyncs for {appends} appends: group commit is not grouping"
    );
    let acknowledged = read_all(&*log);
    assert_eq!(acknowledged.len() as u64, appends);
    drop(log);
    h.dir.crash_clean_cut();
    assert_eq!(
        read_all(&h.open(config)),
        acknowledged,
        "nothing acknowledged was lost"
    );
}

#[test]
fn a_corrupt_length_in_a_sealed_segment_is_an_error_not_a_hang() {
    let h = DiskHarness::new();
    let log = h.open(small());
    for i in 0..40 {
        log.append_as_leader(&mut batch("z", 2, i), 0).unwrap();
    }
    let all = read_all(&log);
    drop(log);
    let first_segment = segment_path(&h, 0);
    let mut bytes = std::fs::read(&first_segment).unwrap();
    let position = all[0].1.len(); // where batch 1 starts in segment 0
    for bad_length in [-12i32, -30, 0, 5, i32::MAX] {
        bytes[position + 8..position + 12].copy_from_slice(&bad_length.to_be_bytes());
        std::fs::write(&first_segment, &bytes).unwrap();
        let log = h.open(small());
        let err = log
            .read(0, 1 << 20)
            .expect_err("a damaged length must not be served");
        assert!(err.to_string().contains("damaged"), "{err}");
        assert!(log.read(2, 1).is_err(), "reading the damaged batch fails");
        assert!(
            log.offset_for_timestamp(2).is_err(),
            "searching through the damage fails"
        );
        assert_eq!(
            log.read(1, 1).unwrap(),
            all[0].1,
            "the batch before the damage still serves"
        );
        // The undamaged later segments still serve.
        let last = all.last().unwrap();
        assert_eq!(log.read(last.0.base_offset, 1).unwrap(), last.1);
    }
}

#[test]
fn a_failed_append_leaves_the_epoch_cache_as_it_was() {
    let h = MemHarness::new();
    let log = h.open(LogConfig::default());
    log.append_as_leader(&mut batch("a", 3, 0), 1).unwrap();
    log.assign_epoch(6).unwrap(); // a new leader that has written nothing yet
    let before = (log.epochs(), log.offsets());
    h.dir.set_space_left(Some(0));
    let err = log.append_as_leader(&mut batch("b", 2, 0), 7).unwrap_err();
    assert!(err.is_disk_full(), "{err}");
    assert_eq!((log.epochs(), log.offsets()), before);
    h.dir.set_space_left(None);
    drop(log);
    let log = h.open(LogConfig::default());
    // Epoch 7 never reached the disk; epoch 6 wrote nothing, so a reopen forgets it (as Kafka's
    // recovery does), exactly as it would have without the failed append.
    assert_eq!(log.epochs(), before.0[..1].to_vec());
}
