//! `tandem bench kv`: N clients, each issuing one key-value operation at a time (put, get or
//! compare-and-set) on a table, at a chosen read consistency; latency is request → answer.
//! For `get` and `cas`, `--preload` keys are written first (not measured), so reads find
//! values. Run `get` with `--consistency leader` and then `follower` at the same client count
//! to see whether follower reads scale with the replicas (docs/benchmarks.md).

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use serde_json::json;
use tandem_client::table::{CasOutcome, ReadMode, Table, TableConfig};
use tandem_client::{Acks, Client, Durability, Error as ClientError, NewTopic};

use super::{Bounds, Output, Progress};
use crate::client_cmd::Connect;

#[derive(Args)]
#[command(after_help = "\
Examples:
  tandem bench kv --op put --clients 64
  tandem bench kv --op get --consistency linearizable --clients 64
  tandem bench kv --op get --consistency follower --clients 64 --json
  tandem bench kv --op cas --clients 8 --keys 1000")]
pub struct KvBench {
    /// put, get or cas (a compare-and-set on the version the client last saw for the key).
    #[arg(long, default_value = "put")]
    pub op: String,
    /// For get: linearizable, leader, follower or session.
    #[arg(long, default_value = "linearizable")]
    pub consistency: String,
    /// The table (created if missing: tandem.kind=table, 3 replicas, min.insync 2).
    #[arg(long, default_value = "bench-kv")]
    pub table: String,
    #[arg(long, default_value_t = 3)]
    pub partitions: u32,
    /// Concurrent clients, each with its own connections and one operation in flight.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Keys are drawn uniformly from this many.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Keys written before a get or cas run (not measured); at most --keys.
    #[arg(long, default_value_t = 10_000)]
    pub preload: u64,
    /// For writes: 0, 1 or all.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// For writes: replicated or flushed.
    #[arg(long, default_value = "replicated")]
    pub durability: String,
    #[command(flatten)]
    pub bounds: Bounds,
    #[command(flatten)]
    pub output: Output,
    #[command(flatten)]
    pub connect: Connect,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Put,
    Get,
    Cas,
}

struct Outcome {
    latencies: hdrhistogram::Histogram<u64>,
    ok: u64,
    cas_mismatches: u64,
    errors: u64,
    first_error: Option<String>,
}

fn key_of(n: u64) -> Bytes {
    Bytes::from(format!("key-{n:010}"))
}

/// A small per-client generator (xorshift): no shared state, no extra dependency.
struct Keys(u64);

impl Keys {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

pub async fn run(args: KvBench) -> anyhow::Result<ExitCode> {
    let op = match args.op.as_str() {
        "put" => Op::Put,
        "get" => Op::Get,
        "cas" => Op::Cas,
        other => bail!("--op {other:?}: expected put, get or cas"),
    };
    let mode = match args.consistency.as_str() {
        "linearizable" => ReadMode::Linearizable,
        "leader" => ReadMode::Leader,
        "follower" => ReadMode::Follower {
            max_lag_offsets: None,
            max_lag_ms: None,
        },
        "session" => ReadMode::Session,
        other => {
            bail!("--consistency {other:?}: expected linearizable, leader, follower or session")
        }
    };
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let config = TableConfig {
        acks: args.acks.parse::<Acks>()?,
        durability: args.durability.parse::<Durability>()?,
        ..TableConfig::default()
    };
    let admin = super::connect(&args.connect, |_| {}).await?;
    ensure_table(&admin, &args.table, args.partitions).await?;
    let value = Bytes::from(vec![b'v'; args.value_bytes]);
    if op != Op::Put && args.preload > 0 {
        preload(&admin, &args, &config, &value).await?;
    }
    let mut tables = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let client = super::connect(&args.connect, |_| {}).await?;
        tables.push(Table::new(client, args.table.clone(), config.clone()));
    }
    let key_space = if op == Op::Put {
        args.keys
    } else {
        args.preload.clamp(1, args.keys)
    };
    let progress = Progress::start(args.output, args.bounds.records, "operations");
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.bounds.duration_secs);
    let tasks: Vec<_> = tables
        .into_iter()
        .enumerate()
        .map(|(i, table)| {
            let issued = Arc::clone(&issued);
            let done = progress.counter();
            let limit = args.bounds.records;
            let value = value.clone();
            tokio::spawn(async move {
                let mut keys = Keys(0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1));
                let mut out = Outcome {
                    latencies: super::histogram(),
                    ok: 0,
                    cas_mismatches: 0,
                    errors: 0,
                    first_error: None,
                };
                while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < limit {
                    let key = key_of(keys.next(key_space));
                    // The version a CAS expects is read first (not measured).
                    let expected = if op == Op::Cas {
                        match table.get(key.clone(), ReadMode::Leader).await {
                            Ok(entry) => entry.map(|e| e.version),
                            Err(e) => {
                                out.errors += 1;
                                out.first_error.get_or_insert(e.to_string());
                                continue;
                            }
                        }
                    } else {
                        None
                    };
                    let asked = Instant::now();
                    let result: Result<(), ClientError> = match op {
                        Op::Put => table.put(key, value.clone()).await.map(|_| ()),
                        Op::Get => table.get(key, mode).await.map(|_| ()),
                        Op::Cas => match table.cas(key, expected, Some(value.clone())).await {
                            Ok(CasOutcome::Written(_)) => Ok(()),
                            Ok(CasOutcome::Mismatch { .. }) => {
                                out.cas_mismatches += 1;
                                Ok(())
                            }
                            Err(e) => Err(e),
                        },
                    };
                    match result {
                        Ok(()) => {
                            super::record_latency(&mut out.latencies, asked.elapsed());
                            out.ok += 1;
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            out.errors += 1;
                            out.first_error.get_or_insert(e.to_string());
                        }
                    }
                }
                out
            })
        })
        .collect();
    let mut latencies = super::histogram();
    let (mut ok, mut mismatches, mut errors, mut first_error) = (0u64, 0u64, 0u64, None);
    for task in tasks {
        let out = task.await?;
        latencies.add(&out.latencies)?;
        ok += out.ok;
        mismatches += out.cas_mismatches;
        errors += out.errors;
        first_error = first_error.or(out.first_error);
    }
    let seconds = started.elapsed().as_secs_f64().max(1e-6);
    progress.finish();
    let result = json!({
        "bench": "kv",
        "op": args.op,
        "consistency": if op == Op::Get { args.consistency.clone() } else { "-".into() },
        "table": args.table,
        "partitions": args.partitions,
        "clients": args.clients,
        "keys": key_space,
        "value_bytes": args.value_bytes,
        "acks": args.acks,
        "durability": args.durability,
        "bounds": { "records": args.bounds.records, "duration_secs": args.bounds.duration_secs },
        "ok": ok,
        "cas_mismatches": mismatches,
        "bytes": ok * args.value_bytes as u64,
        "errors": errors,
        "first_error": first_error,
        "seconds": seconds,
        "records_per_s": ok as f64 / seconds,
        "mb_per_s": (ok * args.value_bytes as u64) as f64 / seconds / 1e6,
        "latency_ms": super::latency_json(&latencies),
        "latency_is": "one operation, request to answer",
    });
    let title = format!(
        "kv {} on {} ({} partitions): {} clients{}",
        args.op,
        args.table,
        args.partitions,
        args.clients,
        if op == Op::Get {
            format!(", {} reads", args.consistency)
        } else {
            format!(", acks={} durability={}", args.acks, args.durability)
        }
    );
    super::print_result(args.output, &title, &result);
    Ok(if ok == 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn ensure_table(client: &Client, name: &str, partitions: u32) -> anyhow::Result<()> {
    let topic = NewTopic::new(name, partitions)
        .replication_factor(3)
        .config("tandem.kind", "table")
        .config("min.insync.replicas", "2");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.create_topic(topic.clone()).await {
            Ok(()) | Err(ClientError::TopicAlreadyExists(_)) => return Ok(()),
            Err(e)
                if (e.is_retriable()
                    || e.code() == Some(tandem_protocol::errors::INVALID_REPLICATION_FACTOR))
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).context(format!("creating table {name}")),
        }
    }
}

/// Writes keys 0..preload with 64 writers at a time (bounded by the run's duration).
async fn preload(
    client: &Client,
    args: &KvBench,
    config: &TableConfig,
    value: &Bytes,
) -> anyhow::Result<()> {
    let count = args.preload.min(args.keys);
    let table = Table::new(client.clone(), args.table.clone(), config.clone());
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(args.bounds.duration_secs.max(30.0));
    let writers: Vec<_> = (0..64)
        .map(|_| {
            let (table, next, value) = (table.clone(), Arc::clone(&next), value.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count || Instant::now() >= deadline {
                        return Ok::<(), ClientError>(());
                    }
                    table.put(key_of(n), value.clone()).await?;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await?.context("preloading the table")?;
    }
    Ok(())
}
