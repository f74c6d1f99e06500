//! `tandem kv put|get|del|cas|scan`: key-value tables from the command line.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Subcommand};
use tandem_client::table::{CasOutcome, Entry, ReadMode, ScanRange, Table, TableConfig, Token};
use tandem_client::{Acks, Durability};

use crate::client_cmd::{connect, runtime, Connect};

const KV_EXAMPLES: &str = "\
Examples:
  tandem topic create users --partitions 3 --config tandem.kind=table
  tandem kv put users alice admin              # prints the new version and token
  tandem kv get users alice --consistency linearizable
  tandem kv get users alice --consistency follower --max-lag-ms 500
  tandem kv get users alice --at-least 42:3    # a replica that has applied offset 42 of epoch 3
  tandem kv cas users alice --expect 42 --value owner
  tandem kv cas users bob --expect absent --value guest
  tandem kv del users alice
  tandem kv scan users --prefix al --limit 100

Exit codes: 0 done; 1 not found (get) or version mismatch (cas); 2 error.";

#[derive(Args)]
#[command(after_help = KV_EXAMPLES)]
pub struct KvArgs {
    #[command(subcommand)]
    pub command: KvCommand,
}

#[derive(Args, Clone)]
pub struct WriteOptions {
    /// 0, 1 or all.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// replicated or flushed (on disk on every in-sync replica before the ack).
    #[arg(long, default_value = "replicated")]
    pub durability: String,
    /// How long the leader may wait for the write to commit.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
}

#[derive(Args, Clone)]
pub struct ReadOptions {
    /// linearizable, leader or follower (any replica, maybe stale; see --max-lag-*). For
    /// read-your-writes across commands, pass the token a write printed with --at-least.
    #[arg(long, default_value = "linearizable")]
    pub consistency: String,
    /// With --consistency follower: refuse replicas further behind than this.
    #[arg(long)]
    pub max_lag_ms: Option<i64>,
    /// With --consistency follower: refuse replicas further behind than this many offsets.
    #[arg(long)]
    pub max_lag_offsets: Option<i64>,
    /// OFFSET:EPOCH, a token a write printed: read from any replica that has applied it.
    #[arg(long, value_parser = parse_token)]
    pub at_least: Option<Token>,
    /// Print each entry's version (and leader epoch) too.
    #[arg(long)]
    pub show_version: bool,
}

#[derive(Subcommand)]
pub enum KvCommand {
    /// Write a value; prints "version <offset> token <offset>:<epoch>".
    Put {
        table: String,
        key: String,
        value: String,
        #[command(flatten)]
        write: WriteOptions,
        #[command(flatten)]
        connect: Connect,
    },
    /// Print a key's value (exit 1 if absent).
    Get {
        table: String,
        key: String,
        #[command(flatten)]
        read: ReadOptions,
        #[command(flatten)]
        connect: Connect,
    },
    /// Delete a key.
    Del {
        table: String,
        key: String,
        #[command(flatten)]
        write: WriteOptions,
        #[command(flatten)]
        connect: Connect,
    },
    /// Compare-and-set: write only if the key's version is --expect (a version, or "absent").
    Cas {
        table: String,
        key: String,
        /// The version the key must have now, or "absent".
        #[arg(long)]
        expect: String,
        /// The new value.
        #[arg(long, conflicts_with = "delete", required_unless_present = "delete")]
        value: Option<String>,
        /// Delete the key instead of writing a value.
        #[arg(long)]
        delete: bool,
        #[command(flatten)]
        write: WriteOptions,
        #[command(flatten)]
        connect: Connect,
    },
    /// Print "key<TAB>value" lines in key order, across partitions.
    Scan {
        table: String,
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// From this key (inclusive).
        #[arg(long, default_value = "")]
        from: String,
        /// Up to this key (exclusive).
        #[arg(long)]
        to: Option<String>,
        /// At most this many entries (0: all, page by page).
        #[arg(long, default_value_t = 0)]
        limit: u32,
        #[command(flatten)]
        read: ReadOptions,
        #[command(flatten)]
        connect: Connect,
    },
}

fn parse_token(text: &str) -> Result<Token, String> {
    let (offset, epoch) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not OFFSET:EPOCH"))?;
    Ok(Token {
        offset: offset
            .parse()
            .map_err(|_| format!("bad offset in {text:?}"))?,
        leader_epoch: epoch
            .parse()
            .map_err(|_| format!("bad epoch in {text:?}"))?,
    })
}

fn table_config(write: Option<&WriteOptions>) -> anyhow::Result<TableConfig> {
    let mut config = TableConfig::default();
    if let Some(w) = write {
        config.acks = w.acks.parse::<Acks>()?;
        config.durability = w.durability.parse::<Durability>()?;
        if config.durability == Durability::Flushed && config.acks != Acks::All {
            bail!("--durability flushed needs --acks all");
        }
        config.write_timeout = Duration::from_millis(w.timeout_ms);
    }
    Ok(config)
}

fn read_mode(read: &ReadOptions) -> anyhow::Result<ReadMode> {
    if let Some(token) = read.at_least {
        return Ok(ReadMode::AtLeast(token));
    }
    Ok(match read.consistency.as_str() {
        "linearizable" => ReadMode::Linearizable,
        "leader" => ReadMode::Leader,
        "follower" => ReadMode::Follower {
            max_lag_offsets: read.max_lag_offsets,
            max_lag_ms: read.max_lag_ms,
        },
        "session" => ReadMode::Session,
        other => {
            bail!("--consistency {other:?}: expected linearizable, leader, follower or session")
        }
    })
}

fn print_written(token: Token) {
    println!(
        "version {} token {}:{}",
        token.offset, token.offset, token.leader_epoch
    );
}

fn print_entry(out: &mut impl Write, entry: &Entry, with_key: bool, show_version: bool) {
    let mut line = Vec::new();
    if with_key {
        line.extend_from_slice(&entry.key);
        line.push(b'\t');
    }
    if show_version {
        line.extend_from_slice(format!("{}:{}\t", entry.version, entry.leader_epoch).as_bytes());
    }
    line.extend_from_slice(&entry.value);
    line.push(b'\n');
    let _ = out.write_all(&line);
}

pub fn run(args: KvArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        match args.command {
            KvCommand::Put {
                table,
                key,
                value,
                write,
                connect: c,
            } => {
                let t = Table::new(connect(&c).await?, table, table_config(Some(&write))?);
                let token = t.put(key, value).await.context("put")?;
                print_written(token);
                Ok(ExitCode::SUCCESS)
            }
            KvCommand::Del {
                table,
                key,
                write,
                connect: c,
            } => {
                let t = Table::new(connect(&c).await?, table, table_config(Some(&write))?);
                let token = t.delete(key).await.context("delete")?;
                print_written(token);
                Ok(ExitCode::SUCCESS)
            }
            KvCommand::Cas {
                table,
                key,
                expect,
                value,
                delete: _,
                write,
                connect: c,
            } => {
                let expected = match expect.as_str() {
                    "absent" | "none" => None,
                    v => Some(v.parse::<i64>().with_context(|| {
                        format!("--expect {v:?}: expected a version or \"absent\"")
                    })?),
                };
                let t = Table::new(connect(&c).await?, table, table_config(Some(&write))?);
                match t
                    .cas(key, expected, value)
                    .await
                    .context("compare-and-set")?
                {
                    CasOutcome::Written(token) => {
                        print_written(token);
                        Ok(ExitCode::SUCCESS)
                    }
                    CasOutcome::Mismatch { current } => {
                        eprintln!(
                            "mismatch: the current version is {}",
                            current.map_or("absent".to_string(), |v| v.to_string())
                        );
                        Ok(ExitCode::from(1))
                    }
                }
            }
            KvCommand::Get {
                table,
                key,
                read,
                connect: c,
            } => {
                let mode = read_mode(&read)?;
                let t = Table::new(connect(&c).await?, table, table_config(None)?);
                match t.get(key.clone(), mode).await.context("get")? {
                    Some(entry) => {
                        print_entry(&mut std::io::stdout(), &entry, false, read.show_version);
                        Ok(ExitCode::SUCCESS)
                    }
                    None => {
                        eprintln!("{key:?} not found");
                        Ok(ExitCode::from(1))
                    }
                }
            }
            KvCommand::Scan {
                table,
                prefix,
                from,
                to,
                limit,
                read,
                connect: c,
            } => {
                let mode = read_mode(&read)?;
                let t = Table::new(connect(&c).await?, table, table_config(None)?);
                let mut range = ScanRange {
                    prefix: Bytes::from(prefix),
                    from: Bytes::from(from),
                    to: to.map(Bytes::from),
                };
                let mut left = if limit == 0 { u64::MAX } else { limit as u64 };
                let mut out = std::io::stdout().lock();
                while left > 0 {
                    let page_size = left.min(1_000) as u32;
                    let page = t.scan(&range, page_size, mode).await.context("scan")?;
                    for entry in &page.entries {
                        print_entry(&mut out, entry, true, read.show_version);
                    }
                    left = left.saturating_sub(page.entries.len() as u64);
                    match page.next {
                        Some(next) => range.from = next,
                        None => break,
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}
