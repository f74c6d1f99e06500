//! `tandem bench consume`: N consumers, each reading every partition of the topic from the
//! beginning (from the leader, or from an in-sync follower), until together they have read
//! `--records` or the deadline passes, or a client saw nothing new for `--idle-ms` (the topic
//! ran out). Latency is the round trip of a poll that brought records (a Fetch to each
//! serving node; empty long polls are not counted).

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;
use tandem_client::{Consumer, ConsumerConfig, ReadFrom, StartOffset};

use super::{Bounds, Output, Progress};
use crate::client_cmd::Connect;

#[derive(Args)]
#[command(after_help = "\
Examples:
  tandem bench consume --topic bench --records 1000000
  tandem bench consume --topic bench --read-from follower --clients 4 --json")]
pub struct ConsumeBench {
    /// The topic to read (it must exist; `tandem bench produce` fills one).
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Concurrent consumers, each with its own connections, each reading the whole topic.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// leader, or follower (an in-sync follower, which may trail the leader by a fetch round).
    #[arg(long, default_value = "leader")]
    pub read_from: String,
    /// A client stops when a poll brought nothing for this long.
    #[arg(long, default_value_t = 1_000)]
    pub idle_ms: u64,
    #[command(flatten)]
    pub bounds: Bounds,
    #[command(flatten)]
    pub output: Output,
    #[command(flatten)]
    pub connect: Connect,
}

struct Outcome {
    latencies: Histogram<u64>,
    records: u64,
    bytes: u64,
    errors: u64,
    first_error: Option<String>,
    /// When its last record came: the run's time ends there, not after the idle wait.
    last_record: Instant,
}

pub async fn run(args: ConsumeBench) -> anyhow::Result<ExitCode> {
    let read_from = match args.read_from.as_str() {
        "leader" => ReadFrom::Leader,
        "follower" => ReadFrom::Follower,
        other => bail!("--read-from {other:?}: expected leader or follower"),
    };
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let config = ConsumerConfig {
        read_from,
        max_wait: Duration::from_millis(args.idle_ms.clamp(10, 500)),
        ..ConsumerConfig::default()
    };
    let mut consumers = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let client = super::connect(&args.connect, |_| {}).await?;
        let mut consumer = Consumer::new(client, config.clone());
        consumer
            .assign(&args.topic, None, StartOffset::Earliest)
            .await?;
        consumers.push(consumer);
    }
    let progress = Progress::start(args.output, args.bounds.records, "records read");
    let taken = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.bounds.duration_secs);
    let idle = Duration::from_millis(args.idle_ms);
    let tasks: Vec<_> = consumers
        .into_iter()
        .map(|mut consumer| {
            let taken = Arc::clone(&taken);
            let done = progress.counter();
            let limit = args.bounds.records;
            tokio::spawn(async move {
                let mut outcome = Outcome {
                    latencies: super::histogram(),
                    records: 0,
                    bytes: 0,
                    errors: 0,
                    first_error: None,
                    last_record: Instant::now(),
                };
                let mut last_record = Instant::now();
                while Instant::now() < deadline
                    && taken.load(Ordering::Relaxed) < limit
                    && last_record.elapsed() < idle
                {
                    let asked = Instant::now();
                    match consumer.poll().await {
                        Ok(records) => {
                            // An empty poll is a long poll that waited out max_wait: not a
                            // latency of reading records.
                            if records.is_empty() {
                                continue;
                            }
                            super::record_latency(&mut outcome.latencies, asked.elapsed());
                            last_record = Instant::now();
                            let n = records.len() as u64;
                            outcome.records += n;
                            outcome.bytes += records
                                .iter()
                                .map(|r| r.value.as_ref().map_or(0, |v| v.len()) as u64)
                                .sum::<u64>();
                            taken.fetch_add(n, Ordering::Relaxed);
                            done.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(e) => {
                            outcome.errors += 1;
                            outcome.first_error.get_or_insert(e.to_string());
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                outcome.last_record = last_record;
                outcome
            })
        })
        .collect();
    let mut latencies = super::histogram();
    let (mut records, mut bytes, mut errors, mut first_error) = (0u64, 0u64, 0u64, None);
    let mut finished = started;
    for task in tasks {
        let outcome = task.await?;
        latencies.add(&outcome.latencies)?;
        records += outcome.records;
        bytes += outcome.bytes;
        errors += outcome.errors;
        first_error = first_error.or(outcome.first_error);
        if outcome.records > 0 {
            finished = finished.max(outcome.last_record);
        }
    }
    let seconds = finished.duration_since(started).as_secs_f64().max(1e-6);
    progress.finish();
    let result = json!({
        "bench": "consume",
        "topic": args.topic,
        "clients": args.clients,
        "read_from": args.read_from,
        "bounds": { "records": args.bounds.records, "duration_secs": args.bounds.duration_secs },
        "ok": records,
        "bytes": bytes,
        "errors": errors,
        "first_error": first_error,
        "seconds": seconds,
        "records_per_s": records as f64 / seconds,
        "mb_per_s": bytes as f64 / seconds / 1e6,
        "latency_ms": super::latency_json(&latencies),
        "latency_is": "one poll that brought records (a fetch round)",
    });
    let title = format!(
        "consume {} from the beginning: {} clients reading from the {}; latency is one poll",
        args.topic, args.clients, args.read_from
    );
    super::print_result(args.output, &title, &result);
    Ok(if records == 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
