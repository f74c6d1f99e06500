//! `tandem server` (one node) and `tandem dev` (a local cluster of them).

use std::fs::OpenOptions;
use std::io::{BufRead, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use tandem_server::runtime;

use crate::server_config::Settings;

const SERVER_EXAMPLES: &str = "\
Examples:
  # One node of a 3-node cluster (run the other two with --id 2 and --id 3):
  tandem server --id 1 --listen 127.0.0.1:9092 --data-dir /var/lib/tandem \\
      --voters 1=127.0.0.1:9092,2=127.0.0.1:9093,3=127.0.0.1:9094
  # A single-node cluster:
  tandem server --id 1 --data-dir ./data --voters 1=127.0.0.1:9092
  # Settings from a TOML file (keys named as the flags; flags override it), checked and shown:
  tandem server --config /etc/tandem/tandem.toml --print-config
  # A controller voter whose data directory was lost (docs/operations.md):
  tandem server --config /etc/tandem/tandem.toml --rejoin-as-new-voter

SIGTERM or Ctrl-C: controlled shutdown (leaderships moved away, logs flushed).
Log level: TANDEM_LOG (e.g. TANDEM_LOG=debug).";

/// `tandem server`'s flags. Each setting is optional here: unset, it comes from the
/// `--config` file, else from the defaults (server_config.rs; docs/operations.md lists them).
#[derive(Args)]
#[command(after_help = SERVER_EXAMPLES)]
pub struct ServerArgs {
    /// A TOML file of settings, keys named as these flags (`session-timeout-ms = 600`); flags
    /// override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective settings (defaults, file, flags) as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// This node's id.
    #[arg(long)]
    pub id: Option<i32>,
    /// Address to listen on, for clients and peers alike [default: 127.0.0.1:9092].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// host:port others should use to reach this node (default: the listen address).
    #[arg(long)]
    pub advertised: Option<String>,
    /// Where this node keeps its logs and state (created if missing).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Controller voters as id=host:port, comma separated (1, 3 or 5 of them).
    #[arg(long)]
    pub voters: Option<String>,
    /// Largest request frame accepted [default: 104857600].
    #[arg(long)]
    pub max_frame_bytes: Option<usize>,
    /// Serve the admin HTTP API here: /metrics, /api/cluster, the dashboard at / (default:
    /// none). Registered with the controller, so `tandem status` finds it.
    #[arg(long, value_name = "HOST:PORT")]
    pub admin_listen: Option<SocketAddr>,
    /// How often each table partition's log is compacted (latest record per key) [default:
    /// 30000].
    #[arg(long, env = "TANDEM_COMPACTION_INTERVAL_MS")]
    pub compaction_interval_ms: Option<u64>,
    /// How often nodes heartbeat the active controller (rule 7) [default: 100].
    #[arg(long, help_heading = "Liveness and leases")]
    pub heartbeat_interval_ms: Option<i64>,
    /// A node not heard from for this long is fenced (rule 7) [default: 600].
    #[arg(long, help_heading = "Liveness and leases")]
    pub session_timeout_ms: Option<i64>,
    /// How long a partition leader acts on one heartbeat reply; at most 3/4 of the session
    /// timeout (rule 8) [default: 400].
    #[arg(long, help_heading = "Liveness and leases")]
    pub lease_ms: Option<i64>,
    /// Move leadership back to a preferred replica once it is in the ISR again [default: true].
    #[arg(long, help_heading = "Liveness and leases")]
    pub auto_leader_rebalance: Option<bool>,
    /// How often the active controller confirms its leadership, expires sessions and elects
    /// [default: 50].
    #[arg(long, help_heading = "Liveness and leases")]
    pub controller_tick_interval_ms: Option<u64>,
    /// How long a controller decision waits for its commit [default: 2000].
    #[arg(long, help_heading = "Liveness and leases")]
    pub controller_commit_timeout_ms: Option<u64>,
    /// The controller Raft leader's heartbeat to the other voters [default: 50].
    #[arg(long, help_heading = "Controller Raft")]
    pub raft_heartbeat_interval_ms: Option<u64>,
    /// A voter hearing no Raft leader for a random time between min and max stands for
    /// election [default: 150].
    #[arg(long, help_heading = "Controller Raft")]
    pub raft_election_timeout_min_ms: Option<u64>,
    /// [default: 300]
    #[arg(long, help_heading = "Controller Raft")]
    pub raft_election_timeout_max_ms: Option<u64>,
    /// Entries between controller snapshots [default: 1000].
    #[arg(long, help_heading = "Controller Raft")]
    pub raft_snapshot_after_entries: Option<u64>,
    /// Entries kept behind a snapshot for slightly late voters [default: 100].
    #[arg(long, help_heading = "Controller Raft")]
    pub raft_entries_kept_after_snapshot: Option<u64>,
    /// Segment size of the controller's Raft log [default: 8388608].
    #[arg(long, help_heading = "Controller Raft")]
    pub raft_segment_bytes: Option<u64>,
    /// Largest controller Raft entry [default: 16777216].
    #[arg(long, help_heading = "Controller Raft")]
    pub raft_max_entry_bytes: Option<usize>,
    /// This voter lost its data directory: have it removed from the controller membership and
    /// added back as a new voter (docs/operations.md, "Replacing a controller voter").
    #[arg(long, num_args = 0..=1, default_missing_value = "true", help_heading = "Controller Raft")]
    pub rejoin_as_new_voter: Option<bool>,
    /// A follower not caught up for this long leaves the ISR (rule 5) [default: 2000].
    #[arg(long, help_heading = "Replication")]
    pub replica_lag_time_max_ms: Option<i64>,
    /// How long a follower's fetch may wait at the leader (long poll, rule 2) [default: 200].
    #[arg(long, help_heading = "Replication")]
    pub replica_fetch_wait_max_ms: Option<i64>,
    /// Most bytes one replica fetch returns [default: 1048576].
    #[arg(long, help_heading = "Replication")]
    pub replica_fetch_max_bytes: Option<usize>,
    /// Pause before a follower fetches again after an error [default: 50].
    #[arg(long, help_heading = "Replication")]
    pub replica_fetch_backoff_ms: Option<i64>,
    /// A replica fetch unanswered for this long is sent again [default: 2000].
    #[arg(long, help_heading = "Replication")]
    pub replica_fetch_timeout_ms: Option<i64>,
    /// Pause before a refused or lost ISR proposal is retried [default: 100].
    #[arg(long, help_heading = "Replication")]
    pub isr_change_backoff_ms: Option<i64>,
    /// Long-poll wait of the node's metadata fetches [default: 1000].
    #[arg(long, help_heading = "Node")]
    pub metadata_wait_ms: Option<u32>,
    /// Pause before retrying a controller call that found no active controller [default: 50].
    #[arg(long, help_heading = "Node")]
    pub controller_retry_ms: Option<u64>,
}

impl ServerArgs {
    /// Defaults, then the `--config` file, then the flags.
    pub fn settings(&self) -> Result<Settings, String> {
        let mut s = match &self.config {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        macro_rules! overlay {
            ($($field:ident),* $(,)?) => {
                $( if let Some(value) = self.$field.clone() { s.$field = value; } )*
            };
        }
        macro_rules! overlay_optional {
            ($($field:ident),* $(,)?) => {
                $( if let Some(value) = self.$field.clone() { s.$field = Some(value); } )*
            };
        }
        overlay_optional!(id, advertised, data_dir, voters, admin_listen);
        overlay!(
            listen,
            max_frame_bytes,
            compaction_interval_ms,
            heartbeat_interval_ms,
            session_timeout_ms,
            lease_ms,
            auto_leader_rebalance,
            controller_tick_interval_ms,
            controller_commit_timeout_ms,
            raft_heartbeat_interval_ms,
            raft_election_timeout_min_ms,
            raft_election_timeout_max_ms,
            raft_snapshot_after_entries,
            raft_entries_kept_after_snapshot,
            raft_segment_bytes,
            raft_max_entry_bytes,
            rejoin_as_new_voter,
            replica_lag_time_max_ms,
            replica_fetch_wait_max_ms,
            replica_fetch_max_bytes,
            replica_fetch_backoff_ms,
            replica_fetch_timeout_ms,
            isr_change_backoff_ms,
            metadata_wait_ms,
            controller_retry_ms,
        );
        Ok(s)
    }
}

pub fn server(args: ServerArgs) -> anyhow::Result<ExitCode> {
    let settings = args.settings().map_err(anyhow::Error::msg)?;
    settings
        .validate()
        .map_err(|e| anyhow::anyhow!("bad configuration: {e}"))?;
    if args.print_config {
        print!("{}", settings.to_toml());
        return Ok(ExitCode::SUCCESS);
    }
    let config = settings.server_config().map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            stop.send_replace(true);
        });
        runtime::run(config, stopped).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM or SIGINT: a controlled shutdown.
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

const DEV_EXAMPLES: &str = "\
Examples:
  tandem dev                                  # 3 nodes on 127.0.0.1:9092-9094, data in ./tandem-data
  tandem dev --nodes 1 --base-port 19092      # one node on 127.0.0.1:19092
  tandem dev --data-dir /tmp/t --no-restart   # elsewhere; a node that dies stays down

Node i's dashboard, /metrics and /api are on 127.0.0.1:(base port + 1000 + i - 1), e.g.
http://127.0.0.1:10092/ (--admin-base-port to move them).
While it runs, tandem-data/cluster.json lists each node's id, pid, addresses and data dir:
  kill -9 $(jq '.nodes[0].pid' tandem-data/cluster.json)   # node 1 dies, dev restarts it
Node logs: tandem-data/node-<id>.log. Ctrl-C or SIGTERM stops every node cleanly; running it
again reuses the data.";

#[derive(Args)]
#[command(after_help = DEV_EXAMPLES)]
pub struct DevArgs {
    /// How many nodes (every one a controller voter: 1, 3 or 5).
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// Node i listens on 127.0.0.1:(base_port + i - 1).
    #[arg(long, default_value_t = 9092)]
    pub base_port: u16,
    /// Where the nodes keep their data (node-<id>/ each), their logs (node-<id>.log) and
    /// cluster.json; kept across runs.
    #[arg(long, default_value = "tandem-data")]
    pub data_dir: PathBuf,
    /// Leave a node that dies down (default: restart it after --restart-delay-ms).
    #[arg(long)]
    pub no_restart: bool,
    /// How long a dead node stays down before it is restarted (doubled, up to 30 s, while it
    /// keeps dying within 10 s of its start).
    #[arg(long, default_value_t = 1_000)]
    pub restart_delay_ms: u64,
    /// Node i serves its admin HTTP API and dashboard on 127.0.0.1:(admin_base_port + i - 1)
    /// [default: base_port + 1000].
    #[arg(long)]
    pub admin_base_port: Option<u16>,
}

/// One supervised node.
struct DevNode {
    id: u16,
    address: String,
    /// Its admin HTTP listener (dashboard, /metrics, /api).
    admin_address: String,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    started: Instant,
    restarts: u32,
    /// When it is to be started again (it died, restarts are on).
    restart_at: Option<Instant>,
    delay: Duration,
    /// How it last exited, while it is down.
    last_exit: Option<String>,
}

impl DevNode {
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

struct Dev {
    exe: PathBuf,
    voters: String,
    data_dir: PathBuf,
    cluster_json: PathBuf,
    nodes: Vec<DevNode>,
}

impl Dev {
    fn spawn(&self, node: &DevNode) -> anyhow::Result<Child> {
        std::fs::create_dir_all(&node.data_dir)
            .with_context(|| format!("cannot create {}", node.data_dir.display()))?;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("cannot open {}", node.log.display()))?;
        let _ = writeln!(
            log,
            "---- tandem dev: starting node {} on {} ----",
            node.id, node.address
        );
        let mut command = Command::new(&self.exe);
        command
            .arg("server")
            .args(["--id", &node.id.to_string()])
            .args(["--listen", &node.address])
            .args(["--admin-listen", &node.admin_address])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--voters", &self.voters])
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("node log")?)
            .stderr(log)
            // Its own process group: a terminal's Ctrl-C reaches dev only, which then stops
            // the nodes itself (SIGTERM each, controlled shutdown).
            .process_group(0);
        #[cfg(target_os = "linux")]
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(|| {
                // If dev dies without stopping its nodes (SIGKILL), they get SIGTERM.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command
            .spawn()
            .with_context(|| format!("cannot start node {} ({})", node.id, self.exe.display()))
    }

    /// Rewrites cluster.json (write + rename: readers never see half a file).
    fn write_cluster_json(&self) -> anyhow::Result<()> {
        let nodes: Vec<_> = self
            .nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "id": n.id,
                    "pid": n.pid(),
                    "address": n.address,
                    "admin_address": n.admin_address,
                    "dashboard": format!("http://{}/", n.admin_address),
                    "data_dir": n.data_dir,
                    "log": n.log,
                    "running": n.child.is_some(),
                    "last_exit": n.last_exit,
                    "restarts": n.restarts,
                })
            })
            .collect();
        let bootstrap: Vec<&str> = self.nodes.iter().map(|n| n.address.as_str()).collect();
        let json = serde_json::json!({
            "dev_pid": std::process::id(),
            "data_dir": self.data_dir,
            "bootstrap": bootstrap.join(","),
            "dashboard": self.nodes.first().map(|n| format!("http://{}/", n.admin_address)),
            "nodes": nodes,
        });
        let tmp = self.cluster_json.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.cluster_json)
            .with_context(|| format!("cannot write {}", self.cluster_json.display()))
    }

    /// Notices nodes that exited and restarts those whose delay is over. Returns whether
    /// cluster.json needs rewriting.
    fn supervise(&mut self, restart: bool, base_delay: Duration) -> bool {
        let mut changed = false;
        let now = Instant::now();
        for i in 0..self.nodes.len() {
            let node = &mut self.nodes[i];
            if let Some(child) = &mut node.child {
                let status = match child.try_wait() {
                    Ok(Some(status)) => status,
                    Ok(None) => continue,
                    Err(e) => {
                        eprintln!("tandem dev: node {}: {e}", node.id);
                        continue;
                    }
                };
                node.child = None;
                changed = true;
                let ran = node.started.elapsed();
                let how = describe_exit(status);
                // A crash says why in its last log line; a kill says nothing there.
                let last_line = if status.code().is_some_and(|c| c != 0) {
                    last_line(&node.log)
                } else {
                    None
                };
                eprintln!(
                    "tandem dev: node {} {how} after {:.1} s (log {}){}",
                    node.id,
                    ran.as_secs_f64(),
                    node.log.display(),
                    last_line.map_or(String::new(), |l| format!(": {l}"))
                );
                node.last_exit = Some(how);
                if restart {
                    node.delay = if ran < Duration::from_secs(10) && node.restarts > 0 {
                        (node.delay * 2).min(Duration::from_secs(30))
                    } else {
                        base_delay
                    };
                    node.restart_at = Some(now + node.delay);
                    eprintln!(
                        "tandem dev: restarting node {} in {:.1} s (same id and data)",
                        node.id,
                        node.delay.as_secs_f64()
                    );
                } else {
                    eprintln!("tandem dev: node {} stays down (--no-restart)", node.id);
                }
            } else if node.restart_at.is_some_and(|at| now >= at) {
                node.restart_at = None;
                let node = &self.nodes[i];
                match self.spawn(node) {
                    Ok(child) => {
                        let node = &mut self.nodes[i];
                        eprintln!(
                            "tandem dev: node {} restarted, pid {} on {}",
                            node.id,
                            child.id(),
                            node.address
                        );
                        node.child = Some(child);
                        node.started = Instant::now();
                        node.restarts += 1;
                        node.last_exit = None;
                        changed = true;
                    }
                    Err(e) => {
                        let node = &mut self.nodes[i];
                        node.delay = (node.delay * 2).min(Duration::from_secs(30));
                        node.restart_at = Some(now + node.delay);
                        eprintln!(
                            "tandem dev: {e:#}; trying again in {:.1} s",
                            node.delay.as_secs_f64()
                        );
                    }
                }
            }
        }
        changed
    }

    fn signal_all(&self, signal: i32) {
        for node in &self.nodes {
            if let Some(pid) = node.pid() {
                // SAFETY: kill(2) on a child this process started and has not reaped.
                unsafe { libc::kill(pid as i32, signal) };
            }
        }
    }

    /// Reaps exited nodes; returns how many still run, and whether any exited uncleanly.
    fn reap(&mut self) -> (usize, bool) {
        let mut running = 0;
        let mut unclean = false;
        for node in &mut self.nodes {
            if let Some(child) = &mut node.child {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        if !status.success() {
                            eprintln!("tandem dev: node {} {}", node.id, describe_exit(status));
                            unclean = true;
                        }
                        node.child = None;
                    }
                    Ok(None) => running += 1,
                    Err(_) => {
                        node.child = None;
                        unclean = true;
                    }
                }
            }
        }
        (running, unclean)
    }
}

fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(0), _) => "exited".to_string(),
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(9)) => "was killed (SIGKILL)".to_string(),
        (None, Some(15)) => "was stopped (SIGTERM)".to_string(),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => format!("exited ({status})"),
    }
}

/// The last non-empty line of a node's log, trimmed, for a one-line report.
fn last_line(path: &Path) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    let line = std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.trim().is_empty() && !l.starts_with("---- tandem dev"))
        .last()?;
    let line = line.trim();
    Some(if line.chars().count() > 200 {
        format!("{}...", line.chars().take(200).collect::<String>())
    } else {
        line.to_string()
    })
}

fn pid_alive(pid: i64) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0 && pid <= i32::MAX as i64 && unsafe { libc::kill(pid as i32, 0) } == 0
}

pub fn dev(args: DevArgs) -> anyhow::Result<ExitCode> {
    if ![1, 3, 5].contains(&args.nodes) {
        bail!("--nodes must be 1, 3 or 5 (every node is a controller voter)");
    }
    if args.base_port == 0 || args.base_port as u32 + args.nodes as u32 - 1 > u16::MAX as u32 {
        bail!(
            "--base-port {} leaves no room for {} nodes",
            args.base_port,
            args.nodes
        );
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create the data dir {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)
        .with_context(|| format!("cannot resolve {}", args.data_dir.display()))?;
    let cluster_json = data_dir.join("cluster.json");
    // Two devs on one data dir would corrupt it.
    if let Ok(text) = std::fs::read_to_string(&cluster_json) {
        if let Ok(old) = serde_json::from_str::<serde_json::Value>(&text) {
            if let Some(pid) = old["dev_pid"].as_i64() {
                if pid != std::process::id() as i64 && pid_alive(pid) {
                    bail!(
                        "another tandem dev (pid {pid}) is running on {}; stop it, or use another --data-dir",
                        args.data_dir.display()
                    );
                }
            }
        }
    }
    let address = |i: u16| format!("127.0.0.1:{}", args.base_port as u32 + i as u32 - 1);
    let admin_base = args
        .admin_base_port
        .map_or(args.base_port as u32 + 1000, u32::from);
    if admin_base == 0 || admin_base + args.nodes as u32 - 1 > u16::MAX as u32 {
        bail!(
            "--admin-base-port {admin_base} leaves no room for {} nodes",
            args.nodes
        );
    }
    let admin_address = |i: u16| format!("127.0.0.1:{}", admin_base + i as u32 - 1);
    for i in 1..=args.nodes {
        if let Err(e) = TcpListener::bind(address(i)) {
            bail!(
                "{} is not free ({e}): another tandem or Kafka running? pick other ports with --base-port",
                address(i)
            );
        }
        if let Err(e) = TcpListener::bind(admin_address(i)) {
            bail!(
                "{} (admin) is not free ({e}): pick other ports with --admin-base-port",
                admin_address(i)
            );
        }
    }
    let reused = data_dir.join("node-1").exists();
    let voters: Vec<String> = (1..=args.nodes)
        .map(|i| format!("{i}={}", address(i)))
        .collect();
    let base_delay = Duration::from_millis(args.restart_delay_ms);
    let mut dev = Dev {
        exe: std::env::current_exe().context("finding the tandem binary")?,
        voters: voters.join(","),
        data_dir: data_dir.clone(),
        cluster_json,
        nodes: (1..=args.nodes)
            .map(|i| DevNode {
                id: i,
                address: address(i),
                admin_address: admin_address(i),
                data_dir: data_dir.join(format!("node-{i}")),
                log: data_dir.join(format!("node-{i}.log")),
                child: None,
                started: Instant::now(),
                restarts: 0,
                restart_at: None,
                delay: base_delay,
                last_exit: None,
            })
            .collect(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    // Everything below runs on this (the main) thread: the nodes' parent-death signal is tied
    // to the thread that started them.
    runtime.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing signal handlers")?;
        let mut int = signal(SignalKind::interrupt()).context("installing signal handlers")?;
        for i in 0..dev.nodes.len() {
            match dev.spawn(&dev.nodes[i]) {
                Ok(child) => {
                    dev.nodes[i].child = Some(child);
                    dev.nodes[i].started = Instant::now();
                }
                Err(e) => {
                    dev.signal_all(libc::SIGKILL);
                    while dev.reap().0 > 0 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    return Err(e);
                }
            }
        }
        dev.write_cluster_json()?;
        print_banner(&dev, &args.data_dir, reused, args.no_restart);

        let why = loop {
            tokio::select! {
                _ = term.recv() => break "SIGTERM",
                _ = int.recv() => break "Ctrl-C",
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            if dev.supervise(!args.no_restart, base_delay) {
                if let Err(e) = dev.write_cluster_json() {
                    eprintln!("tandem dev: {e:#}");
                }
            }
            if args.no_restart && dev.nodes.iter().all(|n| n.child.is_none()) {
                eprintln!("tandem dev: every node is down (--no-restart); stopping");
                let _ = std::fs::remove_file(&dev.cluster_json);
                return Ok(ExitCode::FAILURE);
            }
        };

        let running = dev.nodes.iter().filter(|n| n.child.is_some()).count();
        eprintln!(
            "tandem dev: {why}: stopping {running} node(s) (controlled shutdown; {why} again to kill them now)"
        );
        for node in &mut dev.nodes {
            node.restart_at = None;
        }
        dev.signal_all(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut unclean = false;
        loop {
            let (running, bad) = dev.reap();
            unclean |= bad;
            if running == 0 {
                break;
            }
            let killed = tokio::select! {
                _ = term.recv() => true,
                _ = int.recv() => true,
                _ = tokio::time::sleep(Duration::from_millis(50)) => Instant::now() >= deadline,
            };
            if killed {
                eprintln!("tandem dev: killing the {running} node(s) still running (SIGKILL)");
                dev.signal_all(libc::SIGKILL);
                unclean = true;
                for node in &mut dev.nodes {
                    if let Some(mut child) = node.child.take() {
                        let _ = child.wait();
                    }
                }
            }
        }
        let _ = std::fs::remove_file(&dev.cluster_json);
        if unclean {
            eprintln!("tandem dev: stopped (not every node shut down cleanly)");
            Ok(ExitCode::FAILURE)
        } else {
            eprintln!("tandem dev: every node stopped cleanly; data kept in {}", args.data_dir.display());
            Ok(ExitCode::SUCCESS)
        }
    })
}

fn print_banner(dev: &Dev, shown_dir: &Path, reused: bool, no_restart: bool) {
    let bootstrap: Vec<&str> = dev.nodes.iter().map(|n| n.address.as_str()).collect();
    let bootstrap = bootstrap.join(",");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "Tandem dev cluster: {} node(s), data in {} ({})",
        dev.nodes.len(),
        shown_dir.display(),
        if reused { "reused" } else { "new" }
    );
    for n in &dev.nodes {
        let _ = writeln!(
            out,
            "  node {}  {}  admin {}  pid {}  log {}",
            n.id,
            n.address,
            n.admin_address,
            n.pid().map_or("-".into(), |p| p.to_string()),
            shown_dir.join(format!("node-{}.log", n.id)).display()
        );
    }
    let _ = writeln!(
        out,
        "  cluster.json: {}",
        shown_dir.join("cluster.json").display()
    );
    let _ = writeln!(out, "  bootstrap servers: {bootstrap}");
    if let Some(first) = dev.nodes.first() {
        let _ = writeln!(
            out,
            "  dashboard: http://{}/   (every node serves one; metrics at /metrics, JSON at /api/cluster)",
            first.admin_address
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Next steps, in another terminal:");
    let _ = writeln!(out, "  export TANDEM_BOOTSTRAP={bootstrap}");
    let rf = dev.nodes.len().min(3);
    let _ = writeln!(
        out,
        "  tandem topic create events --partitions 3 --replication-factor {rf} --min-insync {}",
        rf.div_ceil(2).max(1)
    );
    let _ = writeln!(out, "  seq 1 10 | tandem produce events");
    let _ = writeln!(out, "  tandem consume events --from-beginning");
    let _ = writeln!(
        out,
        "  tandem topic create users --config tandem.kind=table && tandem kv put users alice admin"
    );
    let _ = writeln!(
        out,
        "  tandem kv get users alice --consistency linearizable"
    );
    let _ = writeln!(out, "  tandem status");
    let _ = writeln!(
        out,
        "  kcat -b {} -L",
        bootstrap.split(',').next().unwrap_or_default()
    );
    if !no_restart {
        let _ = writeln!(
            out,
            "  kill -9 <a leader's pid from cluster.json>   # it comes back, as a follower"
        );
    }
    let _ = writeln!(out, "Ctrl-C (or SIGTERM) stops every node cleanly.");
    let _ = out.flush();
}
