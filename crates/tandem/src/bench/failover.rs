//! `tandem bench failover`: SIGKILL of a partition leader of a `tandem dev` cluster, `--trials`
//! times, and two clocks started at the kill:
//!
//! - **write**: the first acknowledged `acks=all` write to that partition (a producer that was
//!   connected before the kill sends one record right after it; it retries as the client
//!   does, with the backoff set by `--probe-backoff-ms`);
//! - **read**: the first read, on the new leader, that is as new as every write acknowledged
//!   before the kill (ListOffsets "latest" answers at least that offset; a new leader answers
//!   OFFSET_NOT_AVAILABLE until its HW reaches the start of its epoch). This is the stand-in
//!   for the first *linearizable* read, which needs key-value tables (issue 6): once
//!   `tandem bench kv` exists, the read probe becomes a linearizable get of a key written
//!   before the kill (`read_probe` below is the hook).
//!
//! `--victim leader` kills a leader that is not the active controller; `--victim controller`
//! kills the one that is (a controller election comes first). Between trials `tandem dev`
//! restarts the killed node (its `--restart-delay-ms`), and the next trial waits for the full
//! ISR, then `--settle-ms`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use serde_json::{json, Value};
use tandem_client::{Acks, Client, Consumer, ConsumerConfig, Producer, ProducerConfig, Record};

use super::{Output, TopicSpec};
use crate::client_cmd::Connect;

#[derive(Args)]
#[command(after_help = "\
Examples (next to `tandem dev`, which restarts the killed node):
  tandem bench failover --trials 10
  tandem bench failover --cluster-json /tmp/t/cluster.json --victim controller --json")]
pub struct FailoverBench {
    /// The cluster.json that `tandem dev` writes (node ids, pids, addresses). dev must restart
    /// killed nodes (no --no-restart).
    #[arg(long, default_value = "tandem-data/cluster.json")]
    pub cluster_json: PathBuf,
    #[arg(long, default_value_t = 10)]
    pub trials: usize,
    /// leader: kill a partition leader that is not the active controller; controller: kill the
    /// partition leader that is the active controller.
    #[arg(long, default_value = "leader")]
    pub victim: String,
    /// The topic probed (created with one partition per node, RF 3, min.insync 2).
    #[arg(long, default_value = "bench-failover")]
    pub topic: String,
    /// The probes' retry backoff (the client's default is 20 ms, doubling).
    #[arg(long, default_value_t = 1)]
    pub probe_backoff_ms: u64,
    /// Steady state before each kill: the full ISR for this long.
    #[arg(long, default_value_t = 1_000)]
    pub settle_ms: u64,
    /// Give up on a trial (and the run) after this long.
    #[arg(long, default_value_t = 60)]
    pub trial_timeout_secs: u64,
    #[command(flatten)]
    pub output: Output,
}

struct Node {
    id: i32,
    pid: Option<i32>,
}

fn read_cluster(path: &PathBuf) -> anyhow::Result<(String, Vec<Node>)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {} (is `tandem dev` running?)", path.display()))?;
    let json: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let bootstrap = json["bootstrap"]
        .as_str()
        .context("cluster.json has no bootstrap")?
        .to_string();
    let nodes = json["nodes"]
        .as_array()
        .context("cluster.json has no nodes")?
        .iter()
        .map(|n| Node {
            id: n["id"].as_i64().unwrap_or(-1) as i32,
            pid: n["pid"]
                .as_i64()
                .filter(|_| n["running"].as_bool() == Some(true))
                .map(|p| p as i32),
        })
        .collect();
    Ok((bootstrap, nodes))
}

/// One trial's figures, in milliseconds from the kill.
struct Trial {
    killed: i32,
    partition: u32,
    was_controller: bool,
    write_ms: f64,
    read_ms: f64,
    /// When a Metadata answer first named another leader: how much of the rest is the
    /// committed change reaching the brokers.
    metadata_ms: f64,
    new_leader: Option<i32>,
}

pub async fn run(args: FailoverBench) -> anyhow::Result<ExitCode> {
    let want_controller = match args.victim.as_str() {
        "leader" => false,
        "controller" => true,
        other => bail!("--victim {other:?}: expected leader or controller"),
    };
    let (bootstrap, nodes) = read_cluster(&args.cluster_json)?;
    let connect = Connect { bootstrap };
    let backoff = Duration::from_millis(args.probe_backoff_ms.max(1));
    let tune = |c: &mut tandem_client::ClientConfig| {
        c.retry_backoff = backoff;
        c.max_retry_backoff = backoff * 10;
        c.operation_timeout = Duration::from_secs(args.trial_timeout_secs);
    };
    let admin = super::connect(&connect, tune).await?;
    let spec = TopicSpec {
        topic: args.topic.clone(),
        partitions: nodes.len() as u32,
        replication_factor: nodes.len().min(3) as u16,
        min_insync: 2,
        flush: "never".into(),
    };
    super::ensure_topic(&admin, &spec).await?;

    let mut trials = Vec::with_capacity(args.trials);
    for n in 0..args.trials {
        let trial = tokio::time::timeout(
            Duration::from_secs(args.trial_timeout_secs),
            one_trial(&args, &connect, tune, &admin, want_controller),
        )
        .await
        .with_context(|| format!("trial {} took over {} s", n + 1, args.trial_timeout_secs))??;
        if !args.output.json {
            eprintln!(
                "trial {:2}: SIGKILL of node {} (leader of {}-{}{}) -> acks=all write {:.1} ms, \
                 up-to-date read {:.1} ms, metadata named a new leader at {:.1} ms, new leader {}",
                n + 1,
                trial.killed,
                args.topic,
                trial.partition,
                if trial.was_controller {
                    ", active controller"
                } else {
                    ""
                },
                trial.write_ms,
                trial.read_ms,
                trial.metadata_ms,
                trial.new_leader.map_or("?".into(), |l| l.to_string())
            );
        }
        trials.push(trial);
    }
    let stats = |values: Vec<f64>| -> Value {
        let mut v = values;
        v.sort_by(|a, b| a.total_cmp(b));
        let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        if v.is_empty() {
            return Value::Null;
        }
        json!({ "p50": rank(0.5), "p99": rank(0.99), "max": v[v.len() - 1], "min": v[0] })
    };
    let result = json!({
        "bench": "failover",
        "victim": args.victim,
        "topic": args.topic,
        "probe_backoff_ms": args.probe_backoff_ms,
        "settle_ms": args.settle_ms,
        "trials": trials.iter().map(|t| json!({
            "killed": t.killed,
            "partition": t.partition,
            "was_active_controller": t.was_controller,
            "write_ms": t.write_ms,
            "read_ms": t.read_ms,
            "metadata_ms": t.metadata_ms,
            "new_leader": t.new_leader,
        })).collect::<Vec<_>>(),
        "write_ms": stats(trials.iter().map(|t| t.write_ms).collect()),
        "read_ms": stats(trials.iter().map(|t| t.read_ms).collect()),
        "metadata_ms": stats(trials.iter().map(|t| t.metadata_ms).collect()),
        "read_is": "ListOffsets latest on the new leader >= every write acknowledged before the kill (linearizable reads need key-value tables)",
    });
    if args.output.json {
        println!("{result}");
    } else {
        println!(
            "failover, SIGKILL of a partition leader ({}), {} trials, ms from the kill:",
            if want_controller {
                "the active controller"
            } else {
                "not the active controller"
            },
            trials.len()
        );
        for (what, key) in [
            ("first acknowledged acks=all write", "write_ms"),
            ("first up-to-date read on the new leader", "read_ms"),
            ("first Metadata answer naming a new leader", "metadata_ms"),
        ] {
            let s = &result[key];
            println!(
                "  {what:40} p50 {:>8.1}  p99 {:>8.1}  max {:>8.1}  min {:>8.1}",
                s["p50"].as_f64().unwrap_or(f64::NAN),
                s["p99"].as_f64().unwrap_or(f64::NAN),
                s["max"].as_f64().unwrap_or(f64::NAN),
                s["min"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits for a steady cluster with a suitable victim, kills it, times both probes, then waits
/// for `tandem dev` to have restarted it.
async fn one_trial(
    args: &FailoverBench,
    connect: &Connect,
    tune: impl Fn(&mut tandem_client::ClientConfig) + Copy,
    admin: &Client,
    want_controller: bool,
) -> anyhow::Result<Trial> {
    let settle = Duration::from_millis(args.settle_ms);
    let (victim, pid, partition, controller, last_offset, producer, reader, write_client) = loop {
        let (_, nodes) = read_cluster(&args.cluster_json)?;
        admin.refresh_metadata().await?;
        let controller = admin
            .cluster_status()
            .await
            .ok()
            .and_then(|s| s.json["active_controller"].as_i64())
            .map(|c| c as i32);
        let metadata = admin.metadata();
        let Some(topic) = metadata.topics.get(&args.topic) else {
            bail!("topic {} vanished", args.topic);
        };
        let full = nodes.iter().all(|n| n.pid.is_some())
            && topic
                .partitions
                .iter()
                .all(|p| p.leader.is_some() && p.isr.len() == p.replicas.len());
        let candidate = topic.partitions.iter().find(|p| {
            p.leader.is_some()
                && (p.leader == controller) == want_controller
                && controller.is_some()
        });
        let (true, Some(candidate)) = (full, candidate) else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let victim = candidate.leader.expect("checked");
        let partition = candidate.partition;
        let Some(pid) = nodes.iter().find(|n| n.id == victim).and_then(|n| n.pid) else {
            continue;
        };
        // Probes connected and warm: an acks=all write through the current leader.
        let write_client = super::connect(connect, tune).await?;
        let producer = Producer::new(
            write_client.clone(),
            ProducerConfig {
                acks: Acks::All,
                linger: Duration::ZERO,
                delivery_timeout: Duration::from_secs(args.trial_timeout_secs),
                ..ProducerConfig::default()
            },
        )
        .await?;
        let warm = producer
            .send_and_wait(Record::new(&args.topic, "before the kill").partition(partition))
            .await;
        let reader = Consumer::new(
            super::connect(connect, tune).await?,
            ConsumerConfig::default(),
        );
        tokio::time::sleep(settle).await;
        // Still the same leader and controller after the pause?
        admin.refresh_metadata().await?;
        let same = admin.metadata().leader(&args.topic, partition).map(|l| l.0) == Some(victim);
        match warm {
            Ok(at) if same => {
                break (
                    victim,
                    pid,
                    partition,
                    controller,
                    at.offset,
                    producer,
                    reader,
                    write_client,
                )
            }
            _ => {
                let _ = producer.close().await;
                continue;
            }
        }
    };

    // SAFETY: kill(2) with a pid tandem dev reported for this node; no memory is involved.
    let killed = unsafe { libc::kill(pid, libc::SIGKILL) };
    let killed_at = Instant::now();
    if killed != 0 {
        bail!(
            "kill -9 {pid} (node {victim}): {}",
            std::io::Error::last_os_error()
        );
    }
    let write = async {
        let acked = producer
            .send_and_wait(
                Record::new(&args.topic, Bytes::from_static(b"after the kill"))
                    .partition(partition),
            )
            .await
            .map(|_| killed_at.elapsed());
        // The leader that took it, as the probe's client knew it then (later the restarted
        // node may be the preferred leader again).
        let leader = write_client
            .metadata()
            .leader(&args.topic, partition)
            .map(|l| l.0);
        acked.map(|took| (took, leader))
    };
    let read = read_probe(&reader, &args.topic, partition, last_offset + 1, killed_at);
    let metadata = metadata_probe(admin, &args.topic, partition, victim, killed_at);
    let (write, read, metadata) = tokio::join!(write, read, metadata);
    let (write, new_leader) = write.context("the write probe failed")?;
    let read = read?;
    let _ = producer.close().await;

    // dev restarts the node with a new pid; wait for that before the next trial.
    loop {
        let (_, nodes) = read_cluster(&args.cluster_json)?;
        if nodes
            .iter()
            .find(|n| n.id == victim)
            .is_some_and(|n| n.pid.is_some_and(|p| p != pid))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Trial {
        killed: victim,
        partition,
        was_controller: controller == Some(victim),
        write_ms: write.as_secs_f64() * 1e3,
        read_ms: read.as_secs_f64() * 1e3,
        metadata_ms: metadata.as_secs_f64() * 1e3,
        new_leader,
    })
}

/// Refreshes metadata every millisecond until an answer names a leader other than `victim`.
async fn metadata_probe(
    admin: &Client,
    topic: &str,
    partition: u32,
    victim: i32,
    since: Instant,
) -> Duration {
    loop {
        if admin.refresh_metadata().await.is_ok() {
            let leader = admin.metadata().leader(topic, partition).map(|l| l.0);
            if leader.is_some_and(|l| l != victim) {
                return since.elapsed();
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The hook for the first linearizable read after a failover. Today: the first ListOffsets
/// "latest" from the partition's (new) leader that is at least `at_least` (every write
/// acknowledged before the kill). With tables, a linearizable get goes here.
async fn read_probe(
    reader: &Consumer,
    topic: &str,
    partition: u32,
    at_least: i64,
    since: Instant,
) -> anyhow::Result<Duration> {
    loop {
        match reader.list_offset(topic, partition, -1).await {
            Ok(latest) if latest >= at_least => return Ok(since.elapsed()),
            Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            Err(e) if e.is_retriable() => tokio::time::sleep(Duration::from_millis(1)).await,
            Err(e) => return Err(e).context("the read probe failed"),
        }
    }
}
