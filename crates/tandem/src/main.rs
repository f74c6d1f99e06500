//! The `tandem` binary: one executable for the server, the local cluster and every tool.

mod bench;
mod client_cmd;
mod http;
mod kv_cmd;
mod log_cmd;
mod server_cmd;
mod server_config;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "A leader-follower replicated log and key-value store",
    after_help = "\
Examples:
  tandem dev                                   # a local 3-node cluster, data in ./tandem-data
  tandem topic create events --partitions 3 --replication-factor 3 --min-insync 2
  seq 1 10 | tandem produce events
  tandem consume events --from-beginning --max 10
  tandem topic create users --config tandem.kind=table
  tandem kv put users alice admin && tandem kv get users alice
  tandem status

Client commands reach the cluster through --bootstrap or TANDEM_BOOTSTRAP (default
127.0.0.1:9092). `tandem <command> --help` has each command's examples."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node.
    Server(Box<server_cmd::ServerArgs>),
    /// Run a local cluster (3 nodes by default, data in ./tandem-data), restarting nodes that
    /// die, until Ctrl-C.
    Dev(server_cmd::DevArgs),
    /// Work with a partition's log directory directly (append, dump, check).
    #[command(subcommand)]
    Log(log_cmd::LogCommand),
    /// Create, list, describe and delete topics.
    Topic(client_cmd::TopicArgs),
    /// Send stdin lines as records (optionally "key<sep>value").
    Produce(client_cmd::ProduceArgs),
    /// Print a topic's records, from an offset, until --max records, a silence, or Ctrl-C.
    Consume(client_cmd::ConsumeArgs),
    /// Key-value tables: put, get, del, cas, scan.
    Kv(kv_cmd::KvArgs),
    /// The cluster at a glance: nodes, active controller, partitions, lag (or --json).
    Status(client_cmd::StatusArgs),
    /// Load generators: produce, consume, kv, failover (docs/benchmarks.md).
    Bench(bench::BenchArgs),
    /// Run the deterministic simulation: `--seeds N | --duration SECS`, `--seed S` to replay
    /// (docs/simulation.md).
    Sim {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The simulator runs thousands of clusters: their info logs would drown its summary.
    let default_level = if matches!(cli.command, Command::Sim { .. }) {
        "error"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TANDEM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        // Colours for a terminal only: `tandem dev` sends its nodes' logs to files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Server(args) => server_cmd::server(*args),
        Command::Dev(args) => server_cmd::dev(args),
        Command::Log(command) => log_cmd::run(command),
        Command::Sim { args } => Ok(ExitCode::from(tandem_sim::run(args).clamp(0, 255) as u8)),
        Command::Topic(args) => client_cmd::topic(args),
        Command::Produce(args) => client_cmd::produce(args),
        Command::Consume(args) => client_cmd::consume(args),
        Command::Status(args) => client_cmd::status(args),
        Command::Kv(args) => kv_cmd::run(args),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
