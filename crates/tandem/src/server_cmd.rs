//! `tandem server` (one node) and `tandem dev` (a local cluster of them).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use tandem_server::runtime::{self, ServerConfig};

#[derive(Args)]
pub struct ServerArgs {
    /// This node's id.
    #[arg(long)]
    pub id: i32,
    /// Address to listen on, for clients and peers alike.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub listen: SocketAddr,
    /// host:port others should use to reach this node (default: the listen address).
    #[arg(long)]
    pub advertised: Option<String>,
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Controller voters as id=host:port, comma separated (1, 3 or 5 of them).
    #[arg(long, value_parser = parse_voters)]
    pub voters: BTreeMap<u64, String>,
    /// Largest request frame accepted.
    #[arg(long, default_value_t = tandem_protocol::DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: usize,
}

fn parse_voters(text: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut voters = BTreeMap::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (id, address) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not id=host:port"))?;
        let id: u64 = id
            .parse()
            .map_err(|_| format!("bad voter id in {part:?}"))?;
        if !address.contains(':') {
            return Err(format!("{address:?} is not host:port"));
        }
        voters.insert(id, address.to_string());
    }
    if ![1, 3, 5].contains(&voters.len()) {
        return Err(format!("{} voters; use 1, 3 or 5", voters.len()));
    }
    Ok(voters)
}

pub fn server(args: ServerArgs) -> anyhow::Result<ExitCode> {
    let config = ServerConfig {
        node_id: args.id,
        listen: args.listen,
        advertised: args.advertised,
        data_dir: args.data_dir,
        voters: args.voters,
        max_frame_bytes: args.max_frame_bytes,
    };
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

#[derive(Args)]
pub struct DevArgs {
    /// How many nodes (every one a controller voter: 1, 3 or 5).
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// Node i listens on base_port + i - 1.
    #[arg(long, default_value_t = 9092)]
    pub base_port: u16,
    /// Where the nodes keep their data (one subdirectory each); kept across runs.
    #[arg(long, default_value = "/tmp/tandem-dev")]
    pub data_dir: PathBuf,
}

pub fn dev(args: DevArgs) -> anyhow::Result<ExitCode> {
    if ![1, 3, 5].contains(&args.nodes) {
        bail!("--nodes must be 1, 3 or 5 (every node is a controller voter)");
    }
    let exe = std::env::current_exe().context("finding the tandem binary")?;
    let address = |i: u16| format!("127.0.0.1:{}", args.base_port as u32 + i as u32 - 1);
    let voters: Vec<String> = (1..=args.nodes)
        .map(|i| format!("{i}={}", address(i)))
        .collect();
    let voters = voters.join(",");
    let mut children = Vec::new();
    for i in 1..=args.nodes {
        let data_dir = args.data_dir.join(format!("node-{i}"));
        let child = Command::new(&exe)
            .arg("server")
            .args(["--id", &i.to_string()])
            .args(["--listen", &address(i)])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--voters", &voters])
            .spawn()
            .with_context(|| format!("starting node {i}"))?;
        children.push((i, child));
    }
    let bootstrap: Vec<String> = (1..=args.nodes).map(address).collect();
    println!(
        "Tandem dev cluster: {} nodes, data in {}",
        args.nodes,
        args.data_dir.display()
    );
    println!("  bootstrap servers: {}", bootstrap.join(","));
    println!("  try: kcat -b {} -L", bootstrap[0]);
    println!("Ctrl-C (or SIGTERM) stops every node cleanly.");
    let pids: Vec<(u16, i32)> = children.iter().map(|(i, c)| (*i, c.id() as i32)).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let failed = runtime.block_on(async move {
        let waiting = tokio::task::spawn_blocking(move || {
            let mut failed = false;
            for (i, mut child) in children {
                match child.wait() {
                    Ok(status) if status.success() => {}
                    Ok(status) => {
                        eprintln!("node {i} exited with {status}");
                        failed = true;
                    }
                    Err(e) => {
                        eprintln!("node {i}: {e}");
                        failed = true;
                    }
                }
            }
            failed
        });
        tokio::pin!(waiting);
        tokio::select! {
            done = &mut waiting => return done.unwrap_or(true),
            _ = wait_for_signal() => {}
        }
        // Forward the stop to every node (a terminal's Ctrl-C reached them already; a
        // SIGTERM to this process did not), then wait for their controlled shutdowns.
        for (i, pid) in &pids {
            // SAFETY: kill(2) on a pid of a child this process started and has not reaped.
            if unsafe { libc::kill(*pid, libc::SIGTERM) } != 0 {
                eprintln!("node {i}: could not signal it");
            }
        }
        waiting.await.unwrap_or(true)
    });
    std::thread::sleep(Duration::from_millis(10));
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
