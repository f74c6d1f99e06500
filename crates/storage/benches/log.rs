//! Append and read throughput of the log, each beside the raw throughput of the same file
//! system measured in the same run, so that the ratio means something on a noisy machine.
//!
//! Run: `cargo bench -p tandem-storage --bench log` (BENCH_DIR=<dir> to measure another file
//! system; the default is a directory under target/). Criterion prints its own statistics per
//! case; the table at the end gives MB/s, the ratio to the raw baseline, and fsyncs per append.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{Criterion, Throughput};
use tandem_storage::{BatchBuilder, DiskLog, FlushPolicy, Log, LogConfig};

const BATCH_BYTES: usize = 16 * 1024;
const RECORD_BYTES: usize = 100;

/// Totals per case, accumulated over every timed iteration criterion asks for.
#[derive(Default, Clone, Copy)]
struct Tally {
    bytes: u64,
    elapsed: Duration,
    appends: u64,
    syncs: u64,
}

static TALLIES: Mutex<BTreeMap<&'static str, Tally>> = Mutex::new(BTreeMap::new());

fn record(case: &'static str, bytes: u64, elapsed: Duration, appends: u64, syncs: u64) {
    let mut tallies = TALLIES.lock().unwrap();
    let t = tallies.entry(case).or_default();
    t.bytes += bytes;
    t.elapsed += elapsed;
    t.appends += appends;
    t.syncs += syncs;
}

/// A batch of ~16 KiB: 100-byte records, as a producer would send.
fn batch() -> BytesMut {
    let mut builder = BatchBuilder::new(1_700_000_000_000);
    let value = [b'v'; RECORD_BYTES];
    while builder.size_estimate() + RECORD_BYTES + 8 <= BATCH_BYTES {
        builder.push(1_700_000_000_000, None, Some(&value));
    }
    builder.build()
}

fn bench_dir() -> PathBuf {
    let base = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("storage-bench"));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).expect("create the bench directory");
    base
}

fn open_log(dir: &Path, name: &str, flush: FlushPolicy) -> DiskLog {
    let path = dir.join(name);
    let _ = std::fs::remove_dir_all(&path);
    let config = LogConfig {
        segment_bytes: 256 << 20,
        flush,
        ..LogConfig::default()
    };
    DiskLog::open_path(path, config).expect("open the bench log")
}

fn raw_file(dir: &Path, name: &str) -> File {
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .read(true)
        .open(dir.join(name))
        .expect("create the raw file")
}

fn appends(c: &mut Criterion, dir: &Path) {
    let template = batch();
    let size = template.len() as u64;
    let mut group = c.benchmark_group("append 16KiB batches");
    group.throughput(Throughput::Bytes(size));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));

    let mut raw = raw_file(dir, "raw-write");
    group.bench_function("raw write", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                raw.write_all(&template).expect("write");
            }
            let elapsed = start.elapsed();
            record("raw write", size * iters, elapsed, 0, 0);
            elapsed
        })
    });

    let log = open_log(dir, "never", FlushPolicy::Never);
    let mut buffer = template.clone();
    group.bench_function("log append, flush never", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                log.append_as_leader(&mut buffer, 1).expect("append");
            }
            let elapsed = start.elapsed();
            record("log append, flush never", size * iters, elapsed, iters, 0);
            elapsed
        })
    });
    drop(log);

    let raw = raw_file(dir, "raw-sync");
    let mut position = 0u64;
    group.bench_function("raw write+fdatasync", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                raw.write_all_at(&template, position).expect("write");
                raw.sync_data().expect("fdatasync");
                position += size;
            }
            let elapsed = start.elapsed();
            record("raw write+fdatasync", size * iters, elapsed, iters, iters);
            elapsed
        })
    });

    for (appenders, case) in [
        (1usize, "log append, flush always, 1 appender"),
        (4, "log append, flush always, 4 appenders"),
        (16, "log append, flush always, 16 appenders"),
    ] {
        let log = Arc::new(open_log(
            dir,
            &format!("always-{appenders}"),
            FlushPolicy::Always,
        ));
        group.throughput(Throughput::Bytes(size));
        group.bench_function(case, |b| {
            b.iter_custom(|iters| {
                let per_thread = iters.div_ceil(appenders as u64);
                let syncs_before = log.sync_count();
                let start = Instant::now();
                std::thread::scope(|scope| {
                    for _ in 0..appenders {
                        let log = Arc::clone(&log);
                        let mut buffer = template.clone();
                        scope.spawn(move || {
                            for _ in 0..per_thread {
                                log.append_as_leader(&mut buffer, 1).expect("append");
                            }
                        });
                    }
                });
                let elapsed = start.elapsed();
                let done = per_thread * appenders as u64;
                record(
                    case,
                    size * done,
                    elapsed,
                    done,
                    log.sync_count() - syncs_before,
                );
                // Criterion expects the time for `iters` iterations.
                elapsed.mul_f64(iters as f64 / done as f64)
            })
        });
    }
    group.finish();
}

fn reads(c: &mut Criterion, dir: &Path) {
    let log = open_log(dir, "read", FlushPolicy::Never);
    let mut buffer = batch();
    for _ in 0..(128 << 20) / buffer.len() {
        log.append_as_leader(&mut buffer, 1).expect("fill");
    }
    log.flush().expect("flush");
    let total = log.size_bytes();
    let segment = File::open(dir.join("read").join("00000000000000000000.log")).expect("segment");
    let mut group = c.benchmark_group("sequential read, 1 MiB reads");
    group.throughput(Throughput::Bytes(total));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("raw pread", |b| {
        let mut chunk = vec![0u8; 1 << 20];
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let mut position = 0;
                while position < total {
                    let n = segment.read_at(&mut chunk, position).expect("read");
                    position += n as u64;
                }
            }
            let elapsed = start.elapsed();
            record("raw pread", total * iters, elapsed, 0, 0);
            elapsed
        })
    });
    group.bench_function("log read", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let mut offset = 0;
                while offset < log.log_end_offset() {
                    let bytes = log.read(offset, 1 << 20).expect("read");
                    let last = tandem_storage::batch::split_batches(&bytes)
                        .last()
                        .expect("a batch")
                        .expect("valid");
                    offset = last.0.next_offset();
                }
            }
            let elapsed = start.elapsed();
            record("log read", total * iters, elapsed, 0, 0);
            elapsed
        })
    });
    group.finish();
}

/// Compaction of a table log: 64 MiB of 100-byte values over 20,000 keys (each written ~30
/// times), 8 MiB segments, everything below the end. Each round builds a fresh log (not
/// timed) and times one `compact`; MB/s counts the bytes of the segments it cleaned. Not a
/// criterion group: a compaction destroys its input.
fn compaction(dir: &Path) {
    let keys = 20_000u64;
    for round in 0..3 {
        let path = dir.join(format!("compact-{round}"));
        let config = LogConfig {
            segment_bytes: 8 << 20,
            flush: FlushPolicy::Never,
            ..LogConfig::default()
        };
        let log = DiskLog::open_path(&path, config).expect("open a bench log");
        let value = [b'v'; RECORD_BYTES];
        let mut i = 0u64;
        while log.size_bytes() < 64 << 20 {
            let mut builder = BatchBuilder::new(1_700_000_000_000);
            while builder.size_estimate() + RECORD_BYTES + 24 <= BATCH_BYTES {
                let key = format!("key-{:08}", (i * 7919) % keys);
                builder.push(1_700_000_000_000, Some(key.as_bytes()), Some(&value));
                i += 1;
            }
            log.append_as_leader(&mut builder.build(), 1).expect("fill");
        }
        log.flush().expect("flush");
        let up_to = log.log_end_offset();
        let start = Instant::now();
        let report = log
            .compact(
                up_to,
                1_700_000_000_000,
                &tandem_storage::CompactionConfig::default(),
            )
            .expect("compact");
        let elapsed = start.elapsed();
        record("log compaction", report.bytes_before, elapsed, 0, 0);
        println!(
            "compaction round {round}: {} segments, {} -> {} bytes, {} records removed, {:.1} ms, {} bytes read",
            report.segments_rewritten,
            report.bytes_before,
            report.bytes_after,
            report.records_removed,
            elapsed.as_secs_f64() * 1e3,
            report.bytes_read
        );
        drop(log);
        let _ = std::fs::remove_dir_all(&path);
    }
}

fn summary(dir: &Path) {
    let tallies = TALLIES.lock().unwrap().clone();
    let rate = |case: &str| {
        tallies
            .get(case)
            .map(|t| t.bytes as f64 / t.elapsed.as_secs_f64() / 1e6)
            .unwrap_or(f64::NAN)
    };
    println!(
        "\nTandem storage throughput, `cargo bench -p tandem-storage --bench log`, files in {}",
        dir.display()
    );
    println!(
        "batches of {} bytes holding 100-byte records",
        batch().len()
    );
    println!(
        "{:<42} {:>10} {:>22} {:>16}",
        "case", "MB/s", "ratio", "fsyncs/append"
    );
    let rows: [(&str, &str); 10] = [
        ("raw write", "raw write"),
        ("log append, flush never", "raw write"),
        ("raw write+fdatasync", "raw write+fdatasync"),
        (
            "log append, flush always, 1 appender",
            "raw write+fdatasync",
        ),
        (
            "log append, flush always, 4 appenders",
            "raw write+fdatasync",
        ),
        (
            "log append, flush always, 16 appenders",
            "raw write+fdatasync",
        ),
        ("raw pread", "raw pread"),
        ("log read", "raw pread"),
        ("log compaction", "log read"),
        ("", ""),
    ];
    for (case, baseline) in rows.iter().filter(|(c, _)| !c.is_empty()) {
        let t = tallies.get(case).copied().unwrap_or_default();
        let syncs = if t.appends > 0 && (t.syncs > 0 || case.contains("always")) {
            format!("{:.3}", t.syncs as f64 / t.appends as f64)
        } else {
            "-".into()
        };
        println!(
            "{:<42} {:>10.1} {:>22} {:>16}",
            case,
            rate(case),
            format!("{:.2} x {baseline}", rate(case) / rate(baseline)),
            syncs
        );
    }
}

fn main() {
    let dir = bench_dir();
    let mut criterion = Criterion::default().configure_from_args();
    appends(&mut criterion, &dir);
    reads(&mut criterion, &dir);
    compaction(&dir);
    criterion.final_summary();
    summary(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}
