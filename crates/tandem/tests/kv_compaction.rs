//! Table compaction on a real 3-node cluster (compaction every 300 ms, 4 KiB segments,
//! tombstones dropped at once):
//!
//! - every replica compacts its log (it shrinks) and its table still equals the model of the
//!   acknowledged writes;
//! - a follower that was down while keys were deleted and the deletes compacted away (the
//!   leader's compaction horizon passed its log end) copies the log again and ends without
//!   the deleted keys (without the horizon rule it would keep them forever);
//! - a node whose replica data was wiped (its logs and table snapshots; the controller's
//!   Raft state is kept) copies the compacted log (a table's snapshot, in effect) and ends
//!   with the same table.
//!
//! Its own test binary: the compaction interval reaches the servers through an environment
//! variable. Every loop is bounded.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Cluster;
use tandem_client::table::{ScanRange, Table, TableConfig};
use tandem_client::{Client, ClientConfig, NewTopic};

type Model = BTreeMap<Bytes, Bytes>;

async fn connect(cluster: &Cluster) -> Client {
    let addresses: Vec<String> = cluster.servers.iter().map(|s| s.address.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(c) = Client::connect(ClientConfig::new(addresses.clone())).await {
            let _ = c.refresh_metadata().await;
            if c.metadata().brokers.len() == cluster.servers.len() {
                return c;
            }
        }
        assert!(Instant::now() < deadline, "the cluster never came up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn replica_table(table: &Table, node: i32) -> Model {
    let mut map = Model::new();
    let mut range = ScanRange::default();
    loop {
        let page = table.scan_replica(node, 0, &range, 1_000).await.unwrap();
        map.extend(page.entries.into_iter().map(|e| (e.key, e.value)));
        match page.next {
            Some(next) => range.from = next,
            None => return map,
        }
    }
}

fn log_bytes(cluster: &Cluster, node: i32) -> u64 {
    let dir = cluster.partition_dir(node, "compacted", 0);
    std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn compactions_logged(cluster: &Cluster, node: i32) -> usize {
    std::fs::read_to_string(cluster.dir.path().join(format!("node-{node}.log")))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("compacted") && l.contains("compacted-0"))
        .count()
}

#[test]
fn compaction_keeps_every_replica_equal_to_the_model() {
    // Set before any server starts; this binary has only this test.
    std::env::set_var("TANDEM_COMPACTION_INTERVAL_MS", "300");
    let mut cluster = Cluster::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(connect(&cluster));
    rt.block_on(
        client.create_topic(
            NewTopic::new("compacted", 1)
                .replication_factor(3)
                .config("tandem.kind", "table")
                .config("min.insync.replicas", "2")
                .config("segment.bytes", "4096")
                .config("delete.retention.ms", "0"),
        ),
    )
    .unwrap();
    cluster.wait_until_ready("compacted", 1);
    let table = Table::new(client.clone(), "compacted", TableConfig::default());
    let mut model = Model::new();
    let written = std::cell::Cell::new(0u64);
    let write = |round: u32, count: u32, delete_every: u32, model: &mut Model| {
        rt.block_on(async {
            for i in 0..count {
                let key = Bytes::from(format!("key-{:02}", (i * 13 + round) % 40));
                if delete_every > 0 && i % delete_every == 0 {
                    table.delete(key.clone()).await.unwrap();
                    model.remove(&key);
                } else {
                    let value = Bytes::from(format!("round {round} write {i} {}", "x".repeat(40)));
                    written.set(written.get() + value.len() as u64);
                    table.put(key.clone(), value.clone()).await.unwrap();
                    model.insert(key, value);
                }
            }
        })
    };
    let converge = |cluster: &Cluster, model: &Model, nodes: &[i32], when: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let _ = rt.block_on(client.refresh_metadata());
            let differing: Vec<i32> = nodes
                .iter()
                .copied()
                .filter(|&n| rt.block_on(replica_table(&table, n)) != *model)
                .collect();
            if differing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{when}: replicas {differing:?} differ from the model ({} keys)\n{}",
                model.len(),
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    // 1. Many overwrites: every replica compacts, and still holds exactly the model.
    write(0, 1_500, 0, &mut model);
    let ids = cluster.ids();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ids.iter().all(|&n| compactions_logged(&cluster, n) > 0) {
        assert!(
            Instant::now() < deadline,
            "not every node compacted\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    converge(&cluster, &model, &ids, "after compaction");
    for &n in &ids {
        let (bytes, written) = (log_bytes(&cluster, n), written.get());
        assert!(
            bytes < written / 2,
            "node {n}'s log holds {bytes} bytes of {written} written: compaction did not shrink it"
        );
    }

    // 2. A follower misses deletes that are then compacted away; it must copy the log again.
    let leader = cluster.leaders("compacted")[0];
    let follower = *ids.iter().find(|&&n| n != leader).unwrap();
    cluster.kill(follower);
    write(1, 600, 3, &mut model); // every third write deletes a key
    std::thread::sleep(Duration::from_millis(1_500)); // a few compactions on the leader
    cluster.restart(follower);
    cluster.wait_until_ready("compacted", 1);
    converge(
        &cluster,
        &model,
        &ids,
        "after a follower missed compacted-away deletes",
    );

    // 3. A node whose replica data is gone copies the compacted log, ends with the same table.
    let wiped = *ids
        .iter()
        .find(|&&n| n != cluster.leaders("compacted")[0])
        .unwrap();
    cluster.kill(wiped);
    std::fs::remove_dir_all(cluster.data_dir(wiped).join("logs")).unwrap();
    let _ = std::fs::remove_dir_all(cluster.data_dir(wiped).join("tables")); // may not exist
    write(2, 300, 5, &mut model);
    cluster.restart(wiped);
    cluster.wait_until_ready("compacted", 1);
    converge(&cluster, &model, &ids, "after a node's disk was wiped");
}
