//! The client commands: `tandem topic create|delete|list`, `produce`, `consume`, `status`.
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

#[derive(Args)]
pub struct TopicArgs {
    #[command(subcommand)]
    pub command: TopicCommand,
}

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Replicas per partition (default: 3, or the number of nodes if fewer).
        #[arg(long)]
        replication_factor: Option<u16>,
        /// min.insync.replicas: acks=all needs this many in-sync replicas.
        #[arg(long)]
        min_insync: Option<u16>,
        /// More settings as name=value (retention.ms, tandem.flush=always|never|<ms>, ...).
        #[arg(long = "config", value_parser = parse_config)]
        configs: Vec<(String, String)>,
        #[command(flatten)]
        connect: Connect,
    },
    /// Delete a topic.
    Delete {
        name: String,
        #[command(flatten)]
        connect: Connect,
    },
    /// List topics with their partitions' leaders and ISRs.
    List {
        #[command(flatten)]
        connect: Connect,
    },
}

fn parse_config(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?} is not name=value"))
}

#[derive(Args)]
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

#[derive(Args)]
pub struct ConsumeArgs {
    pub topic: String,
    /// earliest, latest or an offset.
    #[arg(long, default_value = "earliest")]
    pub from: String,
    /// Only this partition (default: all).
    #[arg(long)]
    pub partition: Option<u32>,
    /// Stop after this many records.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop when nothing arrived for this long.
    #[arg(long, default_value_t = 2_000)]
    pub idle_ms: u64,
    /// Keep reading until Ctrl-C (ignore --idle-ms).
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

#[derive(Args)]
pub struct StatusArgs {
    /// Only the one-line summary.
    #[arg(long)]
    pub summary: bool,
    #[command(flatten)]
    pub connect: Connect,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

async fn connect(connect: &Connect) -> anyhow::Result<Client> {
    let addresses: Vec<String> = connect
        .bootstrap
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let mut config = ClientConfig::new(addresses);
    config.client_id = "tandem-cli".into();
    Client::connect(config)
        .await
        .with_context(|| format!("cannot reach the cluster at {}", connect.bootstrap))
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
    let from: StartOffset = args.from.parse()?;
    runtime()?.block_on(async move {
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
        'read: loop {
            if args.count.is_some_and(|c| seen >= c) {
                break;
            }
            let records = consumer.poll().await?;
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
                if args.count.is_some_and(|c| seen >= c) {
                    break 'read;
                }
            }
            out.flush()?;
        }
        out.flush()?;
        drop(out);
        if let Some(c) = args.count {
            if seen < c {
                eprintln!(
                    "read {seen} of {c} records before {} ms of silence",
                    args.idle_ms
                );
                return Ok(ExitCode::from(1));
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let client = connect(&args.connect).await?;
        let status = client.cluster_status().await?;
        if !args.summary {
            println!("{}", serde_json::to_string_pretty(&status.json)?);
        }
        println!("{} (as seen by {})", status.summary(), status.answered_by);
        Ok(ExitCode::SUCCESS)
    })
}
