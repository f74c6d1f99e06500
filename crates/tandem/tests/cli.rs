//! The `tandem` CLI end to end, with the real binary:
//!
//! - `tandem dev`: starts 3 nodes and writes cluster.json; a node SIGKILLed (by the pid in
//!   cluster.json) is restarted with the same id (new pid in cluster.json, `status` shows 3
//!   live nodes again); SIGTERM to dev stops every node and leaves no child behind;
//! - against three `tandem server` processes: `topic create` flags and `topic describe`,
//!   `consume --from-beginning --max` / `--offset` / `--from-follower`, `status` as a table and
//!   as `--json`, and its exit code once a partition is under min ISR;
//! - `--help` everywhere has examples; usage and connection errors are one line, exit code 2.
//!
//! Every wait is bounded; the bounds are generous (a loaded 2-core machine).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, run_with_timeout, Cluster};

/// Any one CLI command.
const COMMAND_BOUND: Duration = Duration::from_secs(60);
/// Waiting for the cluster to reach a state.
const STATE_BOUND: Duration = Duration::from_secs(90);

fn tandem(args: &[&str], bootstrap: &str) -> Output {
    tandem_with_input(args, bootstrap, b"")
}

fn tandem_with_input(args: &[&str], bootstrap: &str, stdin: &[u8]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tandem"));
    command
        .args(args)
        .env("TANDEM_BOOTSTRAP", bootstrap)
        .env("TANDEM_LOG", "warn");
    run_with_timeout(command, stdin, COMMAND_BOUND).unwrap_or_else(|e| panic!("{e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn show(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr)
    )
}

/// Retries `attempt` every 300 ms until it gives `Some`, for at most `bound`.
fn eventually<T>(what: &str, bound: Duration, mut attempt: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + bound;
    loop {
        match attempt() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {bound:?} waiting for {what}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

fn pid_alive(pid: i32) -> bool {
    // A zombie still answers kill(pid, 0): look at its state too.
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid, 0) } == 0;
    exists
        && state.is_some_and(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|st| st != "Z" && st != "X")
        })
}

/// Pids of the live processes whose parent is `parent`.
fn children_of(parent: u32) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent) && fields[0] != "Z" {
            found.push(pid);
        }
    }
    found
}

/// Three consecutive free loopback ports (dev's nodes listen on base, base+1, base+2).
fn free_port_block() -> u16 {
    // free_port hands out increasing ports: three in a row are a block no one else gets.
    for _ in 0..100 {
        let ports = [free_port(), free_port(), free_port()];
        if ports[1] == ports[0] + 1 && ports[2] == ports[0] + 2 {
            return ports[0];
        }
    }
    panic!("no block of 3 free ports");
}

/// A `tandem dev` process; dropped: SIGTERM, then SIGKILL if it lingers (its nodes then get
/// SIGTERM from the kernel: parent-death signal).
struct Dev {
    child: Option<Child>,
    dir: PathBuf,
}

impl Dev {
    fn start(dir: &Path, base_port: u16) -> Dev {
        let stdout = std::fs::File::create(dir.join("dev.out")).unwrap();
        let stderr = std::fs::File::create(dir.join("dev.err")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .arg("dev")
            .arg("--data-dir")
            .arg(dir.join("tandem-data"))
            .args(["--base-port", &base_port.to_string()])
            .args(["--admin-base-port", &free_port_block().to_string()])
            .env("TANDEM_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start tandem dev");
        Dev {
            child: Some(child),
            dir: dir.to_path_buf(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn cluster_json(&self) -> Result<serde_json::Value, String> {
        let path = self.dir.join("tandem-data/cluster.json");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{path:?}: {e}"))?;
        serde_json::from_str(&text).map_err(|e| format!("{path:?}: {e}: {text}"))
    }

    /// What dev printed, and the tail of its nodes' logs, for failure messages.
    fn report(&self) -> String {
        let mut out = String::new();
        for name in ["dev.out", "dev.err"] {
            let text = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
            out.push_str(&format!("--- {name} ---\n{text}\n"));
        }
        for id in 1..=3 {
            let path = self.dir.join(format!("tandem-data/node-{id}.log"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- node-{id}.log (tail) ---\n"));
            for line in &lines[lines.len().saturating_sub(15)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// (id, pid, address) of every node in cluster.json that is running.
fn running_nodes(json: &serde_json::Value) -> Vec<(i64, i32, String)> {
    json["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["running"].as_bool() == Some(true))
        .filter_map(|n| {
            Some((
                n["id"].as_i64()?,
                n["pid"].as_i64()? as i32,
                n["address"].as_str()?.to_string(),
            ))
        })
        .collect()
}

#[test]
fn dev_starts_three_nodes_restarts_a_killed_one_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_port_block();
    let mut dev = Dev::start(dir.path(), base);
    let started = Instant::now();

    // cluster.json: three running nodes with their pids, addresses and data dirs.
    let json = eventually("cluster.json with 3 running nodes", STATE_BOUND, || {
        let json = dev.cluster_json()?;
        (running_nodes(&json).len() == 3)
            .then_some(json)
            .ok_or_else(|| "not yet".to_string())
    });
    let nodes = running_nodes(&json);
    for (i, (id, pid, address)) in nodes.iter().enumerate() {
        assert_eq!(*id, i as i64 + 1);
        assert_eq!(*address, format!("127.0.0.1:{}", base + i as u16));
        assert!(pid_alive(*pid), "node {id} (pid {pid}) runs");
        let data_dir = json["nodes"][i]["data_dir"].as_str().unwrap();
        assert!(
            data_dir.ends_with(&format!("tandem-data/node-{id}")),
            "{data_dir}"
        );
    }
    assert_eq!(json["dev_pid"].as_u64(), Some(dev.pid() as u64));
    let bootstrap = json["bootstrap"].as_str().unwrap().to_string();
    let banner = std::fs::read_to_string(dir.path().join("dev.out")).unwrap();
    assert!(
        banner.contains(&format!("127.0.0.1:{base}")) && banner.contains("Next steps"),
        "{banner}"
    );
    // dev prints the dashboard's URL, and cluster.json has every node's admin address.
    let dashboard = json["dashboard"].as_str().unwrap_or_default().to_string();
    assert!(
        dashboard.starts_with("http://127.0.0.1:")
            && banner.contains(&format!("dashboard: {dashboard}")),
        "{banner}\n{json}"
    );
    assert!(json["nodes"][2]["admin_address"].is_string(), "{json}");

    // The cluster forms: three live nodes.
    let live_incarnation = |output: &Output, id: i64| -> Option<i64> {
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
        let node = json["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["id"].as_i64() == Some(id))?;
        (node["status"].as_str() == Some("Live")).then(|| node["incarnation"].as_i64())?
    };
    let all_live = |output: &Output| text(&output.stderr).contains("3/3 nodes live");
    let before = eventually("3 live nodes", STATE_BOUND, || {
        let output = tandem(&["status", "--json"], &bootstrap);
        match live_incarnation(&output, 2) {
            Some(incarnation) if all_live(&output) => Ok(incarnation),
            _ => Err(show(&output)),
        }
    });
    eprintln!("{:?}: 3 nodes live", started.elapsed());

    // SIGKILL node 2 by its pid in cluster.json: dev restarts it, same id, new pid.
    let (_, old_pid, _) = nodes[1].clone();
    // SAFETY: kill(2) on a pid dev reported; it is dev's child, alive (checked above).
    assert_eq!(unsafe { libc::kill(old_pid, libc::SIGKILL) }, 0);
    let killed_at = Instant::now();
    let new_pid = eventually(
        "dev to restart node 2 (new pid in cluster.json)",
        STATE_BOUND,
        || {
            let json = dev.cluster_json()?;
            let nodes = running_nodes(&json);
            match nodes.iter().find(|n| n.0 == 2) {
                Some((_, pid, _)) if *pid != old_pid && nodes.len() == 3 => Ok(*pid),
                other => Err(format!("node 2: {other:?}")),
            }
        },
    );
    assert!(pid_alive(new_pid), "the restarted node 2 runs");
    assert!(!pid_alive(old_pid), "the killed node 2 is gone");
    assert_eq!(
        dev.cluster_json().unwrap()["nodes"][1]["restarts"].as_u64(),
        Some(1)
    );
    eventually(
        "node 2 live again, as a new incarnation",
        STATE_BOUND,
        || {
            let output = tandem(&["status", "--json"], &bootstrap);
            match live_incarnation(&output, 2) {
                Some(incarnation) if incarnation > before && all_live(&output) => Ok(()),
                _ => Err(show(&output)),
            }
        },
    );
    eprintln!(
        "node 2 back (pid {old_pid} -> {new_pid}) {:?} after its SIGKILL",
        killed_at.elapsed()
    );
    let err = std::fs::read_to_string(dir.path().join("dev.err")).unwrap();
    assert!(err.contains("node 2 was killed (SIGKILL)"), "{err}");

    // A second dev on the same data dir is refused, in one line.
    let second = tandem(
        &[
            "dev",
            "--data-dir",
            dir.path().join("tandem-data").to_str().unwrap(),
            "--base-port",
            &free_port().to_string(),
        ],
        &bootstrap,
    );
    assert_eq!(second.status.code(), Some(2), "{}", show(&second));
    assert!(
        text(&second.stderr).contains("another tandem dev"),
        "{}",
        show(&second)
    );

    // SIGTERM to dev: every node stops (controlled shutdown), dev exits 0, nothing is left.
    let dev_pid = dev.pid();
    let node_pids: Vec<i32> = running_nodes(&dev.cluster_json().unwrap())
        .iter()
        .map(|n| n.1)
        .collect();
    // SAFETY: kill(2) on our own unreaped child.
    assert_eq!(unsafe { libc::kill(dev_pid as i32, libc::SIGTERM) }, 0);
    let mut child = dev.child.take().unwrap();
    let deadline = Instant::now() + STATE_BOUND;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("dev did not stop after SIGTERM\n{}", dev.report());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "dev: {status}\n{}", dev.report());
    for pid in &node_pids {
        assert!(
            !pid_alive(*pid),
            "node pid {pid} still runs\n{}",
            dev.report()
        );
    }
    assert!(children_of(dev_pid).is_empty(), "dev left children behind");
    assert!(
        !dir.path().join("tandem-data/cluster.json").exists(),
        "cluster.json is removed once the cluster is stopped"
    );
    let err = std::fs::read_to_string(dir.path().join("dev.err")).unwrap();
    assert!(err.contains("every node stopped cleanly"), "{err}");
    // The data stays for the next run.
    assert!(dir.path().join("tandem-data/node-1").is_dir());
}

#[test]
fn cli_topic_describe_consume_and_status_against_three_nodes() {
    let mut cluster = Cluster::start();
    let bootstrap = cluster.bootstrap();

    // topic create with every flag (retried while the cluster starts).
    eventually("topic create", STATE_BOUND, || {
        let output = tandem(
            &[
                "topic",
                "create",
                "lines",
                "--partitions",
                "2",
                "--replication-factor",
                "3",
                "--min-insync",
                "2",
                "--config",
                "retention.ms=3600000",
                "--config",
                "tandem.flush=always",
            ],
            &bootstrap,
        );
        output
            .status
            .success()
            .then_some(())
            .ok_or_else(|| show(&output))
    });
    let strict = tandem(
        &[
            "topic",
            "create",
            "strict",
            "--rf",
            "3",
            "--min-insync",
            "3",
        ],
        &bootstrap,
    );
    assert!(strict.status.success(), "{}", show(&strict));
    cluster.wait_until_ready("lines", 2);
    cluster.wait_until_ready("strict", 1);

    // describe: settings, then one row per partition.
    let described = eventually("a full describe", STATE_BOUND, || {
        let output = tandem(&["topic", "describe", "lines"], &bootstrap);
        let out = text(&output.stdout);
        let full_isr = out
            .lines()
            .filter(|l| l.split_whitespace().nth(5) == Some("1,2,3"))
            .count();
        (output.status.success() && full_isr == 2)
            .then_some(out)
            .ok_or_else(|| show(&output))
    });
    assert!(
        described.contains("Topic lines: 2 partitions, replication factor 3"),
        "{described}"
    );
    for setting in [
        "min.insync.replicas=2",
        "retention.ms=3600000",
        "tandem.flush=always",
    ] {
        assert!(described.contains(setting), "{setting}: {described}");
    }
    let rows: Vec<&str> = described
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("PARTITION"))
        .skip(1)
        .collect();
    assert_eq!(rows.len(), 2, "{described}");
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<&str> = row.split_whitespace().collect();
        // PARTITION LEADER LEADER-EPOCH PART-EPOCH REPLICAS ISR ELR RECOVERING HW
        assert_eq!(cells.len(), 9, "{row}");
        assert_eq!(cells[0], i.to_string());
        assert!(cells[1].parse::<i32>().is_ok(), "a leader: {row}");
        assert_eq!(
            (cells[5], cells[6], cells[7]),
            ("1,2,3", "-", "no"),
            "{row}"
        );
    }
    let unknown = tandem(&["topic", "describe", "nope"], &bootstrap);
    assert_eq!(unknown.status.code(), Some(2));
    let err = text(&unknown.stderr);
    assert!(
        err.contains("unknown topic") && err.trim().lines().count() == 1,
        "{err}"
    );

    // 30 records on partition 0.
    let input: String = (0..30).map(|i| format!("line {i}\n")).collect();
    let produced = tandem_with_input(
        &["produce", "lines", "--partition", "0", "--print-offsets"],
        &bootstrap,
        input.as_bytes(),
    );
    assert!(produced.status.success(), "{}", show(&produced));
    let want: Vec<String> = (0..30).map(|i| format!("line {i}")).collect();

    let first = tandem(
        &[
            "consume",
            "lines",
            "--partition",
            "0",
            "--from-beginning",
            "--max",
            "10",
        ],
        &bootstrap,
    );
    assert!(first.status.success(), "{}", show(&first));
    assert_eq!(text(&first.stdout).lines().collect::<Vec<_>>(), want[..10]);

    let tail = tandem(
        &[
            "consume",
            "lines",
            "--partition",
            "0",
            "--offset",
            "25",
            "--max",
            "5",
            "--print-offsets",
        ],
        &bootstrap,
    );
    assert!(tail.status.success(), "{}", show(&tail));
    let got: Vec<String> = text(&tail.stdout).lines().map(String::from).collect();
    let expected: Vec<String> = (25..30).map(|i| format!("0\t{i}\tline {i}")).collect();
    assert_eq!(got, expected);

    // The old spelling still works; a follower serves the same committed records.
    let follower = tandem(
        &[
            "consume",
            "lines",
            "--partition",
            "0",
            "--from",
            "earliest",
            "--count",
            "30",
            "--from-follower",
        ],
        &bootstrap,
    );
    assert!(follower.status.success(), "{}", show(&follower));
    assert_eq!(text(&follower.stdout).lines().collect::<Vec<_>>(), want);

    // More than there is: stops after --idle-ms, exit 1, says why.
    let short = tandem(
        &[
            "consume",
            "lines",
            "--from-beginning",
            "--max",
            "40",
            "--idle-ms",
            "1000",
        ],
        &bootstrap,
    );
    assert_eq!(short.status.code(), Some(1), "{}", show(&short));
    assert_eq!(text(&short.stdout).lines().count(), 30);
    assert!(
        text(&short.stderr).contains("read 30 of 40"),
        "{}",
        show(&short)
    );

    // status: the table, then the summary; exit 0.
    let table = eventually(
        "status with HW 30 and no lag on lines-0",
        STATE_BOUND,
        || {
            let output = tandem(&["status"], &bootstrap);
            let out = text(&output.stdout);
            let row = out
                .lines()
                .find(|l| l.trim_start().starts_with("lines-0 "))
                .unwrap_or_default()
                .to_string();
            let cells: Vec<&str> = row.split_whitespace().collect();
            // PARTITION LEADER ISR LEADER-EPOCH PART-EPOCH HW LAG...
            let caught_up = cells.len() >= 9
                && cells[5] == "30"
                && cells[6..9].iter().all(|c| c.ends_with(":0"));
            (output.status.success() && caught_up)
                .then_some(out)
                .ok_or_else(|| show(&output))
        },
    );
    assert!(table.starts_with("Nodes\n"), "{table}");
    let node_rows: Vec<&str> = table
        .lines()
        .skip(2)
        .take_while(|l| *l != "Partitions")
        .collect();
    assert_eq!(node_rows.len(), 3, "{table}");
    for (i, row) in node_rows.iter().enumerate() {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[0], (i + 1).to_string(), "{row}");
        assert_eq!(cells[1], cluster.address_of(i as i32 + 1), "{row}");
        assert_eq!(cells[2], "Live", "{row}");
    }
    assert!(
        table
            .lines()
            .any(|l| l.trim_start().starts_with("lines-1 "))
            && table
                .lines()
                .any(|l| l.trim_start().starts_with("strict-0 ")),
        "{table}"
    );
    let summary = table.lines().last().unwrap();
    assert!(
        summary.starts_with(
            "3/3 nodes live, 3 partitions: 0 offline, 0 under-replicated, 0 under min ISR"
        ),
        "{summary}"
    );

    // --json: stdout is one JSON document (summary on stderr), with each replica's offsets.
    let json_output = tandem(&["status", "--json"], &bootstrap);
    assert!(json_output.status.success(), "{}", show(&json_output));
    let json: serde_json::Value =
        serde_json::from_slice(&json_output.stdout).expect("status --json prints JSON");
    assert_eq!(json["nodes"].as_array().unwrap().len(), 3);
    let partitions = json["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 3);
    let lines0 = partitions
        .iter()
        .find(|p| p["topic"] == "lines" && p["partition"] == 0)
        .unwrap();
    assert_eq!(lines0["high_watermark"], 30);
    let offsets = lines0["replica_offsets"].as_array().unwrap();
    assert_eq!(offsets.len(), 3);
    for replica in offsets {
        assert!(replica["log_end_offset"].as_i64().is_some(), "{replica}");
    }
    assert!(json["topics"].as_array().unwrap().len() == 2);
    assert!(text(&json_output.stderr).contains("3/3 nodes live"));

    // One node down: `strict` (min.insync 3) is under min ISR, so status exits 1.
    cluster.kill(3);
    let bootstrap = format!("{},{}", cluster.address_of(1), cluster.address_of(2));
    let degraded = eventually("status exit code 1 with a node down", STATE_BOUND, || {
        let output = tandem(&["status"], &bootstrap);
        (output.status.code() == Some(1))
            .then_some(output)
            .ok_or_else(|| "not yet".to_string())
    });
    let out = text(&degraded.stdout);
    let summary = out.lines().last().unwrap();
    assert!(
        summary.starts_with("2/3 nodes live") && summary.contains("1 under min ISR"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("strict-0 ") && l.contains("under-min-isr")),
        "{out}"
    );
}

#[test]
fn help_has_examples_and_errors_are_one_line() {
    for args in [
        vec![],
        vec!["dev"],
        vec!["server"],
        vec!["topic"],
        vec!["topic", "create"],
        vec!["topic", "describe"],
        vec!["topic", "list"],
        vec!["topic", "delete"],
        vec!["produce"],
        vec!["consume"],
        vec!["status"],
    ] {
        let mut full = args.clone();
        full.push("--help");
        let output = tandem(&full, "127.0.0.1:1");
        assert!(output.status.success(), "{full:?}: {}", show(&output));
        assert!(
            text(&output.stdout).contains("Example"),
            "{full:?} has examples: {}",
            show(&output)
        );
    }
    let dev_help = text(&tandem(&["dev", "--help"], "127.0.0.1:1").stdout);
    for flag in [
        "--data-dir",
        "--nodes",
        "--base-port",
        "--no-restart",
        "tandem-data",
    ] {
        assert!(dev_help.contains(flag), "{flag}: {dev_help}");
    }
    let consume_help = text(&tandem(&["consume", "--help"], "127.0.0.1:1").stdout);
    for flag in [
        "--from-beginning",
        "--offset",
        "--max",
        "--follow",
        "--from-follower",
    ] {
        assert!(consume_help.contains(flag), "{flag}: {consume_help}");
    }

    // Nothing listens on port 1: one line saying what to do, exit 2.
    for args in [
        vec!["status"],
        vec!["topic", "describe", "x"],
        vec!["consume", "x", "--from-beginning"],
    ] {
        let output = tandem(&args, "127.0.0.1:1");
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", show(&output));
        let err = text(&output.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("error: cannot reach the cluster at 127.0.0.1:1")
                && err.contains("TANDEM_BOOTSTRAP"),
            "{err}"
        );
    }
    // Conflicting start offsets: a usage error.
    let output = tandem(
        &["consume", "x", "--from-beginning", "--offset", "3"],
        "127.0.0.1:1",
    );
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    // --nodes 2 cannot form a controller quorum.
    let output = tandem(&["dev", "--nodes", "2", "--data-dir", "/nonexistent/x"], "");
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    assert_eq!(text(&output.stderr).trim().lines().count(), 1);
}

/// `tandem server` settings: a TOML file with the flags' names, flags over the file,
/// `--print-config` shows the effective values, and a broken relation (rule 8's lease vs
/// session, lag time vs long poll) or an unknown key is refused in one line, exit code 2,
/// before anything starts.
#[test]
fn server_config_file_flags_print_config_and_refused_relations() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tandem.toml");
    std::fs::write(
        &file,
        "id = 7\nvoters = \"7=127.0.0.1:19092\"\ndata-dir = \"/var/lib/tandem\"\n\
         session-timeout-ms = 2000\nlease-ms = 1400\nreplica-lag-time-max-ms = 9000\n",
    )
    .unwrap();
    let file_arg = file.to_str().unwrap();
    let output = tandem(
        &[
            "server",
            "--config",
            file_arg,
            "--heartbeat-interval-ms",
            "250",
            "--print-config",
        ],
        "",
    );
    assert!(output.status.success(), "{}", show(&output));
    let printed = text(&output.stdout);
    for line in [
        "id = 7",
        "session-timeout-ms = 2000",
        "lease-ms = 1400",
        "replica-lag-time-max-ms = 9000",
        "heartbeat-interval-ms = 250",
        // Untouched settings keep their defaults.
        "replica-fetch-wait-max-ms = 200",
        "raft-election-timeout-min-ms = 150",
    ] {
        assert!(
            printed.lines().any(|l| l == line),
            "{line:?} missing from:\n{printed}"
        );
    }
    // A flag overrides the file.
    let output = tandem(
        &[
            "server",
            "--config",
            file_arg,
            "--lease-ms",
            "1000",
            "--print-config",
        ],
        "",
    );
    assert!(
        text(&output.stdout).lines().any(|l| l == "lease-ms = 1000"),
        "{}",
        show(&output)
    );

    // Broken relations, from a flag or from the file: one line, exit 2, nothing started.
    let bad_file = dir.path().join("bad.toml");
    std::fs::write(&bad_file, "replica-fetch-wait-max-ms = 5000\n").unwrap();
    for (args, expected) in [
        (
            vec!["server", "--config", file_arg, "--lease-ms", "1800"],
            "lease-ms 1800 must be at most 3/4 of session-timeout-ms 2000",
        ),
        (
            vec![
                "server",
                "--id",
                "1",
                "--data-dir",
                "/nonexistent/x",
                "--voters",
                "1=127.0.0.1:1",
                "--heartbeat-interval-ms",
                "700",
            ],
            "heartbeat-interval-ms 700 must be below session-timeout-ms 600",
        ),
        (
            vec!["server", "--config", bad_file.to_str().unwrap()],
            "replica-lag-time-max-ms 2000 must exceed replica-fetch-wait-max-ms 5000",
        ),
    ] {
        let output = tandem(&args, "");
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", show(&output));
        let err = text(&output.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: bad configuration: "), "{err}");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!std::path::Path::new("/nonexistent/x").exists());
    }
    // A typo in the file is not silently ignored.
    std::fs::write(&bad_file, "session-timeout = 2000\n").unwrap();
    let output = tandem(&["server", "--config", bad_file.to_str().unwrap()], "");
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    let err = text(&output.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("session-timeout"), "{err}");
    // Without an id anywhere: said so.
    let output = tandem(
        &[
            "server",
            "--data-dir",
            "/nonexistent/x",
            "--voters",
            "1=127.0.0.1:1",
        ],
        "",
    );
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    assert!(
        text(&output.stderr).contains("--id is required"),
        "{}",
        show(&output)
    );
}
