//! Compaction under faults and concurrency: a crash injected at every step of a compaction
//! (each directory operation and file sync) leaves the old or the new segments, never a lost
//! record; appends, reads, truncation and compaction running together keep the table exact.

mod common;

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use common::read_all;
use tandem_storage::batch::{self as batches, BatchBuilder};
use tandem_storage::{
    CompactionConfig, Directory, Log, LogConfig, ManualClock, MemDir, SegmentFile, SegmentedLog,
};

type Record = (i64, Option<String>, Option<String>);
type Records = Vec<Record>;

fn records(log: &dyn Log) -> Records {
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

fn table(records: &Records) -> BTreeMap<String, String> {
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

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 64,
        ..LogConfig::default()
    }
}

fn compaction() -> CompactionConfig {
    CompactionConfig {
        tombstone_retention_ms: 1_000,
        producer_batches_retained: 5,
        max_segment_bytes: 3000,
    }
}

fn put(log: &dyn Log, timestamp: i64, key: &str, value: Option<&str>) -> i64 {
    let mut b = BatchBuilder::new(timestamp);
    b.push(timestamp, Some(key.as_bytes()), value.map(str::as_bytes));
    let mut bytes = b.build();
    log.append_as_leader(&mut bytes, 1)
        .expect("append")
        .first_offset
}

/// A MemDir whose every operation counts as a step; from step `crash_at` on, everything fails
/// (the process died there).
#[derive(Clone)]
struct CrashingDir {
    inner: MemDir,
    steps: Arc<AtomicUsize>,
    crash_at: Arc<AtomicUsize>,
    dead: Arc<AtomicBool>,
}

impl CrashingDir {
    fn step(&self) -> io::Result<()> {
        let n = self.steps.fetch_add(1, Ordering::SeqCst);
        if n >= self.crash_at.load(Ordering::SeqCst) {
            self.dead.store(true, Ordering::SeqCst);
        }
        if self.dead.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected crash"));
        }
        Ok(())
    }
}

struct CrashingFile {
    inner: <MemDir as Directory>::File,
    dir: CrashingDir,
}

impl SegmentFile for CrashingFile {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn write_at(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        self.dir.step()?;
        self.inner.write_at(pos, data)
    }
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_at(pos, buf)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.dir.step()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.dir.step()?;
        self.inner.sync_data()
    }
}

impl Directory for CrashingDir {
    type File = CrashingFile;
    fn describe(&self) -> String {
        "<crashing memory>".into()
    }
    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }
    fn create(&self, name: &str) -> io::Result<CrashingFile> {
        self.step()?;
        Ok(CrashingFile {
            inner: self.inner.create(name)?,
            dir: self.clone(),
        })
    }
    fn open(&self, name: &str) -> io::Result<CrashingFile> {
        Ok(CrashingFile {
            inner: self.inner.open(name)?,
            dir: self.clone(),
        })
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.step()?;
        self.inner.remove(name)
    }
    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        self.inner.read(name)
    }
    fn write_atomic(&self, name: &str, data: &[u8]) -> io::Result<()> {
        self.step()?;
        self.inner.write_atomic(name, data)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.step()?;
        self.inner.rename(from, to)
    }
    fn sync(&self) -> io::Result<()> {
        self.step()?;
        self.inner.sync()
    }
}

/// A table log with old tombstones, superseded values and several segments, all synced.
fn build_table(dir: &MemDir, clock: &ManualClock, now: i64) -> Records {
    let log = SegmentedLog::open(dir.clone(), config(), Arc::new(clock.clone())).unwrap();
    for i in 0..40 {
        let key = format!("k{}", i % 7);
        let value = (i % 5 != 3).then(|| format!("{i:0>30}"));
        put(&log, now - 10_000, &key, value.as_deref());
    }
    for i in 0..10 {
        put(&log, now, &format!("k{}", i % 3), Some("fresh"));
    }
    log.flush().unwrap();
    records(&log)
}

#[test]
fn a_crash_at_any_step_of_a_compaction_loses_nothing() {
    let clock = ManualClock::new(1_000_000);
    let now = 1_000_000;
    let mut steps_seen = 0;
    for torn in [false, true] {
        for crash_at in 0.. {
            let mem = MemDir::new();
            let original = build_table(&mem, &clock, now);
            let crashing = CrashingDir {
                inner: mem.clone(),
                steps: Arc::new(AtomicUsize::new(0)),
                crash_at: Arc::new(AtomicUsize::new(usize::MAX)),
                dead: Arc::new(AtomicBool::new(false)),
            };
            let log = SegmentedLog::open(crashing.clone(), config(), Arc::new(clock.clone()))
                .expect("open");
            crashing.steps.store(0, Ordering::SeqCst);
            crashing.crash_at.store(crash_at, Ordering::SeqCst);
            let up_to = log.log_end_offset();
            let outcome = log.compact(up_to, now, &compaction());
            drop(log);
            // The machine goes down: unsynced bytes, creations, renames and removals are lost
            // (or, `torn`, unsynced appends survive whole).
            mem.crash(&mut |_, n| if torn { n } else { 0 });
            let reopened = SegmentedLog::open(mem.clone(), config(), Arc::new(clock.clone()))
                .unwrap_or_else(|e| panic!("reopen after a crash at step {crash_at}: {e}"));
            let after = records(&reopened);
            let what = format!("crash at step {crash_at} (torn {torn})");
            assert_eq!(table(&after), table(&original), "{what}: the table");
            assert_eq!(reopened.log_end_offset(), up_to, "{what}: the log end");
            for record in &after {
                assert!(
                    original.contains(record),
                    "{what}: {record:?} was never written"
                );
            }
            // Every record of the latest value of each key is there, at its offset.
            let mut latest: BTreeMap<&Option<String>, &Record> = BTreeMap::new();
            for r in &original {
                latest.insert(&r.1, r);
            }
            for r in latest.values() {
                assert!(
                    r.2.is_none() || after.contains(r),
                    "{what}: latest record {r:?} lost"
                );
                // A latest tombstone that is gone is below the durable horizon.
                if r.2.is_none() && !after.contains(r) {
                    assert!(
                        reopened.compaction_horizon() > r.0,
                        "{what}: tombstone {r:?} gone above the horizon {}",
                        reopened.compaction_horizon()
                    );
                }
            }
            let leftovers: Vec<String> = mem
                .list()
                .unwrap()
                .into_iter()
                .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap") || n.ends_with(".tmp"))
                .collect();
            assert!(
                leftovers.is_empty(),
                "{what}: {leftovers:?} left after open"
            );
            // A compaction after the crash completes and agrees.
            reopened.compact(up_to, now, &compaction()).unwrap();
            assert_eq!(
                table(&records(&reopened)),
                table(&original),
                "{what}: recompacted"
            );
            if outcome.is_ok() {
                steps_seen = crash_at;
                break;
            }
        }
    }
    assert!(steps_seen > 10, "a compaction has many steps: {steps_seen}");
}

#[test]
fn appends_reads_truncations_and_compactions_run_together() {
    let mem = MemDir::new();
    let clock = ManualClock::new(1_000_000);
    let log =
        Arc::new(SegmentedLog::open(mem.clone(), config(), Arc::new(clock.clone())).expect("open"));
    let stop = Arc::new(AtomicBool::new(false));
    let compactions = Arc::new(AtomicUsize::new(0));
    let compactor = {
        let (log, stop, compactions) = (log.clone(), stop.clone(), compactions.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let up_to = log.log_end_offset();
                log.compact(up_to, 1_000_000, &compaction())
                    .expect("compact");
                compactions.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|seed| {
            let (log, stop) = (log.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut x: u64 = 0x9e37_79b9 + seed;
                let mut reads = 0;
                while !stop.load(Ordering::SeqCst) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let (start, end) = (log.log_start_offset(), log.log_end_offset());
                    if end == start {
                        continue;
                    }
                    let offset = start + (x % (end - start) as u64) as i64;
                    // A concurrent truncation may move the end below the offset.
                    if let Ok(bytes) = log.read(offset, 4096) {
                        for item in batches::split_batches(&bytes) {
                            let (header, _) = item.expect("every batch read is whole and valid");
                            assert!(header.next_offset() > offset || header.base_offset >= offset);
                        }
                        reads += 1;
                    }
                }
                reads
            })
        })
        .collect();
    // The appender is also the truncator, so it knows what the log must hold.
    let mut expected: Records = Vec::new();
    for i in 0..3000 {
        let key = format!("k{}", i % 13);
        let value = (i % 11 != 0).then(|| format!("{i:0>30}"));
        let offset = put(&*log, 900_000, &key, value.as_deref());
        expected.push((offset, Some(key), value));
        if i % 500 == 499 {
            let cut = log.log_end_offset() - 3;
            log.truncate_to(cut).unwrap();
            expected.retain(|(o, _, _)| *o < cut);
        }
    }
    stop.store(true, Ordering::SeqCst);
    compactor.join().expect("compactor");
    let reads: usize = readers.into_iter().map(|r| r.join().expect("reader")).sum();
    assert!(compactions.load(Ordering::SeqCst) > 0 && reads > 0);
    log.compact(log.log_end_offset(), 1_000_000, &compaction())
        .unwrap();
    assert_eq!(table(&records(&*log)), table(&expected));
    log.flush().unwrap();
    drop(log);
    let reopened = SegmentedLog::open(mem, config(), Arc::new(clock)).expect("reopen");
    assert_eq!(table(&records(&reopened)), table(&expected));
}
