//! `tandem bench produce|consume|kv|failover`: load generators against a running cluster.
//!
//! ```text
//!  clients (tokio tasks, each with its own connections)      cluster (tandem dev / server)
//!   client 1 ── producer / consumer ──┐
//!   client 2 ── producer / consumer ──┼──── Kafka Produce / Fetch ────>  leaders, followers
//!   client N ── producer / consumer ──┘
//!        │ latency of every record (send → ack) or poll, in an HDR histogram per client
//!        v
//!   merged histogram → table (records/s, MB/s, p50 / p99 / p99.9 / max) or --json
//! ```
//!
//! Every run is bounded twice: `--records` (in total, over all clients) and `--duration-secs`,
//! whichever comes first; what is still unanswered then is awaited (bounded by the client's
//! delivery timeout) and counted. The progress bar goes to stderr, only on a terminal and
//! never with `--json`. `bench/compare` (docs/benchmarks.md) drives these commands next to
//! the peer systems.

mod consume;
mod failover;
mod kv;
mod produce;

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tandem_client::{Client, ClientConfig, Error as ClientError, NewTopic};

use crate::client_cmd::Connect;

const BENCH_EXAMPLES: &str = "\
Examples:
  tandem bench produce --clients 64                          # one record per request, acks=all
  tandem bench produce --clients 2 --window 20000 --linger-ms 5 --records 2000000   # batched
  tandem bench produce --topic strong --flush always --durability flushed --clients 1
  tandem bench consume --topic bench --read-from follower --records 1000000
  tandem bench kv --op get --consistency follower --clients 64
  tandem bench failover --cluster-json tandem-data/cluster.json --trials 10 --victim controller
  tandem bench produce --clients 64 --json | jq .records_per_s

Results: a table (records/s, MB/s of values, latency p50 / p99 / p99.9 / max from an HDR
histogram) or one JSON object with --json. bench/compare runs them all next to the peer
systems (docs/benchmarks.md).";

#[derive(Args)]
#[command(after_help = BENCH_EXAMPLES)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Write records with many concurrent producers; latency is send → acknowledgement.
    Produce(produce::ProduceBench),
    /// Read a topic from the beginning with many concurrent consumers (leader or follower).
    Consume(consume::ConsumeBench),
    /// Key-value operations on a table: put, get (per read consistency) or compare-and-set.
    Kv(kv::KvBench),
    /// SIGKILL a partition leader of a `tandem dev` cluster, repeatedly: time to the first
    /// acknowledged acks=all write and to the first up-to-date read on the new leader.
    Failover(failover::FailoverBench),
}

/// How much work a run may do: whichever bound comes first.
#[derive(Args, Clone, Copy)]
pub struct Bounds {
    /// Records in total, over all clients.
    #[arg(long, default_value_t = 100_000)]
    pub records: u64,
    /// Stop issuing new work after this many seconds.
    #[arg(long, default_value_t = 30.0)]
    pub duration_secs: f64,
}

#[derive(Args, Clone, Copy)]
pub struct Output {
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// No progress bar (it is drawn on stderr only when that is a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
}

/// The topic a bench writes to, created with these settings when it does not exist yet.
#[derive(Args, Clone)]
pub struct TopicSpec {
    /// The topic (created if missing, with the settings below; an existing one is used as is).
    #[arg(long, default_value = "bench")]
    pub topic: String,
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Replication factor.
    #[arg(long, visible_alias = "rf", default_value_t = 3)]
    pub replication_factor: u16,
    /// min.insync.replicas.
    #[arg(long, default_value_t = 2)]
    pub min_insync: u16,
    /// The topic's flush policy: always (fsync before a batch counts as flushed), never, or
    /// an interval in ms.
    #[arg(long, default_value = "never")]
    pub flush: String,
}

impl TopicSpec {
    fn describe(&self) -> Value {
        json!({
            "name": self.topic,
            "partitions": self.partitions,
            "replication_factor": self.replication_factor,
            "min_insync_replicas": self.min_insync,
            "flush": self.flush,
        })
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match args.command {
        BenchCommand::Produce(bench) => runtime.block_on(produce::run(bench)),
        BenchCommand::Consume(bench) => runtime.block_on(consume::run(bench)),
        BenchCommand::Failover(bench) => runtime.block_on(failover::run(bench)),
        BenchCommand::Kv(bench) => runtime.block_on(kv::run(bench)),
    }
}

/// A client of its own (own connections), so that N bench clients are N TCP connections per
/// node, as N application processes would be.
async fn connect(
    connect: &Connect,
    tune: impl FnOnce(&mut ClientConfig),
) -> anyhow::Result<Client> {
    let addresses: Vec<String> = connect
        .bootstrap
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let mut config = ClientConfig::new(addresses);
    config.client_id = "tandem-bench".into();
    tune(&mut config);
    Client::connect(config).await.with_context(|| {
        format!(
            "cannot reach the cluster at {} (is it running? set --bootstrap or TANDEM_BOOTSTRAP)",
            connect.bootstrap
        )
    })
}

/// Creates the topic unless it exists; waits until every partition has a leader.
async fn ensure_topic(client: &Client, spec: &TopicSpec) -> anyhow::Result<()> {
    let topic = NewTopic::new(&spec.topic, spec.partitions)
        .replication_factor(spec.replication_factor)
        .config("min.insync.replicas", spec.min_insync.to_string())
        .config("tandem.flush", spec.flush.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match client.create_topic(topic.clone()).await {
            Ok(()) | Err(ClientError::TopicAlreadyExists(_)) => break,
            // A cluster that just started has not registered all its nodes yet.
            Err(e)
                if (e.is_retriable()
                    || e.code() == Some(tandem_protocol::errors::INVALID_REPLICATION_FACTOR))
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).context(format!("creating topic {}", spec.topic)),
        }
    }
    loop {
        client.refresh_metadata().await?;
        let ready = client.metadata().topics.get(&spec.topic).is_some_and(|t| {
            !t.partitions.is_empty() && t.partitions.iter().all(|p| p.leader.is_some())
        });
        if ready {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "topic {} has partitions without a leader after 30 s",
            spec.topic
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Latencies in microseconds, 1 µs to 10 minutes, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

fn record_latency(histogram: &mut Histogram<u64>, latency: Duration) {
    histogram.saturating_record((latency.as_micros() as u64).max(1));
}

/// p50 / p99 / p99.9 / max / mean in milliseconds (null without samples).
fn latency_json(histogram: &Histogram<u64>) -> Value {
    if histogram.is_empty() {
        return json!({ "samples": 0, "p50": null, "p99": null, "p999": null, "max": null, "mean": null });
    }
    let ms = |us: u64| us as f64 / 1000.0;
    json!({
        "samples": histogram.len(),
        "p50": ms(histogram.value_at_quantile(0.5)),
        "p99": ms(histogram.value_at_quantile(0.99)),
        "p999": ms(histogram.value_at_quantile(0.999)),
        "max": ms(histogram.max()),
        "mean": histogram.mean() / 1000.0,
    })
}

/// A progress bar fed from a shared counter by a ticker (the load loops only bump an atomic).
struct Progress {
    done: Arc<AtomicU64>,
    ticker: Option<tokio::task::JoinHandle<()>>,
    bar: indicatif::ProgressBar,
}

impl Progress {
    fn start(output: Output, total: u64, what: &str) -> Progress {
        let bar = if output.json || output.no_progress {
            indicatif::ProgressBar::hidden()
        } else {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {elapsed:>4} [{bar:30}] {human_pos}/{human_len} {msg} ({per_sec})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_message(what.to_string());
            bar
        };
        let done = Arc::new(AtomicU64::new(0));
        let ticker = (!bar.is_hidden()).then(|| {
            let done = Arc::clone(&done);
            let bar = bar.clone();
            tokio::spawn(async move {
                loop {
                    bar.set_position(done.load(Ordering::Relaxed));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        });
        Progress { done, ticker, bar }
    }

    fn counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.done)
    }

    fn finish(self) {
        if let Some(t) = self.ticker {
            t.abort();
        }
        self.bar.set_position(self.done.load(Ordering::Relaxed));
        self.bar.finish_and_clear();
    }
}

/// Prints the result: the JSON object, or a title line and a one-row table.
fn print_result(output: Output, title: &str, result: &Value) {
    if output.json {
        println!("{result}");
        return;
    }
    let latency = &result["latency_ms"];
    let cell = |v: &Value, digits: usize| match v.as_f64() {
        Some(x) => format!("{x:.digits$}"),
        None => "-".into(),
    };
    let headers = [
        "OK",
        "ERRORS",
        "SECONDS",
        "RECORDS/S",
        "MB/S",
        "P50 MS",
        "P99 MS",
        "P99.9 MS",
        "MAX MS",
    ];
    let row = [
        result["ok"].to_string(),
        result["errors"].to_string(),
        cell(&result["seconds"], 2),
        cell(&result["records_per_s"], 0),
        cell(&result["mb_per_s"], 1),
        cell(&latency["p50"], 3),
        cell(&latency["p99"], 3),
        cell(&latency["p999"], 3),
        cell(&latency["max"], 3),
    ];
    println!("{title}");
    let widths: Vec<usize> = headers
        .iter()
        .zip(&row)
        .map(|(h, c)| h.len().max(c.len()))
        .collect();
    let line = |cells: Vec<String>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect();
        println!("  {}", text.join("  "));
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    line(row.to_vec());
    if let Some(e) = result["first_error"].as_str() {
        println!("  first error: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_summary_is_in_milliseconds_and_null_when_empty() {
        let mut h = histogram();
        assert!(latency_json(&h)["p50"].is_null());
        for us in 1..=1000u64 {
            record_latency(&mut h, Duration::from_micros(us));
        }
        let j = latency_json(&h);
        let p50 = j["p50"].as_f64().unwrap();
        assert!((0.49..=0.51).contains(&p50), "{p50}");
        let max = j["max"].as_f64().unwrap();
        assert!((0.99..=1.01).contains(&max), "{max}");
        assert_eq!(j["samples"], 1000);
    }
}
