//! tandem-client and the client CLI against a real cluster: three `tandem server` processes on
//! loopback (free ports), as in cluster.rs.
//!
//! - keyed acks=all records through the library while a partition leader is SIGKILLed: every
//!   acknowledged record is read back exactly once, at its offset, on its key's partition;
//! - the CLI round trip: topic create → produce → consume → status.
//!
//! Every loop is bounded in count and time; the bounds are generous (2-core machines).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Cluster;
use tandem_client::partitioner::partition_for_key;
use tandem_client::{
    Acks, Client, ClientConfig, Consumer, ConsumerConfig, NewTopic, Producer, ProducerConfig,
    ReadFrom, Record, StartOffset,
};

/// Connects, retrying while the nodes start (bounded).
async fn connect(addresses: Vec<String>) -> Client {
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

/// Waits until `n` nodes are registered (bounded): topic creation needs them live.
async fn wait_brokers(client: &Client, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let _ = client.refresh_metadata().await;
        if client.metadata().brokers.len() >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {:?} registered",
            client.metadata().brokers
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every partition of `topic` has a full ISR (bounded).
async fn wait_full_isr(client: &Client, topic: &str, replicas: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let _ = client.refresh_metadata().await;
        let ready = client.metadata().topics.get(topic).is_some_and(|t| {
            t.partitions
                .iter()
                .all(|p| p.leader.is_some() && p.isr.len() == replicas)
        });
        if ready {
            return;
        }
        assert!(Instant::now() < deadline, "{topic} never got a full ISR");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const RECORDS: usize = 4_000;
const PARTITIONS: u32 = 3;

#[test]
fn keyed_acks_all_records_survive_sigkill_of_a_partition_leader_exactly_once() {
    let mut cluster = Cluster::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addresses: Vec<String> = cluster.servers.iter().map(|s| s.address.clone()).collect();
    let started = Instant::now();
    let outcome = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(240), async {
            let client = connect(addresses).await;
            wait_brokers(&client, 3).await;
            client
                .create_topic(
                    NewTopic::new("orders", PARTITIONS)
                        .replication_factor(3)
                        .config("min.insync.replicas", "2"),
                )
                .await
                .expect("create topic");
            wait_full_isr(&client, "orders", 3).await;
            eprintln!("{:?}: topic ready", started.elapsed());

            let config = ProducerConfig {
                acks: Acks::All,
                linger: Duration::from_millis(2),
                max_batch_bytes: 16 * 1024,
                delivery_timeout: Duration::from_secs(90),
                ..ProducerConfig::default()
            };
            let producer = Producer::new(client.clone(), config).await.expect("producer");
            let victim = client
                .metadata()
                .leader("orders", 0)
                .map(|(id, _, _)| id)
                .expect("partition 0 has a leader");
            // Send in paced rounds so that the kill lands mid-stream with requests in flight.
            let mut pending = Vec::with_capacity(RECORDS);
            let mut killed_at = None;
            for i in 0..RECORDS {
                let key = format!("customer-{}", i % 97);
                let value = format!("order-{i}");
                let ack = producer
                    .send(Record::new("orders", value.clone()).key(key.clone()))
                    .await
                    .expect("send");
                let sent_at = Instant::now();
                // Note when each ack arrives, to see the failover as the producer lived it.
                let ack = tokio::spawn(async move { (ack.await, Instant::now()) });
                pending.push((key, value, sent_at, ack));
                if i % 100 == 99 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                if i == RECORDS / 2 + 50 {
                    cluster.kill(victim); // SIGKILL
                    killed_at = Some(Instant::now());
                    eprintln!(
                        "{:?}: SIGKILLed node {victim}, leader of orders-0, after {i} sends",
                        started.elapsed()
                    );
                }
            }
            let killed_at = killed_at.expect("killed");
            let mut acknowledged = Vec::with_capacity(RECORDS);
            let mut failures = Vec::new();
            let mut first_ack_after_kill: Option<Duration> = None;
            let mut stalled = 0;
            for (key, value, sent_at, ack) in pending {
                let (result, acked_at) = ack.await.expect("ack task");
                match result {
                    Ok(at) => {
                        if at.partition == 0 && sent_at > killed_at {
                            let d = acked_at - killed_at;
                            first_ack_after_kill = Some(first_ack_after_kill.map_or(d, |f| f.min(d)));
                        }
                        if at.partition == 0 && sent_at < killed_at && acked_at > killed_at {
                            stalled += 1;
                        }
                        acknowledged.push((key, value, at))
                    }
                    Err(e) => failures.push((value, e.to_string())),
                }
            }
            eprintln!(
                "failover seen by the producer: SIGKILL to the first ack on orders-0 of a record \
                 sent after it: {first_ack_after_kill:?}; {stalled} records of orders-0 sent before \
                 the kill were acknowledged after it (retried)"
            );
            producer.close().await.expect("close");
            let produced_in = started.elapsed();
            eprintln!(
                "{produced_in:?}: {} acknowledged, {} failed; last ack {:?} after the kill",
                acknowledged.len(),
                failures.len(),
                killed_at.elapsed()
            );
            assert!(failures.is_empty(), "records failed: {:?}", &failures[..failures.len().min(5)]);

            // Read everything back, from the new leaders.
            let mut consumer = Consumer::new(
                client.clone(),
                ConsumerConfig {
                    max_wait: Duration::from_millis(200),
                    ..ConsumerConfig::default()
                },
            );
            consumer
                .assign("orders", None, StartOffset::Earliest)
                .await
                .expect("assign");
            let mut read: BTreeMap<(u32, i64), (String, String)> = BTreeMap::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut polls = 0;
            while read.len() < acknowledged.len() && Instant::now() < deadline && polls < 10_000 {
                polls += 1;
                for r in consumer.poll().await.expect("poll") {
                    let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
                    let value = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
                    assert!(
                        read.insert((r.partition, r.offset), (key, value)).is_none(),
                        "offset {}-{} returned twice",
                        r.partition,
                        r.offset
                    );
                }
            }
            // Exactly once: no value twice anywhere.
            let mut copies: HashMap<&str, usize> = HashMap::new();
            for (_, value) in read.values() {
                *copies.entry(value.as_str()).or_default() += 1;
            }
            let duplicated: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
            assert!(duplicated.is_empty(), "written twice: {duplicated:?}");
            for (key, value, at) in &acknowledged {
                assert_eq!(
                    at.partition,
                    partition_for_key(key.as_bytes(), PARTITIONS),
                    "{key} on the wrong partition"
                );
                assert_eq!(
                    read.get(&(at.partition, at.offset)),
                    Some(&(key.clone(), value.clone())),
                    "acknowledged {value} at {}-{} lost or changed",
                    at.partition,
                    at.offset
                );
            }
            for ((partition, _), (key, _)) in &read {
                assert_eq!(*partition, partition_for_key(key.as_bytes(), PARTITIONS));
            }
            eprintln!(
                "{:?}: read {} records in {polls} polls; every acknowledged one exactly once",
                started.elapsed(),
                read.len()
            );

            // A follower serves reads too (committed records only).
            let mut follower = Consumer::new(
                client.clone(),
                ConsumerConfig {
                    read_from: ReadFrom::Follower,
                    max_wait: Duration::from_millis(200),
                    ..ConsumerConfig::default()
                },
            );
            follower
                .assign("orders", Some(&[1]), StartOffset::Earliest)
                .await
                .unwrap();
            let want = read.keys().filter(|(p, _)| *p == 1).count();
            let mut got = 0;
            let deadline = Instant::now() + Duration::from_secs(30);
            while got < want && Instant::now() < deadline {
                got += follower.poll().await.expect("follower poll").len();
            }
            assert_eq!(got, want, "a follower serves the committed log of orders-1");
        })
        .await
    });
    outcome.expect("the test finished within its time bound");
}

fn cli(args: &[&str], bootstrap: &str, stdin: Option<&str>) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tandem"));
    command
        .args(args)
        .env("TANDEM_BOOTSTRAP", bootstrap)
        .env("TANDEM_LOG", "warn")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("run tandem");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    // Bounded: every command here finishes in seconds; kill it if it hangs.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tandem {args:?} did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn cli_topic_create_produce_consume_status() {
    let cluster = Cluster::start();
    let bootstrap = cluster.servers[1].address.clone();

    // The first command may race the cluster's start: retry it (bounded).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, out, err) = cli(
            &[
                "topic",
                "create",
                "lines",
                "--partitions",
                "2",
                "--min-insync",
                "2",
            ],
            &bootstrap,
            None,
        );
        if ok {
            assert!(out.contains("created topic lines"), "{out}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "topic create kept failing: {err}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let (ok, out, err) = cli(&["topic", "create", "lines"], &bootstrap, None);
    assert!(!ok, "a second create fails");
    assert!(err.contains("already exists"), "{out} {err}");

    let (ok, out, _) = cli(&["topic", "list"], &bootstrap, None);
    assert!(ok && out.contains("lines\t2 partitions"), "{out}");

    let input: String = (0..50).map(|i| format!("k{i}:line {i}\n")).collect();
    let (ok, out, err) = cli(
        &[
            "produce",
            "lines",
            "--key-separator",
            ":",
            "--acks",
            "all",
            "--print-offsets",
        ],
        &bootstrap,
        Some(&input),
    );
    assert!(ok, "produce failed: {err}");
    assert_eq!(out.lines().count(), 50, "{out}");
    for (i, line) in out.lines().enumerate() {
        let partition: u32 = line.split('\t').next().unwrap().parse().unwrap();
        assert_eq!(partition, partition_for_key(format!("k{i}").as_bytes(), 2));
    }
    let (ok, _, err) = cli(
        &["produce", "lines", "--durability", "flushed"],
        &bootstrap,
        Some("flushed one\nflushed two\n"),
    );
    assert!(ok, "flushed produce failed: {err}");

    let (ok, out, err) = cli(
        &[
            "consume",
            "lines",
            "--from",
            "earliest",
            "--count",
            "52",
            "--key-separator",
            "=",
        ],
        &bootstrap,
        None,
    );
    assert!(ok, "consume failed: {err}");
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    let mut want: Vec<String> = (0..50).map(|i| format!("k{i}=line {i}")).collect();
    want.push("=flushed one".into());
    want.push("=flushed two".into());
    want.sort();
    assert_eq!(lines, want);

    let (ok, out, _) = cli(
        &[
            "consume",
            "lines",
            "--partition",
            "0",
            "--from",
            "1",
            "--count",
            "1",
            "--print-offsets",
        ],
        &bootstrap,
        None,
    );
    assert!(ok && out.starts_with("0\t1\t"), "{out}");

    let (ok, out, err) = cli(&["status", "--json"], &bootstrap, None);
    assert!(ok, "status failed: {err}");
    let summary = err.lines().last().unwrap();
    assert!(
        summary.starts_with("3/3 nodes live, 2 partitions: 0 offline"),
        "{summary}"
    );
    let json: serde_json::Value = serde_json::from_str(&out).expect("pretty JSON");
    assert_eq!(json["partitions"].as_array().unwrap().len(), 2);

    let (ok, _, err) = cli(&["topic", "delete", "lines"], &bootstrap, None);
    assert!(ok, "delete failed: {err}");
    let (ok, _, err) = cli(&["consume", "lines"], &bootstrap, None);
    assert!(!ok && err.contains("unknown topic"), "{err}");
    drop(cluster);
}
