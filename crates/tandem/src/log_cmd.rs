//! `tandem log append|dump|check`: the storage engine from the command line, and the
//! equivalent of Kafka's dump-log tool.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Subcommand, ValueEnum};
use tandem_storage::inspect::{inspect, BatchInfo};
use tandem_storage::{BatchBuilder, DiskLog, FlushPolicy, Log, LogConfig};

#[derive(Subcommand)]
pub enum LogCommand {
    /// Append the lines of standard input as records (one record per line), creating the log
    /// if the directory is empty.
    Append {
        dir: PathBuf,
        /// Records per batch.
        #[arg(long, default_value_t = 100)]
        batch_records: usize,
        /// Leader epoch to stamp on the batches.
        #[arg(long, default_value_t = 0)]
        epoch: i32,
        /// When appended data is synced to disk.
        #[arg(long, value_enum, default_value_t = Flush::Always)]
        flush: Flush,
        /// Roll segments at this size.
        #[arg(long, default_value_t = 1 << 30)]
        segment_bytes: u64,
    },
    /// Print every batch: offsets, epoch, record count, size, CRC check.
    Dump {
        dir: PathBuf,
        /// Also print each record's key and value (uncompressed batches).
        #[arg(long)]
        records: bool,
    },
    /// Verify a log directory; exits with status 1 if anything is corrupt.
    Check { dir: PathBuf },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Flush {
    Always,
    Never,
}

pub fn run(command: LogCommand) -> anyhow::Result<ExitCode> {
    match command {
        LogCommand::Append {
            dir,
            batch_records,
            epoch,
            flush,
            segment_bytes,
        } => append(dir, batch_records, epoch, flush, segment_bytes),
        LogCommand::Dump { dir, records } => dump(dir, records),
        LogCommand::Check { dir } => check(dir),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn append(
    dir: PathBuf,
    batch_records: usize,
    epoch: i32,
    flush: Flush,
    segment_bytes: u64,
) -> anyhow::Result<ExitCode> {
    if batch_records == 0 {
        bail!("--batch-records must be at least 1");
    }
    if epoch < 0 {
        bail!("--epoch must not be negative");
    }
    let config = LogConfig {
        segment_bytes,
        flush: match flush {
            Flush::Always => FlushPolicy::Always,
            Flush::Never => FlushPolicy::Never,
        },
        ..LogConfig::default()
    };
    config
        .validate()
        .map_err(anyhow::Error::msg)
        .context("bad log settings")?;
    let log =
        DiskLog::open_path(&dir, config).with_context(|| format!("opening {}", dir.display()))?;
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let (mut appended, mut first) = (0u64, None);
    loop {
        let mut builder = BatchBuilder::new(now_ms());
        for line in lines.by_ref().take(batch_records) {
            let line = line.context("reading standard input")?;
            builder.push(now_ms(), None, Some(line.as_bytes()));
        }
        if builder.is_empty() {
            break;
        }
        let mut batch = builder.build();
        let info = log.append_as_leader(&mut batch, epoch)?;
        first.get_or_insert(info.first_offset);
        appended += info.record_count as u64;
    }
    log.close()?;
    let offsets = log.offsets();
    println!(
        "appended {appended} records at offsets {}..{}; log now [{}, {}), flushed to {}",
        first.unwrap_or(offsets.log_end_offset),
        offsets.log_end_offset,
        offsets.log_start_offset,
        offsets.log_end_offset,
        offsets.flushed_offset
    );
    Ok(ExitCode::SUCCESS)
}

fn print_batch(out: &mut impl Write, batch: &BatchInfo) -> std::io::Result<()> {
    let h = &batch.header;
    write!(
        out,
        "offset {}..{} epoch {} count {} size {} position {} crc {} ts {}..{}",
        h.base_offset,
        h.last_offset(),
        h.leader_epoch,
        h.record_count,
        h.size(),
        batch.position,
        if batch.crc_ok { "ok" } else { "BAD" },
        h.base_timestamp,
        h.max_timestamp
    )?;
    if h.has_producer_id() {
        write!(
            out,
            " producer {}/{} seq {}",
            h.producer_id, h.producer_epoch, h.base_sequence
        )?;
    }
    if !matches!(h.compression(), tandem_storage::batch::Compression::None) {
        write!(out, " compression {:?}", h.compression())?;
    }
    writeln!(out)
}

fn dump(dir: PathBuf, records: bool) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut segment = String::new();
    let mut write_error = None;
    let inspected = inspect(&dir, |batch| {
        if write_error.is_some() {
            return;
        }
        let result = (|| -> std::io::Result<()> {
            if batch.segment != segment {
                segment = batch.segment.clone();
                writeln!(out, "segment {segment}")?;
            }
            print_batch(&mut out, batch)?;
            if records && batch.crc_ok {
                print_records(&mut out, &dir, batch)?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            write_error = Some(e);
        }
    });
    let report = match inspected {
        Ok(report) => report,
        Err(e) => return unreadable(&dir, e),
    };
    if let Some(e) = write_error {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e).context("writing the dump");
        }
        return Ok(ExitCode::SUCCESS);
    }
    print_summary(&mut out, &report)?;
    out.flush()?;
    Ok(if report.is_sound() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_records(
    out: &mut impl Write,
    dir: &std::path::Path,
    batch: &BatchInfo,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(dir.join(&batch.segment))?;
    let mut bytes = vec![0u8; batch.header.size() as usize];
    file.read_exact_at(&mut bytes, batch.position)?;
    match tandem_storage::batch::decode_records(&bytes::Bytes::from(bytes)) {
        Ok(records) => {
            for r in records {
                let show = |b: &Option<bytes::Bytes>| match b {
                    None => "null".to_string(),
                    Some(b) => format!("{:?}", String::from_utf8_lossy(b)),
                };
                writeln!(
                    out,
                    "  | offset {} ts {} key {} value {} headers {}",
                    batch.header.base_offset + r.offset_delta as i64,
                    batch.header.base_timestamp + r.timestamp_delta,
                    show(&r.key),
                    show(&r.value),
                    r.headers.len()
                )?;
            }
        }
        Err(e) => writeln!(out, "  | records not shown: {e}")?,
    }
    Ok(())
}

fn print_summary(
    out: &mut impl Write,
    report: &tandem_storage::inspect::Report,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{} segment(s), {} batch(es), {} record(s), {} bytes; offsets [{}, {}); log start checkpoint {:?}; high watermark {:?}",
        report.segments,
        report.batches,
        report.records,
        report.bytes,
        report.first_offset.unwrap_or(0),
        report.log_end_offset.unwrap_or(0),
        report.log_start_offset,
        report.high_watermark
    )?;
    let epochs: Vec<String> = report
        .epochs
        .iter()
        .map(|(e, o)| format!("{e}@{o}"))
        .collect();
    writeln!(
        out,
        "leader epochs: {}",
        if epochs.is_empty() {
            "none".into()
        } else {
            epochs.join(" ")
        }
    )?;
    for note in &report.notes {
        writeln!(out, "note: {note}")?;
    }
    for problem in &report.problems {
        writeln!(out, "PROBLEM: {problem}")?;
    }
    Ok(())
}

/// An unreadable file is damage (exit 1), like a bad CRC; only "not a log" is a usage error.
fn unreadable(dir: &std::path::Path, e: tandem_storage::StorageError) -> anyhow::Result<ExitCode> {
    match e {
        tandem_storage::StorageError::Io { .. } => {
            println!("CORRUPT: {} cannot be read: {e}", dir.display());
            Ok(ExitCode::from(1))
        }
        other => Err(other.into()),
    }
}

fn check(dir: PathBuf) -> anyhow::Result<ExitCode> {
    let report = match inspect(&dir, |_| {}) {
        Ok(report) => report,
        Err(e) => return unreadable(&dir, e),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    print_summary(&mut out, &report)?;
    if report.is_sound() {
        writeln!(out, "ok: {} is a sound log", dir.display())?;
        Ok(ExitCode::SUCCESS)
    } else {
        writeln!(
            out,
            "CORRUPT: {} problem(s) in {}",
            report.problems.len(),
            dir.display()
        )?;
        Ok(ExitCode::from(1))
    }
}
