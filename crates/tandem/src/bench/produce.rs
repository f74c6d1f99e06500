//! `tandem bench produce`: N clients, each with its own connections and producer, each
//! keeping `--window` records unacknowledged. `--window 1` with `--linger-ms 0` is one record
//! per request, sent when the previous one is acknowledged (what the peers' one-request-per-
//! write tools do); a large window lets the producer fill batches (`--linger-ms`,
//! `--max-batch-bytes`). A record's latency runs from `send` to its acknowledgement.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use clap::Args;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use tandem_client::{Acks, Durability, Producer, ProducerConfig, Record};

use super::{Bounds, Output, Progress, TopicSpec};
use crate::client_cmd::Connect;

#[derive(Args)]
#[command(after_help = "\
Examples:
  tandem bench produce --clients 64                                  # one record per request
  tandem bench produce --clients 2 --window 50000 --linger-ms 2 --records 5000000   # batched
  tandem bench produce --topic strong --flush always --durability flushed --json")]
pub struct ProduceBench {
    #[command(flatten)]
    pub topic: TopicSpec,
    /// Concurrent clients, each with its own connections and producer.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Records each client keeps unacknowledged. 1: one record per request, the next sent
    /// when it is acknowledged; more: the producer batches them (see --linger-ms).
    #[arg(long, default_value_t = 1)]
    pub window: usize,
    /// Bytes of each record's value (no key).
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// How long a producer batch waits for more records.
    #[arg(long, default_value_t = 0)]
    pub linger_ms: u64,
    #[arg(long, default_value_t = 256 * 1024)]
    pub max_batch_bytes: usize,
    /// 0, 1 or all.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// replicated, or flushed (acknowledged once fsynced on every in-sync replica; acks=all).
    #[arg(long, default_value = "replicated")]
    pub durability: String,
    /// Producer ids and sequence numbers (the client's default); off saves the server the
    /// duplicate check.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub idempotent: bool,
    #[command(flatten)]
    pub bounds: Bounds,
    #[command(flatten)]
    pub output: Output,
    #[command(flatten)]
    pub connect: Connect,
}

/// What one client saw.
struct Outcome {
    latencies: Histogram<u64>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
}

pub async fn run(args: ProduceBench) -> anyhow::Result<ExitCode> {
    let acks: Acks = args.acks.parse()?;
    let durability: Durability = args.durability.parse()?;
    if durability == Durability::Flushed && acks != Acks::All {
        bail!("--durability flushed needs --acks all");
    }
    if args.clients == 0 || args.window == 0 {
        bail!("--clients and --window must be at least 1");
    }
    let admin = super::connect(&args.connect, |_| {}).await?;
    super::ensure_topic(&admin, &args.topic).await?;

    let config = ProducerConfig {
        acks,
        durability,
        idempotent: args.idempotent,
        linger: Duration::from_millis(args.linger_ms),
        max_batch_bytes: args.max_batch_bytes,
        delivery_timeout: Duration::from_secs(30),
        max_buffered_records: args.window.max(1000) + 1000,
        ..ProducerConfig::default()
    };
    // Every client connected and warmed up (producer id, metadata, one acknowledged record)
    // before the clock starts.
    let mut producers = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let client = super::connect(&args.connect, |_| {}).await?;
        let producer = Producer::new(client, config.clone()).await?;
        producers.push(producer);
    }
    let value = Bytes::from(vec![b'v'; args.record_size]);
    let warmups = producers
        .iter()
        .map(|p| p.send_and_wait(Record::new(&args.topic.topic, value.clone())));
    for warm in futures_util::future::join_all(warmups).await {
        warm.map_err(|e| anyhow::anyhow!("warm-up record failed: {e}"))?;
    }

    let progress = Progress::start(args.output, args.bounds.records, "records acknowledged");
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.bounds.duration_secs);
    let tasks: Vec<_> = producers
        .into_iter()
        .map(|producer| {
            let topic = args.topic.topic.clone();
            let value = value.clone();
            let issued = Arc::clone(&issued);
            let done = progress.counter();
            let limit = args.bounds.records;
            let window = args.window;
            tokio::spawn(async move {
                let outcome = load(
                    &producer, &topic, value, window, &issued, limit, deadline, &done,
                )
                .await;
                let _ = producer.close().await;
                outcome
            })
        })
        .collect();
    let mut latencies = super::histogram();
    let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None);
    for task in tasks {
        let outcome = task.await?;
        latencies.add(&outcome.latencies)?;
        ok += outcome.ok;
        errors += outcome.errors;
        first_error = first_error.or(outcome.first_error);
    }
    let seconds = started.elapsed().as_secs_f64();
    progress.finish();

    let result = json!({
        "bench": "produce",
        "topic": args.topic.describe(),
        "clients": args.clients,
        "window": args.window,
        "record_size": args.record_size,
        "linger_ms": args.linger_ms,
        "max_batch_bytes": args.max_batch_bytes,
        "acks": args.acks,
        "durability": args.durability,
        "idempotent": args.idempotent,
        "bounds": { "records": args.bounds.records, "duration_secs": args.bounds.duration_secs },
        "ok": ok,
        "errors": errors,
        "first_error": first_error,
        "seconds": seconds,
        "records_per_s": ok as f64 / seconds,
        "mb_per_s": (ok as f64 * args.record_size as f64) / seconds / 1e6,
        "latency_ms": super::latency_json(&latencies),
    });
    let title = format!(
        "produce to {} ({} partitions, RF {}, min.insync {}, flush {}): {} clients x window {}, \
         {}-byte values, linger {} ms, acks={} durability={}",
        args.topic.topic,
        args.topic.partitions,
        args.topic.replication_factor,
        args.topic.min_insync,
        args.topic.flush,
        args.clients,
        args.window,
        args.record_size,
        args.linger_ms,
        args.acks,
        args.durability
    );
    super::print_result(args.output, &title, &result);
    Ok(if errors > 0 && ok == 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// One client's loop: keep `window` records unacknowledged until the shared budget of
/// `limit` records is spent or the deadline passes, then wait for the rest.
#[allow(clippy::too_many_arguments)]
async fn load(
    producer: &Producer,
    topic: &str,
    value: Bytes,
    window: usize,
    issued: &AtomicU64,
    limit: u64,
    deadline: Instant,
    done: &AtomicU64,
) -> Outcome {
    let mut outcome = Outcome {
        latencies: super::histogram(),
        ok: 0,
        errors: 0,
        first_error: None,
    };
    let mut pending = FuturesUnordered::new();
    let mut issuing = true;
    loop {
        // One clock read per burst of sends (refreshed every 64): a burst takes microseconds,
        // the latencies it stamps are milliseconds, and clock reads were a visible share of
        // the bench's own CPU at 500k records/s.
        let mut now = Instant::now();
        let mut burst = 0u32;
        while issuing && pending.len() < window {
            if now >= deadline || issued.fetch_add(1, Ordering::Relaxed) >= limit {
                issuing = false;
                break;
            }
            burst += 1;
            if burst % 64 == 0 {
                now = Instant::now();
            }
            let sent_at = now;
            match producer.send(Record::new(topic, value.clone())).await {
                Ok(ack) => pending.push(ack.map(move |answer| (sent_at, answer))),
                Err(e) => {
                    outcome.errors += 1;
                    outcome.first_error.get_or_insert(e.to_string());
                }
            }
        }
        // Unconstrained: once tokio's cooperative budget runs out, every oneshot in the set
        // answers Pending and wakes itself, and FuturesUnordered re-polls all of them: with
        // thousands pending that spin took the bench ~all of a core and seconds per window.
        let Some(first) = tokio::task::unconstrained(pending.next()).await else {
            break;
        };
        // Everything acknowledged by now shares one clock read (a batch's records arrive
        // together).
        let now = Instant::now();
        let mut answered = Some(first);
        while let Some((sent_at, answer)) = answered {
            match answer {
                Ok(_) => {
                    super::record_latency(&mut outcome.latencies, now.duration_since(sent_at));
                    outcome.ok += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    outcome.errors += 1;
                    outcome.first_error.get_or_insert(e.to_string());
                }
            }
            answered = tokio::task::unconstrained(pending.next())
                .now_or_never()
                .flatten();
        }
    }
    outcome
}
