//! A small in-memory cluster for scenario tests: replicas of one partition, each over the
//! storage crate's [`MemLog`] (which loses exactly what was not flushed when it crashes),
//! a network that delivers only when told to, and a controller that commits metadata at once.
//!
//! A test reads like the protocol:
//! ```
//! use tandem_replication::testkit::Cluster;
//! use tandem_replication::Acks;
//! let mut c = Cluster::new(&[1, 2, 3], 2);
//! let id = c.produce(1, &["a", "b", "c"], Acks::All);
//! c.replicate(2);
//! c.replicate(3);
//! assert!(c.acked(id));
//! assert_eq!(c.hw(1), 3);
//! ```
//! After every step the kit checks, and panics on: each replica's own invariants, that each
//! replica's model matches its log, that a leader's HW never goes back within its epoch, and
//! (unless `check_agreement` is off) that the logs of every two live replicas agree below
//! both their HWs.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use tandem_storage::batch::{decode_records, split_batches};
use tandem_storage::{
    BatchBuilder, CompactionConfig, CompactionReport, Log, LogConfig, ManualClock, MemDir, MemLog,
    SegmentedLog,
};

use crate::driver;
use crate::error::{IsrChangeError, ProduceError, ReadError};
use crate::event::{Action, Event};
use crate::replica::{Replica, RoleKind};
use crate::types::{
    Acks, Durability, FetchData, FetchId, FetchRequest, IsrState, NodeId, PartitionState,
    ProduceOk, ProduceRequest, ReplicaConfig, RequestId,
};

#[derive(Debug, Clone)]
enum Message {
    Fetch {
        from: NodeId,
        to: NodeId,
        fetch_id: FetchId,
        request: FetchRequest,
    },
    FetchResponse {
        from: NodeId,
        to: NodeId,
        fetch_id: FetchId,
        response: Result<FetchData<Bytes>, ReadError>,
    },
    FlushReport {
        from: NodeId,
        to: NodeId,
        leader_epoch: i32,
        flushed_offset: i64,
    },
}

impl Message {
    fn endpoints(&self) -> (NodeId, NodeId) {
        match self {
            Message::Fetch { from, to, .. }
            | Message::FetchResponse { from, to, .. }
            | Message::FlushReport { from, to, .. } => (*from, *to),
        }
    }
}

struct Node {
    dir: MemDir,
    log: MemLog,
    replica: Replica,
    up: bool,
    /// Cut off from the other replicas (not from the controller or clients).
    isolated: bool,
}

/// Where a fetch the kit handed to a leader came from, so that its answer finds its way back.
struct FetchRoute {
    follower: NodeId,
    leader: NodeId,
    fetch_id: FetchId,
}

pub struct Cluster {
    now_ms: i64,
    /// Time between ticks in [`Cluster::advance`].
    pub tick_ms: i64,
    config: ReplicaConfig,
    log_config: LogConfig,
    clock: Arc<ManualClock>,
    nodes: BTreeMap<NodeId, Node>,
    /// The controller's committed view of the partition.
    partition: PartitionState,
    /// When set, ISR proposals wait in `held_isr_change` until the test decides.
    pub hold_isr_changes: bool,
    held_isr_change: Option<(NodeId, i32, i32, Vec<NodeId>)>,
    network: VecDeque<Message>,
    /// Events for nodes, processed in order (completions, controller answers, metadata).
    local: VecDeque<(NodeId, Event)>,
    next_request_id: u64,
    routes: BTreeMap<RequestId, FetchRoute>,
    produced: BTreeMap<RequestId, (NodeId, Acks, Vec<String>)>,
    results: BTreeMap<RequestId, Result<ProduceOk, ProduceError>>,
    isr_proposals: Vec<(NodeId, Vec<NodeId>)>,
    truncations: BTreeMap<NodeId, Vec<i64>>,
    /// Highest HW each leader epoch's leader has shown: it must never go back.
    leader_high_watermarks: BTreeMap<i32, i64>,
    /// Check that live replicas agree below their HWs after every step. Off only for
    /// scenarios that lose committed data on purpose (every replica crashing unflushed).
    pub check_agreement: bool,
    trace: Vec<String>,
}

/// Longer than replica.lag.time.max, so that an ISR shrink comes before a produce's timeout.
pub const PRODUCE_TIMEOUT_MS: i64 = 60_000;

fn new_log(dir: &MemDir, config: &LogConfig, clock: &Arc<ManualClock>) -> MemLog {
    SegmentedLog::open(dir.clone(), config.clone(), clock.clone()).expect("an in-memory log opens")
}

impl Cluster {
    /// Replicas `replicas` with empty logs; the first leads epoch 0 with every replica in
    /// the ISR. Kafka's settings, except that a fetch with no answer is retried after 1 s.
    pub fn new(replicas: &[NodeId], min_insync_replicas: usize) -> Cluster {
        let config = ReplicaConfig {
            replica_fetch_timeout_ms: 1_000,
            ..ReplicaConfig::default()
        };
        Cluster::with_config(replicas, min_insync_replicas, config)
    }

    pub fn with_config(
        replicas: &[NodeId],
        min_insync_replicas: usize,
        config: ReplicaConfig,
    ) -> Cluster {
        let log_config = LogConfig {
            max_batch_bytes: config.max_batch_bytes,
            ..LogConfig::default()
        };
        Cluster::with_log_config(replicas, min_insync_replicas, config, log_config)
    }

    /// With these log settings on every replica (small segments, for compaction).
    pub fn with_log_config(
        replicas: &[NodeId],
        min_insync_replicas: usize,
        config: ReplicaConfig,
        log_config: LogConfig,
    ) -> Cluster {
        let clock = Arc::new(ManualClock::new(0));
        let nodes = replicas
            .iter()
            .map(|&n| {
                let dir = MemDir::new();
                let log = new_log(&dir, &log_config, &clock);
                let (model, high_watermark) = driver::recover(&log).expect("recover");
                let replica = Replica::new(n, config.clone(), model, high_watermark);
                (
                    n,
                    Node {
                        dir,
                        log,
                        replica,
                        up: true,
                        isolated: false,
                    },
                )
            })
            .collect();
        let partition = PartitionState {
            leader: replicas.first().copied(),
            leader_epoch: 0,
            partition_epoch: 0,
            isr: replicas.to_vec(),
            replicas: replicas.to_vec(),
            min_insync_replicas,
        };
        let mut cluster = Cluster {
            now_ms: 0,
            tick_ms: 100,
            config,
            log_config,
            clock,
            nodes,
            partition,
            hold_isr_changes: false,
            held_isr_change: None,
            network: VecDeque::new(),
            local: VecDeque::new(),
            next_request_id: 0,
            routes: BTreeMap::new(),
            produced: BTreeMap::new(),
            results: BTreeMap::new(),
            isr_proposals: Vec::new(),
            truncations: BTreeMap::new(),
            leader_high_watermarks: BTreeMap::new(),
            check_agreement: true,
            trace: Vec::new(),
        };
        cluster.broadcast_metadata();
        cluster
    }

    // ---- clients ----

    /// Produces one batch holding `values` to `node`, with replicated durability.
    pub fn produce(&mut self, node: NodeId, values: &[&str], acks: Acks) -> RequestId {
        self.submit(node, None, values, acks, Durability::Replicated)
    }

    pub fn produce_flushed(&mut self, node: NodeId, values: &[&str], acks: Acks) -> RequestId {
        self.submit(node, None, values, acks, Durability::Flushed)
    }

    /// Produces as idempotent producer `producer_id` with `producer_epoch`, first sequence
    /// `sequence`.
    pub fn produce_idempotent(
        &mut self,
        node: NodeId,
        (producer_id, producer_epoch, sequence): (i64, i16, i32),
        values: &[&str],
        acks: Acks,
    ) -> RequestId {
        self.submit(
            node,
            Some((producer_id, producer_epoch, sequence)),
            values,
            acks,
            Durability::Replicated,
        )
    }

    /// Writes to a key-value table on `node`: each `(key, Some(value))` is a put, each
    /// `(key, None)` a delete (a tombstone), stamped with the cluster's time.
    pub fn put(&mut self, node: NodeId, records: &[(&str, Option<&str>)], acks: Acks) -> RequestId {
        let mut builder = BatchBuilder::new(self.now_ms);
        for (key, value) in records {
            builder.push(self.now_ms, Some(key.as_bytes()), value.map(str::as_bytes));
        }
        let values: Vec<&str> = records.iter().map(|(_, v)| v.unwrap_or("")).collect();
        self.submit_batch(node, builder, &values, acks, Durability::Replicated)
    }

    /// Compacts `node`'s log below its HW, as the runtime's background compaction does, and
    /// tells its replica the new horizon ([`Event::Compacted`]). Compacted logs agree as
    /// tables, not byte for byte, so the byte comparison below HWs is off from here on
    /// (compare [`Cluster::table`]s instead).
    pub fn compact(&mut self, node: NodeId, config: &CompactionConfig) -> CompactionReport {
        self.check_agreement = false;
        let high_watermark = self.hw(node);
        let log = &self.node(node).log;
        let report = log
            .compact(high_watermark, self.now_ms, config)
            .expect("compaction of an in-memory log");
        let compaction_horizon = log.compaction_horizon();
        self.trace.push(format!(
            "{} compact {node} below {high_watermark}: horizon {compaction_horizon}",
            self.now_ms
        ));
        self.step(node, Event::Compacted { compaction_horizon });
        report
    }

    /// The key-value table `node` exposes: its records below its HW applied in order, a
    /// tombstone deleting its key.
    pub fn table(&self, node: NodeId) -> BTreeMap<String, String> {
        let high_watermark = self.hw(node);
        let mut table = BTreeMap::new();
        for batch in Self::batches(&self.node(node).log, high_watermark) {
            let header = tandem_storage::batch::validate(&batch).expect("stored batches are valid");
            for record in decode_records(&batch).expect("stored batches decode") {
                if header.base_offset + record.offset_delta as i64 >= high_watermark {
                    break;
                }
                let Some(key) = record.key else { continue };
                let key = String::from_utf8_lossy(&key).into_owned();
                match record.value {
                    Some(v) => table.insert(key, String::from_utf8_lossy(&v).into_owned()),
                    None => table.remove(&key),
                };
            }
        }
        table
    }

    fn submit(
        &mut self,
        node: NodeId,
        producer: Option<(i64, i16, i32)>,
        values: &[&str],
        acks: Acks,
        durability: Durability,
    ) -> RequestId {
        let mut builder = BatchBuilder::new(self.now_ms);
        if let Some((id, epoch, sequence)) = producer {
            builder = builder.producer(id, epoch, sequence);
        }
        for v in values {
            builder.push(self.now_ms, None, Some(v.as_bytes()));
        }
        self.submit_batch(node, builder, values, acks, durability)
    }

    fn submit_batch(
        &mut self,
        node: NodeId,
        builder: BatchBuilder,
        values: &[&str],
        acks: Acks,
        durability: Durability,
    ) -> RequestId {
        let id = self.new_request_id();
        self.produced.insert(
            id,
            (node, acks, values.iter().map(|v| v.to_string()).collect()),
        );
        self.step(
            node,
            Event::Produce {
                id,
                request: ProduceRequest {
                    acks,
                    durability,
                    timeout_ms: PRODUCE_TIMEOUT_MS,
                    current_leader_epoch: None,
                    records: builder.build(),
                },
            },
        );
        id
    }

    /// The produce's answer, if it has one yet.
    pub fn result(&self, id: RequestId) -> Option<&Result<ProduceOk, ProduceError>> {
        self.results.get(&id)
    }

    /// The produce was acknowledged.
    pub fn acked(&self, id: RequestId) -> bool {
        matches!(self.results.get(&id), Some(Ok(_)))
    }

    /// The offset a produce was acknowledged at.
    pub fn acked_offset(&self, id: RequestId) -> Option<i64> {
        match self.results.get(&id) {
            Some(Ok(ok)) => Some(ok.base_offset),
            _ => None,
        }
    }

    // ---- network and time ----

    /// Delivers every message in flight, and every message that causes, until none is left
    /// (parked fetches stay parked).
    pub fn settle(&mut self) {
        let mut budget = 100_000;
        while let Some(m) = self.network.pop_front() {
            budget -= 1;
            assert!(
                budget > 0,
                "the network never settles:\n{}",
                self.trace_tail()
            );
            self.deliver(m);
        }
    }

    /// Delivers the messages to and from `node` until none is left: it catches up with the
    /// leader and learns its HW, or parks its fetch.
    pub fn replicate(&mut self, node: NodeId) {
        let mut budget = 10_000;
        while self.deliver_first(|m| {
            let (from, to) = m.endpoints();
            from == node || to == node
        }) {
            budget -= 1;
            assert!(
                budget > 0,
                "replication never settles:\n{}",
                self.trace_tail()
            );
        }
    }

    /// One fetch round trip of `node`: its fetch reaches the leader, and the answer (if the
    /// leader does not park it) comes back. Its next fetch stays in flight.
    pub fn fetch_once(&mut self, node: NodeId) {
        self.deliver_first(|m| matches!(m, Message::Fetch { from, .. } if *from == node));
        self.deliver_first(|m| matches!(m, Message::FetchResponse { to, .. } if *to == node));
    }

    /// Delivers the follower's fetch to the leader only; the answer stays in flight.
    pub fn deliver_fetch(&mut self, node: NodeId) {
        self.deliver_first(|m| matches!(m, Message::Fetch { from, .. } if *from == node));
    }

    /// Delivers the answer in flight to `node`, if any.
    pub fn deliver_fetch_response(&mut self, node: NodeId) {
        self.deliver_first(|m| matches!(m, Message::FetchResponse { to, .. } if *to == node));
    }

    fn deliver_first(&mut self, pick: impl Fn(&Message) -> bool) -> bool {
        let Some(i) = self.network.iter().position(pick) else {
            return false;
        };
        if let Some(m) = self.network.remove(i) {
            self.deliver(m);
        }
        true
    }

    /// Lets `ms` pass in ticks of `tick_ms`, delivering every message after each tick.
    pub fn advance(&mut self, ms: i64) {
        let end = self.now_ms + ms;
        while self.now_ms < end {
            self.now_ms = (self.now_ms + self.tick_ms).min(end);
            self.clock.set(self.now_ms);
            let up: Vec<NodeId> = self.up_nodes();
            for n in up {
                self.step(n, Event::Tick);
            }
            self.settle();
        }
    }

    /// Lets `ms` pass with ticks but no deliveries.
    pub fn advance_without_network(&mut self, ms: i64) {
        let end = self.now_ms + ms;
        while self.now_ms < end {
            self.now_ms = (self.now_ms + self.tick_ms).min(end);
            self.clock.set(self.now_ms);
            for n in self.up_nodes() {
                self.step(n, Event::Tick);
            }
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    // ---- faults ----

    /// Kills `node`: it loses everything it had not flushed, and its connections close.
    pub fn crash(&mut self, node: NodeId) {
        let n = self.node_mut(node);
        n.up = false;
        n.dir.crash_clean_cut();
        self.trace.push(format!("{} crash {node}", self.now_ms));
        self.drop_connections(node);
    }

    /// Shuts `node` down cleanly: its log is flushed first, so it loses nothing.
    pub fn stop(&mut self, node: NodeId) {
        let n = self.node_mut(node);
        let _ = n.log.flush();
        n.up = false;
        self.trace.push(format!("{} stop {node}", self.now_ms));
        self.drop_connections(node);
    }

    /// The operating system writes `node`'s log to disk (the replica is not told).
    pub fn flush(&mut self, node: NodeId) {
        let _ = self.node(node).log.flush();
    }

    /// Brings a crashed node back: it recovers its log and learns the current metadata.
    pub fn restart(&mut self, node: NodeId) {
        let log_config = self.log_config.clone();
        let clock = self.clock.clone();
        let config = self.config.clone();
        let n = self.node_mut(node);
        n.log = new_log(&n.dir, &log_config, &clock);
        let (model, high_watermark) = driver::recover(&n.log).expect("recover");
        n.replica = Replica::new(node, config, model, high_watermark);
        n.up = true;
        self.trace.push(format!("{} restart {node}", self.now_ms));
        let partition = self.partition.clone();
        self.step(node, Event::Metadata(partition));
    }

    /// Cuts `node` off from the other replicas; messages to and from it are lost.
    pub fn isolate(&mut self, node: NodeId) {
        self.node_mut(node).isolated = true;
    }

    pub fn heal(&mut self, node: NodeId) {
        self.node_mut(node).isolated = false;
    }

    fn drop_connections(&mut self, node: NodeId) {
        let mut failed = Vec::new();
        self.network.retain(|m| {
            let (from, to) = m.endpoints();
            if from != node && to != node {
                return true;
            }
            match m {
                Message::Fetch { from, fetch_id, .. } => failed.push((*from, *fetch_id)),
                Message::FetchResponse { to, fetch_id, .. } => failed.push((*to, *fetch_id)),
                Message::FlushReport { .. } => {}
            }
            false
        });
        let routes: Vec<RequestId> = self
            .routes
            .iter()
            .filter(|(_, r)| r.leader == node || r.follower == node)
            .map(|(id, _)| *id)
            .collect();
        for id in routes {
            if let Some(r) = self.routes.remove(&id) {
                failed.push((r.follower, r.fetch_id));
            }
        }
        for (follower, fetch_id) in failed {
            if follower != node {
                self.local
                    .push_back((follower, Event::FetchFailed { fetch_id }));
            }
        }
        self.drain_local();
    }

    // ---- controller ----

    /// Makes `leader` the leader of a new epoch, keeping the ISR.
    pub fn elect(&mut self, leader: NodeId) {
        let isr = self.partition.isr.clone();
        self.elect_with_isr(leader, &isr);
    }

    pub fn elect_with_isr(&mut self, leader: NodeId, isr: &[NodeId]) {
        self.partition.leader = Some(leader);
        self.partition.leader_epoch += 1;
        self.partition.partition_epoch += 1;
        self.partition.isr = isr.to_vec();
        self.trace.push(format!(
            "{} elect {leader} epoch {} isr {isr:?}",
            self.now_ms, self.partition.leader_epoch
        ));
        self.broadcast_metadata();
    }

    /// The controller's clean election (DESIGN.md rule 7): fence the nodes that are down (out
    /// of the ISR), then elect the live ISR member with the highest LEO, lowest id on a tie,
    /// preferring anyone but the current leader. Returns the new leader, if any.
    pub fn fail_over(&mut self) -> Option<NodeId> {
        let isr: Vec<NodeId> = self
            .partition
            .isr
            .iter()
            .copied()
            .filter(|n| self.nodes.get(n).is_some_and(|node| node.up))
            .collect();
        let current = self.partition.leader;
        let leader = isr
            .iter()
            .copied()
            .filter(|n| Some(*n) != current || isr.len() == 1)
            .max_by_key(|n| (self.leo(*n), -n))?;
        self.elect_with_isr(leader, &isr);
        Some(leader)
    }

    /// The controller changes the ISR itself (as when it fences a dead node).
    pub fn set_isr(&mut self, isr: &[NodeId]) {
        self.partition.isr = isr.to_vec();
        self.partition.partition_epoch += 1;
        self.broadcast_metadata();
    }

    /// Commits the held ISR proposal (see `hold_isr_changes`).
    pub fn commit_held_isr_change(&mut self) {
        if let Some((from, leader_epoch, partition_epoch, isr)) = self.held_isr_change.take() {
            self.alter_partition(from, leader_epoch, partition_epoch, isr);
        }
    }

    /// Every ISR proposal so far, with its proposer.
    pub fn isr_proposals(&self) -> &[(NodeId, Vec<NodeId>)] {
        &self.isr_proposals
    }

    /// The offsets `node` truncated its log to, in order.
    pub fn truncations(&self, node: NodeId) -> &[i64] {
        self.truncations.get(&node).map_or(&[], |t| t.as_slice())
    }

    /// The ISR as the controller committed it.
    pub fn isr(&self) -> &[NodeId] {
        &self.partition.isr
    }

    pub fn leader_epoch(&self) -> i32 {
        self.partition.leader_epoch
    }

    fn alter_partition(
        &mut self,
        from: NodeId,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<NodeId>,
    ) {
        let p = &self.partition;
        let result = if p.leader != Some(from) || leader_epoch != p.leader_epoch {
            Err(IsrChangeError::FencedLeaderEpoch)
        } else if partition_epoch != p.partition_epoch {
            Err(IsrChangeError::InvalidUpdateVersion)
        } else if !isr.contains(&from) {
            Err(IsrChangeError::InvalidRequest)
        } else if isr
            .iter()
            .any(|r| !p.isr.contains(r) && !self.nodes.get(r).is_some_and(|n| n.up))
        {
            // Only live nodes may join (DESIGN.md rule 5).
            Err(IsrChangeError::IneligibleReplica)
        } else {
            Ok(())
        };
        let result = result.map(|()| {
            self.partition.isr = isr;
            self.partition.partition_epoch += 1;
            IsrState {
                leader_epoch: self.partition.leader_epoch,
                partition_epoch: self.partition.partition_epoch,
                isr: self.partition.isr.clone(),
            }
        });
        let committed = result.is_ok();
        self.local.push_back((from, Event::IsrChangeResult(result)));
        if committed {
            self.broadcast_metadata();
        } else {
            self.drain_local();
        }
    }

    fn broadcast_metadata(&mut self) {
        for n in self.up_nodes() {
            self.local
                .push_back((n, Event::Metadata(self.partition.clone())));
        }
        self.drain_local();
    }

    // ---- inspection ----

    pub fn replica(&self, node: NodeId) -> &Replica {
        &self.node(node).replica
    }
    pub fn hw(&self, node: NodeId) -> i64 {
        self.replica(node).high_watermark()
    }
    pub fn leo(&self, node: NodeId) -> i64 {
        self.node(node).log.log_end_offset()
    }
    pub fn role(&self, node: NodeId) -> RoleKind {
        self.replica(node).role()
    }

    /// The record values in `node`'s log, in offset order from its start.
    pub fn values(&self, node: NodeId) -> Vec<String> {
        let log = &self.node(node).log;
        let end = log.log_end_offset();
        Self::batches(log, end)
            .iter()
            .flat_map(|b| decode_records(b).expect("stored batches decode"))
            .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or(b"")).into_owned())
            .collect()
    }

    /// The values below `node`'s HW: what it may expose.
    pub fn committed_values(&self, node: NodeId) -> Vec<String> {
        let mut values = self.values(node);
        values.truncate(self.hw(node) as usize);
        values
    }

    /// Checks that every acknowledged acks=all produce is in `node`'s log at its offset.
    pub fn assert_acked_writes_in(&self, node: NodeId) {
        let values = self.values(node);
        for (id, result) in &self.results {
            let (Ok(ok), Some((_, Acks::All, produced))) = (result, self.produced.get(id)) else {
                continue;
            };
            for (i, v) in produced.iter().enumerate() {
                let offset = ok.base_offset as usize + i;
                assert_eq!(
                    values.get(offset),
                    Some(v),
                    "acked write {v:?} at offset {offset} is missing on node {node}"
                );
            }
        }
    }

    /// The last events and actions, for a failing test's message.
    pub fn trace_tail(&self) -> String {
        let from = self.trace.len().saturating_sub(60);
        self.trace[from..].join("\n")
    }

    // ---- the driver ----

    fn step(&mut self, node: NodeId, event: Event) {
        self.local.push_back((node, event));
        self.drain_local();
    }

    fn drain_local(&mut self) {
        while let Some((n, event)) = self.local.pop_front() {
            let now = self.now_ms;
            let Some(node) = self.nodes.get_mut(&n) else {
                continue;
            };
            if !node.up {
                continue;
            }
            if !matches!(event, Event::Tick) {
                self.trace.push(format!("{now} n{n} <- {}", short(&event)));
            }
            let actions = node.replica.step(now, event);
            for action in actions {
                self.trace.push(format!("{now} n{n} -> {}", short(&action)));
                self.perform(n, action);
            }
        }
        self.check_invariants();
    }

    fn perform(&mut self, n: NodeId, action: Action) {
        let node = self.node(n);
        if let Some(event) = driver::perform(&node.log, &action) {
            self.local.push_back((n, event));
        }
        match action {
            Action::SendFetch {
                to,
                fetch_id,
                request,
            } => self.send(Message::Fetch {
                from: n,
                to,
                fetch_id,
                request,
            }),
            Action::SendFlushReport {
                to,
                leader_epoch,
                flushed_offset,
            } => self.send(Message::FlushReport {
                from: n,
                to,
                leader_epoch,
                flushed_offset,
            }),
            Action::RespondFetch { id, result } => {
                let Some(route) = self.routes.remove(&id) else {
                    return; // a consumer fetch: nobody to tell in this kit
                };
                let log = &self.node(n).log;
                let response = result.and_then(|data| {
                    let bytes = driver::read_range(log, data.records)
                        .map_err(|e| ReadError::Storage(e.to_string()))?;
                    Ok(data.with_records(bytes))
                });
                self.send(Message::FetchResponse {
                    from: n,
                    to: route.follower,
                    fetch_id: route.fetch_id,
                    response,
                });
            }
            Action::CompleteProduce { id, result } => {
                self.results.insert(id, result);
            }
            Action::ProposeIsr {
                leader_epoch,
                partition_epoch,
                isr,
            } => {
                self.isr_proposals.push((n, isr.clone()));
                if self.hold_isr_changes {
                    self.held_isr_change = Some((n, leader_epoch, partition_epoch, isr));
                } else {
                    self.alter_partition(n, leader_epoch, partition_epoch, isr);
                }
            }
            Action::HighWatermarkAdvanced { high_watermark } => {
                // What a replica announces as committed must agree with the others right now,
                // before any action after this one (a truncation) could hide the difference.
                if self.check_agreement {
                    self.check_exposed(n, high_watermark);
                }
                let _ = self.node(n).log.checkpoint_high_watermark(high_watermark);
            }
            Action::RefreshMetadata => {
                self.local
                    .push_back((n, Event::Metadata(self.partition.clone())));
            }
            Action::Truncate { offset } => {
                self.truncations.entry(n).or_default().push(offset);
            }
            Action::Append { .. } | Action::TruncateFullyAndStartAt { .. } | Action::Flush => {}
        }
    }

    fn reachable(&self, m: &Message) -> bool {
        let (from, to) = m.endpoints();
        let ok = |n: NodeId| self.nodes.get(&n).is_some_and(|n| n.up && !n.isolated);
        ok(from) && ok(to)
    }

    /// Queues a message, or loses it if either end is cut off now.
    fn send(&mut self, m: Message) {
        if self.reachable(&m) {
            self.network.push_back(m);
        } else {
            let (from, to) = m.endpoints();
            self.trace
                .push(format!("{} lost {from}->{to}", self.now_ms));
        }
    }

    fn deliver(&mut self, m: Message) {
        if !self.reachable(&m) {
            let (from, to) = m.endpoints();
            self.trace
                .push(format!("{} lost {from}->{to}", self.now_ms));
            return; // lost: the sender finds out by its timeout
        }
        match m {
            Message::Fetch {
                from,
                to,
                fetch_id,
                request,
            } => {
                let id = self.new_request_id();
                self.routes.insert(
                    id,
                    FetchRoute {
                        follower: from,
                        leader: to,
                        fetch_id,
                    },
                );
                self.step(to, Event::Fetch { id, request });
            }
            Message::FetchResponse {
                to,
                fetch_id,
                response,
                ..
            } => self.step(to, Event::FetchResponse { fetch_id, response }),
            Message::FlushReport {
                from,
                to,
                leader_epoch,
                flushed_offset,
            } => self.step(
                to,
                Event::FlushReport {
                    replica_id: from,
                    leader_epoch,
                    flushed_offset,
                },
            ),
        }
    }

    fn check_invariants(&mut self) {
        for (&n, node) in &self.nodes {
            if !node.up {
                continue;
            }
            let model = node.replica.local_log();
            if model.pending_end_offset() == model.log_end_offset() {
                assert_eq!(
                    model.log_end_offset(),
                    node.log.log_end_offset(),
                    "node {n}: model LEO differs from the log's\n{}",
                    self.trace_tail()
                );
                assert_eq!(
                    model.epochs().entries(),
                    node.log.epochs().as_slice(),
                    "node {n}: model epochs differ from the log's\n{}",
                    self.trace_tail()
                );
                assert_eq!(model.log_start_offset(), node.log.log_start_offset());
            }
            if node.replica.role() == RoleKind::Leader {
                let epoch = node.replica.leader_epoch();
                let seen = self.leader_high_watermarks.entry(epoch).or_insert(i64::MIN);
                assert!(
                    node.replica.high_watermark() >= *seen,
                    "node {n}: leader HW went back in epoch {epoch}"
                );
                *seen = node.replica.high_watermark();
            }
        }
        if self.check_agreement {
            self.check_committed_prefixes_agree();
        }
    }

    /// `node` announced `high_watermark`: its log below it agrees with every live replica's
    /// log below that replica's HW.
    fn check_exposed(&self, node: NodeId, high_watermark: i64) {
        let mine = Self::batches(&self.node(node).log, high_watermark);
        for (&other, n) in &self.nodes {
            if other == node || !n.up {
                continue;
            }
            let theirs = Self::batches(&n.log, n.replica.high_watermark());
            for (x, y) in mine.iter().zip(&theirs) {
                assert_eq!(
                    x,
                    y,
                    "node {node} announced HW {high_watermark} over data node {other} does not have\n{}",
                    self.trace_tail()
                );
            }
        }
    }

    /// Logs agree below HW: any two live replicas hold the same batches below both HWs.
    fn check_committed_prefixes_agree(&self) {
        let live: Vec<(NodeId, Vec<Bytes>)> = self
            .nodes
            .iter()
            .filter(|(_, node)| node.up)
            .map(|(&n, node)| (n, Self::batches(&node.log, node.replica.high_watermark())))
            .collect();
        for (i, (a, batches_a)) in live.iter().enumerate() {
            for (b, batches_b) in &live[i + 1..] {
                for (x, y) in batches_a.iter().zip(batches_b) {
                    assert_eq!(
                        x,
                        y,
                        "nodes {a} and {b} disagree below their HWs\n{}",
                        self.trace_tail()
                    );
                }
            }
        }
    }

    /// The whole batches of `log` that end below `end`.
    fn batches(log: &MemLog, end: i64) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        while offset < end {
            let Ok(bytes) = log.read(offset, 1 << 20) else {
                break;
            };
            let before = offset;
            for (header, raw) in split_batches(&bytes).map_while(Result::ok) {
                if header.last_offset() >= end {
                    return out;
                }
                offset = header.next_offset();
                out.push(bytes.slice_ref(raw));
            }
            if offset == before {
                break;
            }
        }
        out
    }

    fn new_request_id(&mut self) -> RequestId {
        self.next_request_id += 1;
        RequestId(self.next_request_id)
    }

    fn up_nodes(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.up)
            .map(|(&id, _)| id)
            .collect()
    }

    fn node(&self, node: NodeId) -> &Node {
        self.nodes
            .get(&node)
            .unwrap_or_else(|| panic!("no node {node}"))
    }

    fn node_mut(&mut self, node: NodeId) -> &mut Node {
        self.nodes
            .get_mut(&node)
            .unwrap_or_else(|| panic!("no node {node}"))
    }
}

/// An event or action for the trace, without the record bytes.
fn short(x: &impl std::fmt::Debug) -> String {
    let s = format!("{x:?}");
    match s.find("records: ").or_else(|| s.find("batches: ")) {
        Some(i) => format!("{}…", &s[..i + 9]),
        None => s,
    }
}
