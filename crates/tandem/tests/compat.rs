//! Real Kafka clients that nobody here wrote, against a real 3-node Tandem cluster: Debian's
//! kcat, kafka-python and confluent-kafka (librdkafka) from PyPI. `scripts/test.sh` installs
//! them (see docs/compatibility.md); a missing client fails these tests, it never skips them.
//!
//! Every test compares exactly what was written with what was read back: the count, no
//! duplicates, each partition's records in offset order with contiguous offsets from 0, each
//! keyed record on the partition Kafka's murmur2 partitioner picks (checked here with our own
//! murmur2), and each producer's order kept within a partition.
//!
//! Run alone: `cargo test -p tandem --test compat` (after `scripts/test.sh --install-only`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::Cluster;

/// How long one client run may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);
const PARTITIONS: i32 = 3;

/// Fails loudly when scripts/test.sh could not install this client (`kcat`, `kafka-python`).
fn check_installed(client: &str) {
    if let Ok(failed) = std::env::var("TANDEM_COMPAT_INSTALL_FAILED") {
        assert!(
            !failed.contains(client),
            "scripts/test.sh could not install {failed}"
        );
    }
}

fn kcat() -> Command {
    check_installed("kcat");
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join("kcat").is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "kcat is not installed: run scripts/test.sh (it runs `apt-get install -y kcat`), \
         or `scripts/test.sh --install-only` before `cargo test -p tandem --test compat`"
    );
    Command::new("kcat")
}

/// The venv python scripts/test.sh set up, with kafka-python and confluent-kafka.
fn python() -> Command {
    check_installed("kafka-python");
    let python = std::env::var_os("TANDEM_COMPAT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::target_dir().join("compat-venv/bin/python"));
    assert!(
        python.is_file(),
        "{} is missing: run scripts/test.sh (it installs kafka-python and confluent-kafka into \
         that venv), or `scripts/test.sh --install-only` before `cargo test -p tandem --test \
         compat`",
        python.display()
    );
    Command::new(python)
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/compat")
        .join(name)
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), written out here so that
/// the check does not trust the client that is being checked.
fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for a key.
fn kafka_partition(key: &str, partitions: i32) -> i32 {
    (murmur2(key.as_bytes()) & 0x7fff_ffff) % partitions
}

#[test]
fn murmur2_matches_kafkas_test_vectors() {
    // From Kafka's UtilsTest.testMurmur2.
    for (input, expected) in [
        ("21", -973932308),
        ("foobar", -790332482),
        ("a-little-bit-long-string", -985981536),
        ("a-little-bit-longer-string", -1486304829),
        (
            "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58897971,
        ),
        ("abc", 479470107),
    ] {
        assert_eq!(murmur2(input.as_bytes()), expected, "murmur2({input:?})");
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Record {
    partition: i32,
    offset: i64,
    key: String,
    value: String,
}

fn record(fields: &[&str]) -> Record {
    Record {
        partition: fields[0].parse().unwrap(),
        offset: fields[1].parse().unwrap(),
        key: fields[2].to_string(),
        value: fields[3].to_string(),
    }
}

/// "W p o k v" and "R p o k v" lines: (written, read).
fn parse_script_output(stdout: &str) -> (Vec<Record>, Vec<Record>) {
    let (mut written, mut read) = (Vec::new(), Vec::new());
    for line in stdout.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        match fields.as_slice() {
            ["W", rest @ ..] if rest.len() == 4 => written.push(record(rest)),
            ["R", rest @ ..] if rest.len() == 4 => read.push(record(rest)),
            _ => panic!("unexpected line from the client script: {line:?}"),
        }
    }
    (written, read)
}

/// The checks every client's run must pass. `sent` is what the producer was given, in order;
/// `read` is what the consumer returned, in the order it returned them (per partition).
/// `acknowledged`, when the client reports offsets, is what its producer was told.
fn check_exactly_once(
    sent: &[(String, String)],
    acknowledged: Option<&[Record]>,
    read: &[Record],
    partitions: i32,
) {
    // Exactly the records sent, each once.
    let sent_set: BTreeSet<(&str, &str)> =
        sent.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(sent_set.len(), sent.len(), "the test sent duplicates");
    let mut read_set = BTreeSet::new();
    for r in read {
        assert!(
            read_set.insert((r.key.as_str(), r.value.as_str())),
            "read twice: {r:?}"
        );
    }
    let missing: Vec<_> = sent_set.difference(&read_set).take(10).collect();
    let extra: Vec<_> = read_set.difference(&sent_set).take(10).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "read {} records, sent {}; missing {missing:?}, unexpected {extra:?}",
        read.len(),
        sent.len()
    );
    assert_eq!(read.len(), sent.len());

    // Per partition: the murmur2 partition, offsets 0, 1, 2, ... in the order read, and the
    // producer's order.
    let mut by_partition: BTreeMap<i32, Vec<&Record>> = BTreeMap::new();
    for r in read {
        assert_eq!(
            r.partition,
            kafka_partition(&r.key, partitions),
            "{r:?} is not on murmur2's partition"
        );
        by_partition.entry(r.partition).or_default().push(r);
    }
    for (partition, records) in &by_partition {
        let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
        let expected: Vec<i64> = (0..records.len() as i64).collect();
        assert_eq!(
            offsets, expected,
            "partition {partition}: offsets not contiguous from 0 in read order"
        );
        let sent_here: Vec<(&str, &str)> = sent
            .iter()
            .filter(|(k, _)| kafka_partition(k, partitions) == *partition)
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let read_here: Vec<(&str, &str)> = records
            .iter()
            .map(|r| (r.key.as_str(), r.value.as_str()))
            .collect();
        assert_eq!(
            read_here, sent_here,
            "partition {partition}: not in the producer's order"
        );
    }

    // What the producer was told matches what was read, record for record.
    if let Some(acknowledged) = acknowledged {
        let acked: BTreeSet<&Record> = acknowledged.iter().collect();
        assert_eq!(
            acked.len(),
            acknowledged.len(),
            "an offset acknowledged twice"
        );
        let read_records: BTreeSet<&Record> = read.iter().collect();
        assert_eq!(
            acked, read_records,
            "acknowledged (partition, offset, key, value) differ from those read"
        );
    }
}

/// The records the scripts send: key-(i mod 17), value-i.
fn keyed_records(count: usize) -> Vec<(String, String)> {
    keyed_range(0..count)
}

fn keyed_range(range: std::ops::Range<usize>) -> Vec<(String, String)> {
    range
        .map(|i| (format!("key-{}", i % 17), format!("value-{i}")))
        .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_success(what: &str, output: &Output, cluster: &Cluster) {
    assert!(
        output.status.success(),
        "{what} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr),
        cluster.logs()
    );
}

#[test]
fn kcat_lists_metadata_produces_and_consumes() {
    let started = Instant::now();
    let kcat_binary = kcat(); // before starting anything: fail fast if missing
    drop(kcat_binary);
    let cluster = Cluster::start();
    let topic = "kcat-events";
    cluster.create_topic(topic, PARTITIONS, "2");
    let bootstrap = cluster.bootstrap();
    eprintln!("{:?}: cluster up, topic created", started.elapsed());

    // kcat -L: three brokers, the topic with its partitions, each led, three replicas.
    let mut list = kcat();
    list.args(["-b", &bootstrap, "-L", "-t", topic, "-m", "10"]);
    let output = cluster.run(list, b"", CLIENT_TIMEOUT);
    assert_success("kcat -L", &output, &cluster);
    let listing = text(&output.stdout);
    eprintln!("kcat -L:\n{listing}");
    assert!(listing.contains(" 3 brokers:"), "{listing}");
    for server in &cluster.servers {
        assert!(
            listing.contains(&format!("broker {} at {}", server.id, server.address)),
            "broker {} missing:\n{listing}",
            server.id
        );
    }
    assert!(
        listing.contains(&format!("topic \"{topic}\" with {PARTITIONS} partitions:")),
        "{listing}"
    );
    for p in 0..PARTITIONS {
        let line = listing
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("partition {p},")))
            .unwrap_or_else(|| panic!("partition {p} missing:\n{listing}"));
        assert!(!line.contains("leader -1"), "{line}");
        assert!(
            line.contains("replicas: ") && line.contains("isrs: "),
            "{line}"
        );
        let replicas = line
            .split("replicas: ")
            .nth(1)
            .and_then(|rest| rest.split(", isrs").next())
            .unwrap()
            .split(',')
            .count();
        assert_eq!(replicas, 3, "{line}");
    }

    // kcat -P: keyed lines, acks=all, Kafka's murmur2 partitioner.
    let sent = keyed_records(300);
    kcat_produce(&cluster, topic, &sent, &[]);
    eprintln!("{:?}: kcat -P done", started.elapsed());
    let read = kcat_consume(&cluster, topic);
    check_exactly_once(&sent, None, &read, PARTITIONS);
    eprintln!(
        "{:?}: kcat read back {} records exactly once",
        started.elapsed(),
        read.len()
    );

    // No auto-creation: producing to a missing topic fails, and the topic stays missing.
    let mut missing = kcat();
    missing.args([
        "-b",
        &bootstrap,
        "-P",
        "-t",
        "no-such-topic",
        "-X",
        "acks=all",
        "-X",
        "topic.metadata.propagation.max.ms=1000",
        "-X",
        "message.timeout.ms=5000",
    ]);
    let output = cluster.run(missing, b"lost\n", CLIENT_TIMEOUT);
    let stderr = text(&output.stderr);
    assert!(
        !output.status.success() || stderr.contains("nknown topic"),
        "kcat -P to a missing topic succeeded:\n{stderr}"
    );
    let m = common::metadata(&cluster.servers[0].address, Some("no-such-topic")).unwrap();
    assert_eq!(m.topics[0].error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION");
    eprintln!(
        "{:?}: missing topic refused, not created",
        started.elapsed()
    );

    // SIGKILL the leader of partition 0; kcat (idempotent this time) goes on producing through
    // the new leaders, and everything written before and after is read back exactly once.
    let victim = cluster.leaders(topic)[0];
    let mut cluster = cluster;
    cluster.kill(victim);
    let survivor = cluster
        .servers
        .iter()
        .find(|s| s.id != victim)
        .unwrap()
        .address
        .clone();
    common::wait_for("new leaders", || {
        let m = common::metadata(&survivor, Some(topic))?;
        m.topics[0]
            .partitions
            .iter()
            .all(|p| p.leader_id.0 >= 0 && p.leader_id.0 != victim)
            .then_some(())
    });
    eprintln!("{:?}: node {victim} killed, new leaders", started.elapsed());
    let more = keyed_range(300..600);
    kcat_produce(&cluster, topic, &more, &["-X", "enable.idempotence=true"]);
    let read = kcat_consume(&cluster, topic);
    let all: Vec<_> = sent.into_iter().chain(more).collect();
    check_exactly_once(&all, None, &read, PARTITIONS);
    eprintln!(
        "{:?}: after the leader kill, kcat read back {} records exactly once",
        started.elapsed(),
        read.len()
    );
}

/// `kcat -P` of `key:value` lines with acks=all and Kafka's murmur2 partitioner.
fn kcat_produce(cluster: &Cluster, topic: &str, records: &[(String, String)], extra: &[&str]) {
    let input: String = records.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let mut produce = kcat();
    produce.args([
        "-b",
        &cluster.bootstrap(),
        "-P",
        "-t",
        topic,
        "-K",
        ":",
        "-X",
        "acks=all",
        "-X",
        "partitioner=murmur2_random",
    ]);
    produce.args(extra);
    let output = cluster.run(produce, input.as_bytes(), CLIENT_TIMEOUT);
    assert_success("kcat -P", &output, cluster);
}

/// `kcat -C` from the beginning of every partition to its end.
fn kcat_consume(cluster: &Cluster, topic: &str) -> Vec<Record> {
    let mut consume = kcat();
    consume.args([
        "-b",
        &cluster.bootstrap(),
        "-C",
        "-t",
        topic,
        "-o",
        "beginning",
        "-e",
        "-f",
        "%p %o %k %s\n",
    ]);
    let output = cluster.run(consume, b"", CLIENT_TIMEOUT);
    assert_success("kcat -C", &output, cluster);
    text(&output.stdout)
        .lines()
        .map(|line| record(&line.split(' ').collect::<Vec<_>>()))
        .collect()
}

/// Runs one of the Python client scripts against a fresh cluster; (written, read).
fn run_script(
    cluster: &Cluster,
    name: &str,
    topic: &str,
    count: usize,
) -> (Vec<Record>, Vec<Record>) {
    let mut command = python();
    command
        .arg(script(name))
        .arg(cluster.bootstrap())
        .arg(topic)
        .arg(PARTITIONS.to_string())
        .arg(count.to_string());
    let output = cluster.run(command, b"", CLIENT_TIMEOUT);
    assert_success(name, &output, cluster);
    eprintln!("{name} stderr:\n{}", text(&output.stderr));
    parse_script_output(&text(&output.stdout))
}

#[test]
fn kafka_python_creates_produces_and_consumes() {
    let started = Instant::now();
    drop(python());
    let cluster = Cluster::start();
    // The admin client needs a controller; wait for the cluster to answer first.
    common::wait_for("metadata with 3 brokers", || {
        common::metadata(&cluster.servers[0].address, None).filter(|m| m.brokers.len() == 3)
    });
    let topic = "python-events";
    let count = 500;
    let (written, read) = run_script(&cluster, "kafka_python.py", topic, count);
    eprintln!("{:?}: kafka-python done", started.elapsed());
    // The topic the admin client created, as Tandem sees it.
    let metadata = common::metadata(&cluster.servers[0].address, Some(topic)).unwrap();
    assert_eq!(metadata.topics[0].error_code, 0);
    assert_eq!(metadata.topics[0].partitions.len(), PARTITIONS as usize);
    for p in &metadata.topics[0].partitions {
        assert_eq!(p.replica_nodes.len(), 3, "{p:?}");
    }
    assert_eq!(written.len(), count, "acknowledged sends");
    check_exactly_once(&keyed_records(count), Some(&written), &read, PARTITIONS);
}

#[test]
fn confluent_kafka_idempotent_producer_and_groupless_consumer() {
    let started = Instant::now();
    drop(python());
    let cluster = Cluster::start();
    let topic = "librdkafka-events";
    cluster.create_topic(topic, PARTITIONS, "2");
    let count = 500;
    let (written, read) = run_script(&cluster, "confluent.py", topic, count);
    eprintln!("{:?}: confluent-kafka done", started.elapsed());
    assert_eq!(written.len(), count, "delivery reports");
    check_exactly_once(&keyed_records(count), Some(&written), &read, PARTITIONS);
}

/// Kafka's Fetch rule, which every consumer's latency depends on: the answer goes out as soon
/// as `min_bytes` have arrived in total, not when the idle partitions' own waits end. (Before
/// the fix, a consumer of several partitions on one broker saw ~`fetch.wait.max.ms` of delay
/// on every record: confluent-kafka measured 366 ms from ack to poll instead of < 10 ms.)
#[test]
fn fetch_answers_as_soon_as_data_arrives_on_any_partition() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, ProduceRequest};
    use kafka_protocol::messages::{RequestKind, ResponseKind};

    let cluster = Cluster::start();
    let topic = "long-poll";
    cluster.create_topic(topic, 6, "2");
    // Six partitions on three nodes: some node leads two of them.
    let leaders = cluster.leaders(topic);
    let (busy, idle, leader) = (0..6)
        .flat_map(|a| (0..6).map(move |b| (a, b)))
        .find(|&(a, b)| a != b && leaders[a] == leaders[b])
        .map(|(a, b)| (a as i32, b as i32, leaders[a]))
        .expect("two partitions with one leader");
    let address = cluster.address_of(leader);
    let fetch = |max_wait_ms: i32| {
        let partitions = [busy, idle]
            .iter()
            .map(|&p| {
                FetchPartition::default()
                    .with_partition(p)
                    .with_fetch_offset(0)
                    .with_current_leader_epoch(-1)
                    .with_last_fetched_epoch(-1)
                    .with_partition_max_bytes(1 << 20)
            })
            .collect();
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(common::name(topic))
                .with_partitions(partitions)])
    };

    // Nothing to read: the fetch waits out max_wait.
    let started = Instant::now();
    let Some(ResponseKind::Fetch(_)) =
        common::kafka(&address, ApiKey::Fetch, 11, RequestKind::Fetch(fetch(600)))
    else {
        panic!("no fetch answer");
    };
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );

    // A long poll with max_wait 8 s; one record arrives on `busy` after 300 ms.
    let poll_address = address.clone();
    let request = fetch(8_000);
    let poll = std::thread::spawn(move || {
        let started = Instant::now();
        let response = common::kafka(
            &poll_address,
            ApiKey::Fetch,
            11,
            RequestKind::Fetch(request),
        );
        (started.elapsed(), response)
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut batch = tandem_storage::BatchBuilder::new(0);
    batch.push(0, Some(b"k"), Some(b"v"));
    let produce = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(common::name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(busy)
                .with_records(Some(batch.build().freeze()))])]);
    let Some(ResponseKind::Produce(produced)) =
        common::kafka(&address, ApiKey::Produce, 7, RequestKind::Produce(produce))
    else {
        panic!("no produce answer");
    };
    assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);
    let (elapsed, response) = poll.join().unwrap();
    let Some(ResponseKind::Fetch(response)) = response else {
        panic!("no fetch answer");
    };
    assert!(
        elapsed < Duration::from_millis(3_000),
        "the fetch waited {elapsed:?}: the idle partition held back the busy one"
    );
    let partitions = &response.responses[0].partitions;
    let records = |p: i32| {
        partitions
            .iter()
            .find(|d| d.partition_index == p)
            .and_then(|d| d.records.as_ref())
            .map_or(0, |r| r.len())
    };
    assert!(
        records(busy) > 0,
        "the record on partition {busy} is missing"
    );
    assert_eq!(records(idle), 0);
}
