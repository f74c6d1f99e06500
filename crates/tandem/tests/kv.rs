//! Key-value tables on a real 3-node cluster (`tandem server` processes on loopback):
//!
//! - the CLI: put / get / cas / del / scan, their output and exit codes, and clear errors
//!   for a log topic, a keyless produce to a table, a bad token;
//! - session reads served by any replica always see the session's own writes;
//! - after SIGKILLs, restarts and a clean stop, every replica's table equals the model of the
//!   acknowledged writes, and a restart loads the snapshot and replays only the tail.
//!
//! Every loop is bounded in count and time.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Cluster;
use tandem_client::table::{CasOutcome, ReadMode, ScanRange, Table, TableConfig};
use tandem_client::{Client, ClientConfig, NewTopic};

fn tandem() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn connect(cluster: &Cluster) -> Client {
    let addresses: Vec<String> = cluster.servers.iter().map(|s| s.address.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Client::connect(ClientConfig::new(addresses.clone())).await {
            Ok(c) => {
                let _ = c.refresh_metadata().await;
                if c.metadata().brokers.len() == cluster.servers.len() {
                    return c;
                }
            }
            Err(e) => eprintln!("waiting for the cluster: {e}"),
        }
        assert!(Instant::now() < deadline, "the cluster never came up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn create_table(client: &Client, cluster: &Cluster, name: &str, partitions: u32) {
    client
        .create_topic(
            NewTopic::new(name, partitions)
                .replication_factor(3)
                .config("tandem.kind", "table")
                .config("min.insync.replicas", "2"),
        )
        .await
        .unwrap();
    cluster.wait_until_ready(name, partitions as usize);
    client.refresh_metadata().await.unwrap();
}

fn kv(cluster: &Cluster, args: &[&str]) -> (i32, String, String) {
    let mut command = tandem();
    command
        .arg("kv")
        .args(args)
        .arg("--bootstrap")
        .arg(cluster.bootstrap());
    let out = cluster.run(command, b"", Duration::from_secs(30));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// "version 12 token 12:1" → (12, "12:1")
fn parse_written(stdout: &str) -> (i64, String) {
    let words: Vec<&str> = stdout.split_whitespace().collect();
    assert_eq!(words.len(), 4, "unexpected output {stdout:?}");
    assert_eq!((words[0], words[2]), ("version", "token"), "{stdout:?}");
    (words[1].parse().unwrap(), words[3].to_string())
}

#[test]
fn cli_round_trip() {
    let cluster = Cluster::start();
    let rt = runtime();
    let client = rt.block_on(connect(&cluster));
    rt.block_on(create_table(&client, &cluster, "users", 3));
    cluster.create_topic("events", 1, "1");

    let (code, out, err) = kv(&cluster, &["put", "users", "alice", "admin"]);
    assert_eq!(code, 0, "{err}");
    let (v1, token) = parse_written(&out);

    for consistency in ["linearizable", "leader"] {
        let (code, out, err) = kv(
            &cluster,
            &["get", "users", "alice", "--consistency", consistency],
        );
        assert_eq!((code, out.as_str()), (0, "admin\n"), "{consistency}: {err}");
    }
    // Any replica that has applied the write's token.
    let (code, out, err) = kv(
        &cluster,
        &[
            "get",
            "users",
            "alice",
            "--at-least",
            &token,
            "--show-version",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("{token}\tadmin\n"));

    // Compare-and-set: a stale version fails with exit 1 and names the current one.
    let stale = (v1 + 1000).to_string();
    let (code, _, err) = kv(
        &cluster,
        &["cas", "users", "alice", "--expect", &stale, "--value", "x"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("current version is {v1}")), "{err}");
    let (code, out, err) = kv(
        &cluster,
        &[
            "cas",
            "users",
            "alice",
            "--expect",
            &v1.to_string(),
            "--value",
            "owner",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (v2, _) = parse_written(&out);
    assert!(v2 > v1);
    let (code, _, err) = kv(
        &cluster,
        &[
            "cas", "users", "bob", "--expect", "absent", "--value", "guest",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = kv(
        &cluster,
        &[
            "cas", "users", "bob", "--expect", "absent", "--value", "again",
        ],
    );
    assert_eq!(code, 1);

    for key in ["carol", "alfred", "dave"] {
        let (code, _, err) = kv(&cluster, &["put", "users", key, &format!("v-{key}")]);
        assert_eq!(code, 0, "{err}");
    }
    let (code, out, err) = kv(&cluster, &["scan", "users"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "alfred\tv-alfred\nalice\towner\nbob\tguest\ncarol\tv-carol\ndave\tv-dave\n"
    );
    let (_, out, _) = kv(&cluster, &["scan", "users", "--prefix", "al"]);
    assert_eq!(out, "alfred\tv-alfred\nalice\towner\n");
    let (_, out, _) = kv(
        &cluster,
        &["scan", "users", "--from", "b", "--to", "d", "--limit", "1"],
    );
    assert_eq!(out, "bob\tguest\n");

    let (code, _, err) = kv(&cluster, &["del", "users", "alice"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = kv(&cluster, &["get", "users", "alice"]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("not found"), "{err}");

    // Clear errors.
    let (code, _, err) = kv(&cluster, &["put", "events", "k", "v"]);
    assert_eq!(code, 2);
    assert!(err.contains("NOT_A_TABLE"), "{err}");
    let (code, _, err) = kv(&cluster, &["get", "nosuch", "k"]);
    assert_eq!(code, 2);
    assert!(err.contains("nosuch"), "{err}");
    let (code, _, err) = kv(&cluster, &["get", "users", "k", "--at-least", "zz"]);
    assert_eq!(code, 2);
    assert!(err.contains("OFFSET:EPOCH"), "{err}");
    // Values up to max.message.bytes; beyond it, a clear error.
    let mut create = tandem();
    create
        .args(["topic", "create", "small", "--config", "tandem.kind=table"])
        .args(["--config", "max.message.bytes=1000", "--bootstrap"])
        .arg(cluster.bootstrap());
    let out = cluster.run(create, b"", Duration::from_secs(30));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cluster.wait_until_ready("small", 1);
    let (code, _, err) = kv(&cluster, &["put", "small", "k", &"v".repeat(900)]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = kv(&cluster, &["put", "small", "k", &"v".repeat(2000)]);
    assert_eq!(code, 2);
    assert!(err.contains("MESSAGE_TOO_LARGE"), "{err}");
    // A keyless record cannot go into a table.
    let mut produce = tandem();
    produce
        .args([
            "produce",
            "users",
            "--partition",
            "0",
            "--delivery-timeout-ms",
            "3000",
        ])
        .arg("--bootstrap")
        .arg(cluster.bootstrap());
    let out = cluster.run(produce, b"no key here\n", Duration::from_secs(30));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("INVALID_REQUEST"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn session_reads_on_any_replica_see_the_sessions_writes() {
    let cluster = Cluster::start();
    let rt = runtime();
    rt.block_on(async {
        let client = connect(&cluster).await;
        create_table(&client, &cluster, "sessions", 2).await;
        let config = TableConfig {
            // acks=1: the write is acknowledged before followers have it, so a follower read
            // without the token would often miss it.
            acks: tandem_client::Acks::Leader,
            ..TableConfig::default()
        };
        let table = Table::new(client.clone(), "sessions", config);
        for i in 0..300u32 {
            let key = format!("key-{}", i % 10);
            let value = format!("value-{i}");
            let token = table.put(key.clone(), value.clone()).await.unwrap();
            let got = table
                .get(key.clone(), ReadMode::Session)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{key} missing after its put at {token:?}"));
            assert_eq!(got.value, Bytes::from(value), "read {i} went back in time");
            assert!(got.version >= token.offset);
        }
    });
}

/// The committed table on each replica, through a follower-consistency scan of that node.
async fn replica_tables(
    table: &Table,
    nodes: &[i32],
    partitions: u32,
) -> BTreeMap<i32, BTreeMap<Bytes, (Bytes, i64)>> {
    let mut all = BTreeMap::new();
    for &node in nodes {
        let mut map = BTreeMap::new();
        for partition in 0..partitions {
            let mut range = ScanRange::default();
            loop {
                let page = table
                    .scan_replica(node, partition, &range, 1_000)
                    .await
                    .unwrap();
                for e in page.entries {
                    map.insert(e.key, (e.value, e.version));
                }
                match page.next {
                    Some(next) => range.from = next,
                    None => break,
                }
            }
        }
        all.insert(node, map);
    }
    all
}

#[test]
fn replicas_match_the_model_after_kills_restarts_and_snapshots() {
    let mut cluster = Cluster::start();
    let rt = runtime();
    let partitions = 2;
    let client = rt.block_on(connect(&cluster));
    rt.block_on(create_table(&client, &cluster, "state", partitions));
    let table = Table::new(client.clone(), "state", TableConfig::default());
    // The model: every acknowledged write (acks=all), in order.
    let mut model: BTreeMap<Bytes, (Bytes, i64)> = BTreeMap::new();
    let write_round = |round: u32, model: &mut BTreeMap<Bytes, (Bytes, i64)>| {
        rt.block_on(async {
            for i in 0..200u32 {
                let key = Bytes::from(format!("k{:03}", (i * 7 + round) % 60));
                // A write whose connection closed after it was sent (the leader was just
                // killed) has an unknown outcome; as a careful caller would, write the same
                // again: the table then ends as the model says either way.
                if i % 9 == 4 {
                    retry_unknown(|| table.delete(key.clone())).await;
                    model.remove(&key);
                } else {
                    let value = Bytes::from(format!("r{round}-{i}"));
                    let token = retry_unknown(|| table.put(key.clone(), value.clone())).await;
                    model.insert(key, (value, token.offset));
                }
            }
        })
    };
    let check = |cluster: &Cluster, model: &BTreeMap<Bytes, (Bytes, i64)>, when: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let _ = rt.block_on(client.refresh_metadata());
            let tables = rt.block_on(replica_tables(&table, &cluster.ids(), partitions));
            let differing: Vec<i32> = tables
                .iter()
                .filter(|(_, t)| *t != model)
                .map(|(n, _)| *n)
                .collect();
            if differing.is_empty() {
                return;
            }
            // Followers apply up to their HW, which trails the leader's briefly.
            assert!(
                Instant::now() < deadline,
                "{when}: replicas {differing:?} differ from the model of {} keys\n{}",
                model.len(),
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    write_round(0, &mut model);
    check(&cluster, &model, "after the first writes");

    // SIGKILL a partition leader, write more, bring it back.
    let victim = cluster.leaders("state")[0];
    cluster.kill(victim);
    write_round(1, &mut model);
    cluster.restart(victim);
    cluster.wait_until_ready("state", partitions as usize);
    check(&cluster, &model, "after a leader was killed and restarted");

    // A clean stop writes each table's snapshot; the restart loads it and replays the tail.
    let node = cluster.ids()[1];
    let killed = cluster.stop(&[node], Duration::from_secs(20));
    assert!(killed.is_empty(), "node {node} did not stop cleanly");
    for p in 0..partitions {
        let snapshot = cluster
            .data_dir(node)
            .join("tables")
            .join(format!("state-{p}"))
            .join("snapshot");
        assert!(snapshot.exists(), "no snapshot at {}", snapshot.display());
    }
    write_round(2, &mut model);
    cluster.restart(node);
    cluster.wait_until_ready("state", partitions as usize);
    check(&cluster, &model, "after a clean stop and restart");
    let log = std::fs::read_to_string(cluster.dir.path().join(format!("node-{node}.log")))
        .unwrap_or_default();
    let loaded: Vec<&str> = log.lines().filter(|l| l.contains("table loaded")).collect();
    assert!(
        loaded.iter().any(|l| !l.contains("from_snapshot=0")),
        "the restart did not start from the snapshot: {loaded:?}"
    );

    // A damaged snapshot is discarded: the table is rebuilt from the log, still identical.
    let node = cluster.ids()[2];
    cluster.kill(node);
    let snapshot = cluster
        .data_dir(node)
        .join("tables")
        .join("state-0")
        .join("snapshot");
    if snapshot.exists() {
        let mut bytes = std::fs::read(&snapshot).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&snapshot, bytes).unwrap();
    }
    cluster.restart(node);
    cluster.wait_until_ready("state", partitions as usize);
    check(&cluster, &model, "after a damaged snapshot");

    // Compare-and-set against the model's versions still holds after all this.
    rt.block_on(async {
        let (key, (_, version)) = model
            .iter()
            .next()
            .map(|(k, v)| (k.clone(), v.clone()))
            .unwrap();
        let outcome = table
            .cas(key.clone(), Some(version), Some("last"))
            .await
            .unwrap();
        assert!(matches!(outcome, CasOutcome::Written(_)), "{outcome:?}");
        let stale = table.cas(key, Some(version), Some("again")).await.unwrap();
        assert!(matches!(stale, CasOutcome::Mismatch { .. }), "{stale:?}");
    });
}

/// Runs a table write again while its outcome is unknown (its connection closed after it was
/// sent, or the leader answered INDETERMINATE); any other error fails the test.
async fn retry_unknown<T, F: std::future::Future<Output = Result<T, tandem_client::Error>>>(
    mut write: impl FnMut() -> F,
) -> T {
    for _ in 0..5 {
        match write().await {
            Ok(written) => return written,
            Err(e)
                if matches!(e, tandem_client::Error::ConnectionClosed { .. })
                    || e.code() == Some(tandem_protocol::errors::INDETERMINATE) =>
            {
                eprintln!("a write has an unknown outcome ({e}): writing it again");
            }
            Err(e) => panic!("write failed: {e}"),
        }
    }
    panic!("five writes in a row had unknown outcomes")
}
