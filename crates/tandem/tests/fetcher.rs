//! Fetchers (docs/server.md) against three real `tandem server` processes.
//!
//! - `a_follower_sends_one_fetch_per_leader_not_one_per_partition`: 21 partitions at RF 3,
//!   idle: the Fetch requests the leaders receive (`tandem_replica_fetch_requests_total`)
//!   carry about all the partitions a follower fetches from that leader, not one each. Also
//!   reports acks=all produce latency on a 1-partition topic and on a partition of the
//!   20-partition topic (measured, not asserted). Fails with batching off
//!   (`TANDEM_REPLICA_FETCH_PER_PARTITION=1` in the test's environment: 1.0 partitions/Fetch).
//! - `acks_all_throughput_with_1_and_30_partitions_per_partition_vs_batched` (ignored, a
//!   benchmark): acks=all produce throughput with 1 and 30 partitions, one Fetch per partition
//!   (before fetchers) against one per leader (fetchers), in the same run.

mod common;

use std::time::{Duration, Instant};

use common::{http_get, Cluster};
use tandem_client::{Acks, Client, ClientConfig, Producer, ProducerConfig, Record};

/// The tests of this file change the environment the servers inherit: one at a time.
static ENVIRONMENT: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

const PER_PARTITION: &str = "TANDEM_REPLICA_FETCH_PER_PARTITION";

/// A counter's value in a node's /metrics.
fn counter(admin: &str, name: &str) -> u64 {
    let (_, body) = http_get(admin, "/metrics").expect("/metrics answers");
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// (Fetch requests from followers, partitions they named), summed over the cluster.
fn replica_fetches(cluster: &Cluster) -> (u64, u64) {
    cluster.servers.iter().fold((0, 0), |(r, p), s| {
        (
            r + counter(&s.admin_address, "tandem_replica_fetch_requests_total"),
            p + counter(&s.admin_address, "tandem_replica_fetch_partitions_total"),
        )
    })
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
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for the cluster: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cluster never answered: {e}"),
        }
    }
}

fn acks_all(linger_ms: u64) -> ProducerConfig {
    ProducerConfig {
        acks: Acks::All,
        linger: Duration::from_millis(linger_ms),
        delivery_timeout: Duration::from_secs(60),
        ..ProducerConfig::default()
    }
}

/// Median and 99th percentile, in ms, of `count` sequential acks=all produces to one partition.
async fn produce_latency(producer: &Producer, topic: &str, count: usize) -> (f64, f64) {
    let mut latencies = Vec::with_capacity(count);
    for i in 0..count {
        let started = Instant::now();
        producer
            .send_and_wait(Record::new(topic, format!("value-{i}")).partition(0))
            .await
            .expect("acks=all produce");
        latencies.push(started.elapsed().as_secs_f64() * 1e3);
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99))
}

#[test]
fn a_follower_sends_one_fetch_per_leader_not_one_per_partition() {
    let _environment = ENVIRONMENT.lock();
    let cluster = Cluster::start();
    cluster.create_topic("many", 20, "2");
    cluster.create_topic("one", 1, "2");
    std::thread::sleep(Duration::from_secs(1));
    let before = replica_fetches(&cluster);
    let window = Duration::from_secs(3);
    std::thread::sleep(window);
    let after = replica_fetches(&cluster);
    let (requests, partitions) = (after.0 - before.0, after.1 - before.1);
    // 21 partitions at RF 3 on 3 nodes: each node follows 14 of them, from 2 leaders.
    let pairs = 6.0;
    let per_fetch = partitions as f64 / requests.max(1) as f64;
    let per_pair_per_second = requests as f64 / pairs / window.as_secs_f64();
    eprintln!(
        "idle, {window:?}: {requests} replica Fetch requests naming {partitions} partitions: \
         {per_fetch:.1} partitions per Fetch, {per_pair_per_second:.1} Fetches/s per \
         (follower, leader) pair (one per partition would be 1.0 per Fetch, ~7x the rate)"
    );
    assert!(requests > 0, "followers fetch");
    assert!(
        per_fetch >= 4.0,
        "a follower's Fetch carries the ~7 partitions it fetches from that leader, got {per_fetch:.1}"
    );

    // acks=all latency of one partition, alone and beside 19 idle ones (reported only).
    let (one, many) = runtime().block_on(async {
        let client = connect(&cluster).await;
        let producer = Producer::new(client, acks_all(0)).await.expect("producer");
        produce_latency(&producer, "one", 20).await; // warm up connections
        let one = produce_latency(&producer, "one", 300).await;
        let many = produce_latency(&producer, "many", 300).await;
        (one, many)
    });
    eprintln!(
        "acks=all produce latency, 300 sequential: 1-partition topic p50 {:.2} ms p99 {:.2} ms; \
         partition 0 of the 20-partition topic p50 {:.2} ms p99 {:.2} ms",
        one.0, one.1, many.0, many.1
    );
}

/// Records acknowledged per second for `duration` of acks=all produces spread round-robin
/// over the topic's `partitions`.
async fn throughput(producer: &Producer, topic: &str, partitions: u32, duration: Duration) -> f64 {
    let value = vec![b'x'; 100];
    let started = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    let mut acked = 0u64;
    let mut i = 0u32;
    while started.elapsed() < duration {
        let record = Record::new(topic, value.clone()).partition(i % partitions);
        i = i.wrapping_add(1);
        pending.push_back(producer.send(record).await.expect("send"));
        while pending.len() > 2_000 {
            pending.pop_front().unwrap().await.expect("acks=all");
            acked += 1;
        }
    }
    for ack in pending {
        ack.await.expect("acks=all");
        acked += 1;
    }
    acked as f64 / started.elapsed().as_secs_f64()
}

#[test]
#[ignore = "benchmark: cargo test -p tandem --test fetcher -- --ignored --nocapture"]
fn acks_all_throughput_with_1_and_30_partitions_per_partition_vs_batched() {
    let _environment = ENVIRONMENT.lock();
    let duration = Duration::from_secs(5);
    let mut figures = Vec::new();
    for (mode, per_partition) in [("one Fetch per partition", true), ("fetchers", false)] {
        if per_partition {
            std::env::set_var(PER_PARTITION, "1");
        } else {
            std::env::remove_var(PER_PARTITION);
        }
        let cluster = Cluster::start();
        std::env::remove_var(PER_PARTITION);
        cluster.create_topic("p1", 1, "2");
        cluster.create_topic("p30", 30, "2");
        let (one, thirty) = runtime().block_on(async {
            let client = connect(&cluster).await;
            let producer = Producer::new(client, acks_all(1)).await.expect("producer");
            throughput(&producer, "p1", 1, Duration::from_secs(1)).await; // warm up
            let one = throughput(&producer, "p1", 1, duration).await;
            let thirty = throughput(&producer, "p30", 30, duration).await;
            (one, thirty)
        });
        let (requests, partitions) = replica_fetches(&cluster);
        eprintln!(
            "{mode}: acks=all {one:.0} records/s with 1 partition, {thirty:.0} with 30; \
             {requests} replica Fetches naming {partitions} partitions"
        );
        figures.push((one, thirty));
    }
    let (before, after) = (figures[0], figures[1]);
    eprintln!(
        "fetchers / one Fetch per partition: 1 partition x{:.2}, 30 partitions x{:.2}",
        after.0 / before.0,
        after.1 / before.1
    );
}
