//! What one node shows an operator: Prometheus metrics, the event timeline and the throughput
//! history (docs/observability.md lists every metric).
//!
//! ```text
//!  Node::produce / Node::fetch ──> NodeMetrics (histograms, counters; static registry)
//!  MeteredLog (every replica's Log) ──> StorageMetrics
//!  apply_metadata ──> events::diff ──> EventLog (+ tandem_cluster_events_total)
//!  every second ──> Throughput::sample (per-second deltas, last 5 minutes)
//!  GET /metrics ──> render: static registry + gauges built at scrape time from the node's
//!                  replicas, its committed metadata and its controller voter's counters
//! ```
//!
//! Per-partition gauges are built at each scrape rather than kept in label families, so a
//! deleted partition or a replica moved away disappears from the output at once.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tandem_controller::ControllerNode;

use crate::events::EventLog;
use crate::node::Node;

/// One label, for families keyed by a fixed word (`kind`, `result`).
pub type KindLabel = [(&'static str, &'static str); 1];
type HistogramFamily = Family<KindLabel, Histogram, fn() -> Histogram>;

/// 0.1 ms to about 13 s, doubling: request and disk latencies on one machine and beyond.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// The storage figures every replica's log adds to ([`crate::metered_log::MeteredLog`]).
#[derive(Debug, Clone)]
pub struct StorageMetrics {
    pub append_seconds: Histogram,
    pub flush_seconds: Histogram,
    pub appended_bytes: Counter,
    pub flushed_bytes: Counter,
}

/// The instruments of one node, registered once.
#[derive(Debug, Clone)]
pub struct NodeMetrics {
    pub produce_seconds: Histogram,
    /// By `result`: ok or error.
    pub produce_requests: Family<KindLabel, Counter>,
    pub produce_bytes: Counter,
    pub produce_records: Counter,
    /// By `kind`: consumer or follower. A fetch's time includes its long poll.
    pub fetch_seconds: HistogramFamily,
    pub fetch_bytes: Family<KindLabel, Counter>,
    /// Kafka Fetch requests from followers (one per fetcher round, many partitions each),
    /// and the partitions they named: their ratio is how well fetchers batch.
    pub replica_fetch_requests: Counter,
    pub replica_fetch_partitions: Counter,
    pub storage: StorageMetrics,
    /// Timeline events seen in committed metadata, by `kind` (events.rs).
    pub cluster_events: Family<KindLabel, Counter>,
}

/// How many per-second samples the throughput history keeps (5 minutes).
pub const THROUGHPUT_SECONDS: usize = 300;

/// One second of this node's traffic (deltas of the counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ThroughputSample {
    /// Unix time, seconds, at the end of the second.
    pub unix_s: i64,
    pub produce_records: u64,
    pub produce_bytes: u64,
    pub consumer_fetch_bytes: u64,
    pub follower_fetch_bytes: u64,
}

/// The last [`THROUGHPUT_SECONDS`] seconds of traffic, so that a freshly opened dashboard
/// shows the past minutes.
#[derive(Debug, Default)]
pub struct Throughput {
    /// Counter totals at the last sample, and the samples, oldest first.
    state: Mutex<(ThroughputSample, VecDeque<ThroughputSample>)>,
}

impl Throughput {
    /// Records the traffic since the previous call, given the counters' totals now.
    pub fn sample(&self, unix_s: i64, totals: ThroughputSample) {
        let mut state = self.state.lock();
        let (last, samples) = &mut *state;
        let sample = ThroughputSample {
            unix_s,
            produce_records: totals.produce_records.saturating_sub(last.produce_records),
            produce_bytes: totals.produce_bytes.saturating_sub(last.produce_bytes),
            consumer_fetch_bytes: totals
                .consumer_fetch_bytes
                .saturating_sub(last.consumer_fetch_bytes),
            follower_fetch_bytes: totals
                .follower_fetch_bytes
                .saturating_sub(last.follower_fetch_bytes),
        };
        *last = totals;
        samples.push_back(sample);
        while samples.len() > THROUGHPUT_SECONDS {
            samples.pop_front();
        }
    }

    pub fn samples(&self) -> Vec<ThroughputSample> {
        self.state.lock().1.iter().copied().collect()
    }
}

/// Metrics, timeline and history of one node.
#[derive(Debug)]
pub struct Observability {
    pub metrics: NodeMetrics,
    registry: Registry,
    pub events: EventLog,
    pub throughput: Throughput,
}

impl Default for Observability {
    fn default() -> Self {
        Observability::new()
    }
}

impl Observability {
    pub fn new() -> Observability {
        let metrics = NodeMetrics {
            produce_seconds: latency_histogram(),
            produce_requests: Family::default(),
            produce_bytes: Counter::default(),
            produce_records: Counter::default(),
            fetch_seconds: Family::new_with_constructor(latency_histogram),
            fetch_bytes: Family::default(),
            replica_fetch_requests: Counter::default(),
            replica_fetch_partitions: Counter::default(),
            storage: StorageMetrics {
                append_seconds: latency_histogram(),
                flush_seconds: latency_histogram(),
                appended_bytes: Counter::default(),
                flushed_bytes: Counter::default(),
            },
            cluster_events: Family::default(),
        };
        let mut registry = Registry::default();
        let m = &metrics;
        registry.register(
            "tandem_produce_seconds",
            "Time to answer a produce of one partition on its leader (acks wait included)",
            m.produce_seconds.clone(),
        );
        registry.register(
            "tandem_produce_requests",
            "Produces of one partition answered, by result",
            m.produce_requests.clone(),
        );
        registry.register(
            "tandem_produce_bytes",
            "Record batch bytes produced to this node",
            m.produce_bytes.clone(),
        );
        registry.register(
            "tandem_produce_records",
            "Records produced to this node",
            m.produce_records.clone(),
        );
        registry.register(
            "tandem_fetch_seconds",
            "Time to answer a fetch of one partition (long poll included), by kind",
            m.fetch_seconds.clone(),
        );
        registry.register(
            "tandem_fetch_bytes",
            "Record batch bytes served by fetches, by kind (consumer or follower)",
            m.fetch_bytes.clone(),
        );
        registry.register(
            "tandem_replica_fetch_requests",
            "Fetch requests from followers received (each names many partitions)",
            m.replica_fetch_requests.clone(),
        );
        registry.register(
            "tandem_replica_fetch_partitions",
            "Partitions named by the Fetch requests from followers",
            m.replica_fetch_partitions.clone(),
        );
        registry.register(
            "tandem_storage_append_seconds",
            "Time of one log append (includes the fsync under flush=always)",
            m.storage.append_seconds.clone(),
        );
        registry.register(
            "tandem_storage_flush_seconds",
            "Time of one log flush (fsync): explicit flushes and appends that flushed",
            m.storage.flush_seconds.clone(),
        );
        registry.register(
            "tandem_storage_appended_bytes",
            "Bytes appended to this node's logs",
            m.storage.appended_bytes.clone(),
        );
        registry.register(
            "tandem_storage_flushed_bytes",
            "Appended bytes made durable by a flush",
            m.storage.flushed_bytes.clone(),
        );
        registry.register(
            "tandem_cluster_events",
            "Timeline events this node saw in committed metadata, by kind",
            m.cluster_events.clone(),
        );
        Observability {
            metrics,
            registry,
            events: EventLog::default(),
            throughput: Throughput::default(),
        }
    }

    /// The counter totals the throughput history samples.
    pub fn throughput_totals(&self) -> ThroughputSample {
        let m = &self.metrics;
        // One lookup per statement: the family's read guard lives to the end of the
        // statement, and a second lookup that creates its entry would wait on it forever.
        let bytes_of = |kind| m.fetch_bytes.get(&[("kind", kind)]).map_or(0, |c| c.get());
        let consumer_fetch_bytes = bytes_of("consumer");
        let follower_fetch_bytes = bytes_of("follower");
        ThroughputSample {
            unix_s: 0,
            produce_records: m.produce_records.get(),
            produce_bytes: m.produce_bytes.get(),
            consumer_fetch_bytes,
            follower_fetch_bytes,
        }
    }

    /// Samples the throughput every second until `stop` turns true.
    pub async fn sample_throughput(
        self: std::sync::Arc<Self>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            self.throughput
                .sample(unix_ms() / 1000, self.throughput_totals());
        }
    }
}

/// Wall-clock time, for timestamps operators read (never for protocol decisions).
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `Family` of gauges keyed by owned label lists, built for one scrape.
type Gauges = Family<Vec<(&'static str, String)>, Gauge>;

/// The whole `/metrics` text (Prometheus text format 0.0.4).
pub fn render(node: &Node, voter: Option<&ControllerNode>) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_text::encode(&mut out, &node.observability().registry);
    let _ = prometheus_text::encode(&mut out, &scrape_time_registry(node, voter));
    out
}

/// The gauges and counters read at scrape time.
fn scrape_time_registry(node: &Node, voter: Option<&ControllerNode>) -> Registry {
    let mut registry = Registry::default();
    let (version, metadata) = node.metadata();
    let me = node.node_id();

    let gauge = |registry: &mut Registry, name: &'static str, help: &'static str| {
        let family = Gauges::default();
        registry.register(name, help, family.clone());
        family
    };
    let node_gauges = [
        (
            "tandem_node_metadata_version",
            "Version of the committed metadata this node acts on",
            version as i64,
        ),
        (
            "tandem_node_has_lease",
            "1 while this node holds a valid lease from the controller (rule 8)",
            node.has_lease() as i64,
        ),
        (
            "tandem_node_active_controller",
            "The voter this node believes is the active controller (-1: unknown)",
            node.active_controller().map_or(-1, |c| c as i64),
        ),
    ];
    for (name, help, value) in node_gauges {
        gauge(&mut registry, name, help)
            .get_or_create(&Vec::new())
            .set(value);
    }

    let offsets = [
        (
            "tandem_partition_log_end_offset",
            "LEO of this node's replica",
        ),
        (
            "tandem_partition_high_watermark",
            "HW of this node's replica",
        ),
        (
            "tandem_partition_log_start_offset",
            "First offset kept by this node's replica",
        ),
    ]
    .map(|(name, help)| gauge(&mut registry, name, help));
    let state = [
        (
            "tandem_partition_leader",
            "1 if this node leads the partition in committed metadata",
        ),
        ("tandem_partition_leader_epoch", "Committed leader epoch"),
        ("tandem_partition_isr_size", "Committed ISR size"),
        ("tandem_partition_replicas", "Assigned replicas"),
        (
            "tandem_partition_min_insync_replicas",
            "The topic's min.insync.replicas",
        ),
        (
            "tandem_partition_under_replicated",
            "1 if a replica is out of the ISR",
        ),
        (
            "tandem_partition_under_min_isr",
            "1 if the ISR is below min.insync.replicas (acks=all refused, HW frozen)",
        ),
        (
            "tandem_partition_offline",
            "1 if the partition has no leader",
        ),
        (
            "tandem_partition_recovering",
            "1 after an unclean election, until the leader clears it (possible data loss)",
        ),
    ]
    .map(|(name, help)| gauge(&mut registry, name, help));
    let lag_records = gauge(
        &mut registry,
        "tandem_partition_follower_lag_records",
        "On the leader: its LEO minus the follower's",
    );
    let lag_ms = gauge(
        &mut registry,
        "tandem_partition_follower_lag_ms",
        "On the leader: milliseconds since the follower was last caught up",
    );
    for (tp, stats) in node.replica_stats() {
        let labels = vec![
            ("topic", tp.topic.clone()),
            ("partition", tp.partition.to_string()),
        ];
        let values = [
            stats.log_end_offset.load(Ordering::Relaxed),
            stats.high_watermark.load(Ordering::Relaxed),
            stats.log_start_offset.load(Ordering::Relaxed),
        ];
        for (family, value) in offsets.iter().zip(values) {
            family.get_or_create(&labels).set(value);
        }
        if let Some((topic, partition)) = metadata
            .topic_by_name(&tp.topic)
            .and_then(|t| Some((t, t.partitions.get(tp.partition as usize)?)))
        {
            let min_insync = topic.config.min_insync_replicas as usize;
            let values = [
                (partition.leader == Some(me)) as i64,
                partition.leader_epoch as i64,
                partition.isr.len() as i64,
                partition.replicas.len() as i64,
                min_insync as i64,
                (partition.isr.len() < partition.replicas.len()) as i64,
                (partition.isr.len() < min_insync) as i64,
                partition.leader.is_none() as i64,
                partition.recovering as i64,
            ];
            for (family, value) in state.iter().zip(values) {
                family.get_or_create(&labels).set(value);
            }
        }
        for follower in stats.followers.lock().iter() {
            let mut labels = labels.clone();
            labels.push(("follower", follower.node_id.to_string()));
            if let Some(lag) = follower.lag_records {
                lag_records.get_or_create(&labels).set(lag);
            }
            if let Some(lag) = follower.lag_ms {
                lag_ms.get_or_create(&labels).set(lag);
            }
        }
    }

    if let Some(voter) = voter {
        gauge(
            &mut registry,
            "tandem_controller_active",
            "1 if this node's voter is the active controller",
        )
        .get_or_create(&Vec::new())
        .set(voter.is_active() as i64);
        let c = voter.counters();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let counters = [
            (
                "tandem_controller_became_active",
                "Terms in which this voter became the active controller (controller elections won)",
                load(&c.became_active),
            ),
            (
                "tandem_controller_leader_elections",
                "Partition leaders elected by this controller",
                load(&c.leader_elections),
            ),
            (
                "tandem_controller_partitions_offline",
                "Leader changes that left a partition without a leader",
                load(&c.partitions_offline),
            ),
            (
                "tandem_controller_unclean_elections",
                "Unclean leader elections (possible data loss)",
                load(&c.unclean_elections),
            ),
            (
                "tandem_controller_isr_shrinks",
                "Committed partition changes that removed an ISR member",
                load(&c.isr_shrinks),
            ),
            (
                "tandem_controller_isr_expands",
                "Committed partition changes that added an ISR member",
                load(&c.isr_expands),
            ),
            (
                "tandem_controller_session_expiries",
                "Nodes fenced because their session expired",
                load(&c.fenced_session_expired),
            ),
            (
                "tandem_controller_registrations",
                "Node registrations (new incarnations)",
                load(&c.registrations),
            ),
        ];
        for (name, help, value) in counters {
            let counter = Counter::<u64>::default();
            counter.inc_by(value);
            registry.register(name, help, counter);
        }
        let fencings = Family::<KindLabel, Counter>::default();
        for (reason, value) in [
            ("session_expired", load(&c.fenced_session_expired)),
            ("process_exited", load(&c.fenced_process_exited)),
            ("replaced", load(&c.fenced_replaced)),
        ] {
            fencings.get_or_create(&[("reason", reason)]).inc_by(value);
        }
        registry.register(
            "tandem_controller_fencings",
            "Nodes fenced by this controller, by reason",
            fencings,
        );
    }
    registry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_static_metrics_have_their_names_types_and_labels() {
        let obs = Observability::new();
        obs.metrics.produce_seconds.observe(0.002);
        obs.metrics
            .produce_requests
            .get_or_create(&[("result", "ok")])
            .inc();
        obs.metrics
            .fetch_seconds
            .get_or_create(&[("kind", "follower")])
            .observe(0.2);
        obs.metrics
            .fetch_bytes
            .get_or_create(&[("kind", "consumer")])
            .inc_by(100);
        obs.metrics.storage.flushed_bytes.inc_by(4096);
        obs.metrics
            .cluster_events
            .get_or_create(&[("kind", "isr_shrink")])
            .inc();
        let mut text = String::new();
        prometheus_text::encode(&mut text, &obs.registry).unwrap();
        for line in [
            "# TYPE tandem_produce_seconds histogram",
            "tandem_produce_seconds_count 1",
            "tandem_produce_seconds_bucket{le=\"0.0032\"} 1",
            "# TYPE tandem_produce_requests_total counter",
            "tandem_produce_requests_total{result=\"ok\"} 1",
            "tandem_fetch_seconds_count{kind=\"follower\"} 1",
            "tandem_fetch_bytes_total{kind=\"consumer\"} 100",
            "# TYPE tandem_storage_flush_seconds histogram",
            "tandem_storage_flushed_bytes_total 4096",
            "# TYPE tandem_cluster_events_total counter",
            "tandem_cluster_events_total{kind=\"isr_shrink\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }

    #[test]
    fn throughput_keeps_per_second_deltas_of_the_last_five_minutes() {
        let throughput = Throughput::default();
        let totals = |records, bytes| ThroughputSample {
            produce_records: records,
            produce_bytes: bytes,
            ..ThroughputSample::default()
        };
        throughput.sample(100, totals(10, 1000));
        throughput.sample(101, totals(15, 1500));
        let samples = throughput.samples();
        assert_eq!(samples.len(), 2);
        assert_eq!((samples[1].unix_s, samples[1].produce_records), (101, 5));
        assert_eq!(samples[1].produce_bytes, 500);
        for s in 0..400 {
            throughput.sample(200 + s, totals(15, 1500));
        }
        let samples = throughput.samples();
        assert_eq!(samples.len(), THROUGHPUT_SECONDS);
        assert_eq!(samples[0].unix_s, 200 + 400 - THROUGHPUT_SECONDS as i64);
    }
}
