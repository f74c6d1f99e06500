//! The client commands: `tandem topic create|delete|list|describe`, `produce`, `consume`,
//! `status`.
//! Each one connects through `--bootstrap` (or `TANDEM_BOOTSTRAP`) with tandem-client.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use tandem_client::{
    Acks, Client, ClientConfig, Consumer, ConsumerConfig, Durability, NewTopic, Producer,
    ProducerConfig, ReadFrom, Record, StartOffset,
};
use tokio::io::AsyncBufReadExt;

#[derive(Args, Clone)]
pub struct Connect {
    /// Any node of the cluster (host:port, comma separated for several).
    #[arg(long, env = "TANDEM_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
}

const TOPIC_EXAMPLES: &str = "\
Examples:
  tandem topic create events --partitions 3 --replication-factor 3 --min-insync 2
  tandem topic create audit --config tandem.flush=always --config retention.ms=-1
  tandem topic list
  tandem topic describe events
  tandem topic delete events";

#[derive(Args)]
#[command(after_help = TOPIC_EXAMPLES)]
pub struct TopicArgs {
    #[command(subcommand)]
    pub command: TopicCommand,
}

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    #[command(after_help = "\
Examples:
  tandem topic create events --partitions 3 --replication-factor 3 --min-insync 2
  tandem topic create audit --config tandem.flush=always --config retention.ms=-1

Settings (--config name=value): min.insync.replicas, unclean.leader.election.enable,
retention.ms, retention.bytes (-1: unlimited), max.message.bytes,
tandem.flush (always | never | <ms>), tandem.kind (log | table).")]
    Create {
        name: String,
        /// How many partitions.
        #[arg(long, short = 'p', default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        partitions: u32,
        /// Replicas per partition (default: 3, or the number of nodes if fewer).
        #[arg(long, visible_alias = "rf")]
        replication_factor: Option<u16>,
        /// min.insync.replicas: acks=all needs this many in-sync replicas.
        #[arg(long, visible_alias = "min-insync-replicas")]
        min_insync: Option<u16>,
        /// More settings as name=value, repeatable (retention.ms, tandem.flush=always|never|<ms>, ...).
        #[arg(long = "config", value_name = "NAME=VALUE", value_parser = parse_config)]
        configs: Vec<(String, String)>,
        #[command(flatten)]
        connect: Connect,
    },
    /// Delete a topic and its data.
    #[command(after_help = "Example:\n  tandem topic delete events")]
    Delete {
        name: String,
        #[command(flatten)]
        connect: Connect,
    },
    /// List topics with their partitions' leaders and ISRs.
    #[command(after_help = "Example:\n  tandem topic list")]
    List {
        #[command(flatten)]
        connect: Connect,
    },
    /// A topic's settings and every partition's leader, epochs, replicas, ISR, ELR, HW.
    #[command(after_help = "Example:\n  tandem topic describe events")]
    Describe {
        name: String,
        /// A node's admin HTTP address (see `tandem status --help`).
        #[arg(long, env = "TANDEM_ADMIN", value_name = "HOST:PORT")]
        admin: Option<String>,
        #[command(flatten)]
        connect: Connect,
    },
}

fn parse_config(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?} is not name=value"))
}

const PRODUCE_EXAMPLES: &str = "\
Examples:
  seq 1 100 | tandem produce events
  printf 'user-1:hello\\nuser-2:bye\\n' | tandem produce events --key-separator :
  tandem produce events --acks all --durability flushed --print-offsets < lines.txt";

#[derive(Args)]
#[command(after_help = PRODUCE_EXAMPLES)]
pub struct ProduceArgs {
    pub topic: String,
    /// Split each line at the first occurrence of this into key and value.
    #[arg(long)]
    pub key_separator: Option<String>,
    /// 0, 1 or all.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// replicated or flushed (acknowledged once on disk on every in-sync replica).
    #[arg(long, default_value = "replicated")]
    pub durability: String,
    /// Send every record to this partition.
    #[arg(long)]
    pub partition: Option<u32>,
    /// Print "partition<TAB>offset" of every acknowledged record, in input order.
    #[arg(long)]
    pub print_offsets: bool,
    /// Give up on a record after this long (retries included).
    #[arg(long, default_value_t = 30_000)]
    pub delivery_timeout_ms: u64,
    #[command(flatten)]
    pub connect: Connect,
}

const CONSUME_EXAMPLES: &str = "\
Examples:
  tandem consume events --from-beginning --max 10
  tandem consume events --partition 0 --offset 42 --print-offsets
  tandem consume events --from latest --follow        # new records until Ctrl-C
  tandem consume events --from-follower --key-separator =

Without --follow it stops after --max records or --idle-ms without one. Exit code 1 when
--max records did not all come.";

#[derive(Args)]
#[command(after_help = CONSUME_EXAMPLES)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Where to start: earliest, latest or an offset [default: earliest].
    #[arg(long, conflicts_with_all = ["from_beginning", "offset"])]
    pub from: Option<String>,
    /// Start at the oldest record (same as --from earliest, the default).
    #[arg(long, conflicts_with = "offset")]
    pub from_beginning: bool,
    /// Start at this offset (on each partition read).
    #[arg(long)]
    pub offset: Option<u64>,
    /// Only this partition (default: all).
    #[arg(long)]
    pub partition: Option<u32>,
    /// Stop after this many records.
    #[arg(long, visible_alias = "count", value_name = "N")]
    pub max: Option<u64>,
    /// Stop when nothing arrived for this long.
    #[arg(long, default_value_t = 2_000)]
    pub idle_ms: u64,
    /// Keep reading until Ctrl-C (or --max); ignores --idle-ms.
    #[arg(long)]
    pub follow: bool,
    /// Read from an in-sync follower instead of the leader.
    #[arg(long)]
    pub from_follower: bool,
    /// Print "partition<TAB>offset<TAB>" before each record.
    #[arg(long)]
    pub print_offsets: bool,
    /// Print keys too, followed by this separator.
    #[arg(long)]
    pub key_separator: Option<String>,
    #[command(flatten)]
    pub connect: Connect,
}

const STATUS_EXAMPLES: &str = "\
Examples:
  tandem status              # nodes, active controller, partitions, lag; a summary line
  tandem status --json | jq '.partitions[] | select(.under_min_isr)'
  tandem status --summary
  tandem status --admin 127.0.0.1:10092   # read http://127.0.0.1:10092/api/cluster directly

It reads the merged cluster view from a node's admin API (/api/cluster): from --admin
(TANDEM_ADMIN), else from the admin address the --bootstrap node reports for itself or another.

Exit code: 0 when every partition has a leader and at least min.insync.replicas in its ISR,
1 when some partition is offline or under min ISR, 2 when the cluster cannot be reached.";

#[derive(Args)]
#[command(after_help = STATUS_EXAMPLES)]
pub struct StatusArgs {
    /// Print the cluster status as JSON on stdout (the summary line goes to stderr).
    #[arg(long, conflicts_with = "summary")]
    pub json: bool,
    /// Only the one-line summary.
    #[arg(long)]
    pub summary: bool,
    /// A node's admin HTTP address (host:port, comma separated for several) to read
    /// /api/cluster from; default: the admin address the --bootstrap node reports.
    #[arg(long, env = "TANDEM_ADMIN", value_name = "HOST:PORT")]
    pub admin: Option<String>,
    #[command(flatten)]
    pub connect: Connect,
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub(crate) async fn connect(connect: &Connect) -> anyhow::Result<Client> {
    let addresses: Vec<String> = connect
        .bootstrap
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let mut config = ClientConfig::new(addresses);
    config.client_id = "tandem-cli".into();
    Client::connect(config).await.with_context(|| {
        format!(
            "cannot reach the cluster at {} (is it running? set --bootstrap or TANDEM_BOOTSTRAP)",
            connect.bootstrap
        )
    })
}

pub fn topic(args: TopicArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        match args.command {
            TopicCommand::Create {
                name,
                partitions,
                replication_factor,
                min_insync,
                configs,
                connect: c,
            } => {
                let client = connect(&c).await?;
                let mut topic = NewTopic::new(&name, partitions);
                topic.replication_factor = replication_factor;
                if let Some(m) = min_insync {
                    topic = topic.config("min.insync.replicas", m.to_string());
                }
                topic.configs.extend(configs);
                client.create_topic(topic).await?;
                println!("created topic {name} ({partitions} partitions)");
            }
            TopicCommand::Describe {
                name,
                admin,
                connect: c,
            } => {
                let view = gather_status(&c, admin.as_deref()).await?;
                return describe_topic(&view, &name);
            }
            TopicCommand::Delete { name, connect: c } => {
                connect(&c).await?.delete_topic(&name).await?;
                println!("deleted topic {name}");
            }
            TopicCommand::List { connect: c } => {
                let client = connect(&c).await?;
                let topics = client.list_topics().await?;
                let mut out = std::io::stdout().lock();
                for t in topics {
                    writeln!(out, "{}\t{} partitions", t.name, t.partitions.len())?;
                    for p in &t.partitions {
                        let leader = p.leader.map_or("none".to_string(), |l| l.to_string());
                        writeln!(
                            out,
                            "  {}-{}\tleader {leader}\tepoch {}\treplicas {:?}\tisr {:?}",
                            t.name, p.partition, p.leader_epoch, p.replicas, p.isr
                        )?;
                    }
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn produce(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let acks: Acks = args.acks.parse()?;
    let durability: Durability = args.durability.parse()?;
    if durability == Durability::Flushed && acks != Acks::All {
        bail!("--durability flushed needs --acks all");
    }
    runtime()?.block_on(async move {
        let client = connect(&args.connect).await?;
        let config = ProducerConfig {
            acks,
            durability,
            delivery_timeout: Duration::from_millis(args.delivery_timeout_ms),
            ..ProducerConfig::default()
        };
        let producer = Producer::new(client, config).await?;
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut pending = Vec::new();
        while let Some(line) = lines.next_line().await.context("reading stdin")? {
            let (key, value) = match &args.key_separator {
                Some(sep) => match line.split_once(sep.as_str()) {
                    Some((k, v)) => (Some(k.to_string()), v.to_string()),
                    None => (None, line),
                },
                None => (None, line),
            };
            let mut record = Record::new(&args.topic, value);
            if let Some(k) = key {
                record = record.key(k);
            }
            if let Some(p) = args.partition {
                record = record.partition(p);
            }
            pending.push(producer.send(record).await?);
        }
        let total = pending.len();
        let mut failed = 0usize;
        let mut first_error = None;
        let mut out = std::io::stdout().lock();
        for ack in pending {
            match ack.await {
                Ok(at) => {
                    if args.print_offsets {
                        writeln!(out, "{}\t{}", at.partition, at.offset)?;
                    }
                }
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        drop(out);
        producer.close().await?;
        if let Some(e) = first_error {
            bail!("{failed} of {total} records failed; first: {e}");
        }
        eprintln!("produced {total} records to {}", args.topic);
        Ok(ExitCode::SUCCESS)
    })
}

pub fn consume(args: ConsumeArgs) -> anyhow::Result<ExitCode> {
    let from: StartOffset = if args.from_beginning {
        StartOffset::Earliest
    } else if let Some(offset) = args.offset {
        StartOffset::At(offset as i64)
    } else {
        match &args.from {
            Some(from) => from.parse()?,
            None => StartOffset::Earliest,
        }
    };
    match runtime()?.block_on(consume_records(&args, from)) {
        // `tandem consume ... | head`: the reader is gone, which is no error.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(ExitCode::SUCCESS)
        }
        other => other,
    }
}

async fn consume_records(args: &ConsumeArgs, from: StartOffset) -> anyhow::Result<ExitCode> {
    let client = connect(&args.connect).await?;
    let config = ConsumerConfig {
        read_from: if args.from_follower {
            ReadFrom::Follower
        } else {
            ReadFrom::Leader
        },
        max_wait: Duration::from_millis(args.idle_ms.clamp(10, 500)),
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client, config);
    let partitions = args.partition.map(|p| vec![p]);
    consumer
        .assign(&args.topic, partitions.as_deref(), from)
        .await?;
    let mut seen = 0u64;
    let mut last_record = Instant::now();
    let idle = Duration::from_millis(args.idle_ms);
    let mut out = std::io::stdout().lock();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    'read: loop {
        if args.max.is_some_and(|c| seen >= c) {
            break;
        }
        let records = tokio::select! {
            records = consumer.poll() => records?,
            _ = &mut interrupted => break 'read,
        };
        if records.is_empty() {
            if !args.follow && last_record.elapsed() >= idle {
                break;
            }
            continue;
        }
        last_record = Instant::now();
        for r in records {
            if args.print_offsets {
                write!(out, "{}\t{}\t", r.partition, r.offset)?;
            }
            if let Some(sep) = &args.key_separator {
                out.write_all(r.key.as_deref().unwrap_or_default())?;
                out.write_all(sep.as_bytes())?;
            }
            out.write_all(r.value.as_deref().unwrap_or_default())?;
            out.write_all(b"\n")?;
            seen += 1;
            if args.max.is_some_and(|c| seen >= c) {
                break 'read;
            }
        }
        out.flush()?;
    }
    out.flush()?;
    drop(out);
    if let Some(c) = args.max {
        if seen < c {
            eprintln!(
                "read {seen} of {c} records before {}",
                if args.follow {
                    "Ctrl-C".to_string()
                } else {
                    format!("{} ms of silence (--idle-ms)", args.idle_ms)
                }
            );
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let view = gather_status(&args.connect, args.admin.as_deref()).await?;
        let summary = tandem_client::summarize(&view.json);
        let line = format!("{summary} (as seen by {})", view.answered_by);
        if args.json {
            println!("{}", serde_json::to_string_pretty(&view.json)?);
            eprintln!("{line}");
        } else {
            if !args.summary {
                print!("{}", status_table(&view));
            }
            println!("{line}");
        }
        Ok(if summary.offline > 0 || summary.under_min_isr > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    })
}

/// The cluster status: every node's own view merged by a node's admin API (`/api/cluster`,
/// docs/observability.md): the newest metadata, each partition's leader HW and each replica's
/// offsets and lag.
struct StatusView {
    answered_by: String,
    json: serde_json::Value,
}

/// How long `/api/cluster` may take (it asks every node, each bounded below a second).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads `/api/cluster` from `--admin` (comma separated: the first that answers), or else from
/// the admin addresses the nodes registered, asked of the `--bootstrap` node (its own first).
async fn gather_status(c: &Connect, admin: Option<&str>) -> anyhow::Result<StatusView> {
    let candidates: Vec<String> = match admin {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(String::from)
            .collect(),
        None => {
            let client = connect(c).await?;
            let first = client
                .cluster_status()
                .await
                .context("asking the cluster for its status")?;
            let answering = first.json["node"].as_i64();
            let mut nodes: Vec<&serde_json::Value> = first.json["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .collect();
            nodes.sort_by_key(|n| n["id"].as_i64() != answering);
            let addresses: Vec<String> = nodes
                .iter()
                .filter_map(|n| n["admin_address"].as_str().map(String::from))
                .collect();
            if addresses.is_empty() {
                bail!(
                    "no node of the cluster at {} serves the admin API (start nodes with --admin-listen, or pass --admin)",
                    c.bootstrap
                );
            }
            addresses
        }
    };
    let mut errors = Vec::new();
    for address in &candidates {
        match crate::http::get(address, "/api/cluster", ADMIN_TIMEOUT).await {
            Ok(text) => {
                let json: serde_json::Value = serde_json::from_str(&text)
                    .with_context(|| format!("http://{address}/api/cluster is not JSON"))?;
                let answered_by = json["answered_by"].as_str().unwrap_or(address).to_string();
                return Ok(StatusView { answered_by, json });
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    bail!("no admin API answered: {}", errors.join("; "))
}

fn ids(value: &serde_json::Value) -> String {
    let list: Vec<String> = value
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v.to_string())
        .collect();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(",")
    }
}

fn or_dash(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "-".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Left-aligned columns, two spaces apart, indented by two.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::from("  ");
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            text.push_str(cell);
            if i + 1 < cells.len() {
                text.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

fn status_table(view: &StatusView) -> String {
    let json = &view.json;
    let controller = json["active_controller"].as_i64();
    let answered: Vec<i64> = json["views_from"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_i64())
        .collect();
    let nodes: Vec<Vec<String>> = json["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let id = n["id"].as_i64().unwrap_or(-1);
            let mut status = or_dash(&n["status"]);
            if !answered.contains(&id) {
                status.push_str(" (no answer)");
            }
            vec![
                id.to_string(),
                or_dash(&n["address"]),
                status,
                or_dash(&n["incarnation"]),
                if controller == Some(id) {
                    "active".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    let mut out = String::from("Nodes\n");
    out.push_str(&table(
        &["ID", "ADDRESS", "STATUS", "INCARNATION", "CONTROLLER"],
        &nodes,
    ));
    let partitions: Vec<Vec<String>> = json["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let lag: Vec<String> = p["replica_offsets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    format!(
                        "{}:{}",
                        or_dash(&r["id"]),
                        or_dash(&r["lag"]).replace('-', "?")
                    )
                })
                .collect();
            let mut flags = Vec::new();
            if p["leader"].is_null() {
                flags.push("OFFLINE");
            }
            if p["under_min_isr"].as_bool() == Some(true) {
                flags.push("under-min-isr");
            } else if p["under_replicated"].as_bool() == Some(true) {
                flags.push("under-replicated");
            }
            if p["recovering"].as_bool() == Some(true) {
                flags.push("recovering");
            }
            vec![
                format!("{}-{}", or_dash(&p["topic"]), or_dash(&p["partition"])),
                or_dash(&p["leader"]),
                ids(&p["isr"]),
                or_dash(&p["leader_epoch"]),
                or_dash(&p["partition_epoch"]),
                or_dash(&p["high_watermark"]),
                lag.join(" "),
                flags.join(","),
            ]
        })
        .collect();
    out.push_str("Partitions\n");
    if partitions.is_empty() {
        out.push_str("  (no topics)\n");
    } else {
        out.push_str(&table(
            &[
                "PARTITION",
                "LEADER",
                "ISR",
                "LEADER-EPOCH",
                "PART-EPOCH",
                "HW",
                "LAG(replica:records)",
                "FLAGS",
            ],
            &partitions,
        ));
    }
    out
}

fn describe_topic(view: &StatusView, name: &str) -> anyhow::Result<ExitCode> {
    let json = &view.json;
    let topic = json["topics"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["name"].as_str() == Some(name));
    let partitions: Vec<&serde_json::Value> = json["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["topic"].as_str() == Some(name))
        .collect();
    if topic.is_none() && partitions.is_empty() {
        bail!("unknown topic {name} (`tandem topic list` shows the topics)");
    }
    let mut out = std::io::stdout().lock();
    match topic {
        Some(t) => {
            writeln!(
                out,
                "Topic {name}: {} partitions, replication factor {}, kind {}",
                or_dash(&t["partitions"]),
                or_dash(&t["replication_factor"]),
                or_dash(&t["kind"])
            )?;
            let config: Vec<String> = t["config"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", or_dash(v)))
                .collect();
            writeln!(out, "Config: {}", config.join(" "))?;
        }
        None => writeln!(
            out,
            "Topic {name}: {} partitions (this server does not report its config)",
            partitions.len()
        )?,
    }
    let rows: Vec<Vec<String>> = partitions
        .iter()
        .map(|p| {
            vec![
                or_dash(&p["partition"]),
                or_dash(&p["leader"]),
                or_dash(&p["leader_epoch"]),
                or_dash(&p["partition_epoch"]),
                ids(&p["replicas"]),
                ids(&p["isr"]),
                ids(&p["elr"]),
                if p["recovering"].as_bool() == Some(true) {
                    "yes".into()
                } else {
                    "no".into()
                },
                or_dash(&p["high_watermark"]),
            ]
        })
        .collect();
    write!(
        out,
        "{}",
        table(
            &[
                "PARTITION",
                "LEADER",
                "LEADER-EPOCH",
                "PART-EPOCH",
                "REPLICAS",
                "ISR",
                "ELR",
                "RECOVERING",
                "HW",
            ],
            &rows,
        )
    )?;
    Ok(ExitCode::SUCCESS)
}
