//! One Tandem node: its controller voter (if it is one), its session with the active
//! controller, the committed metadata it acts on, and its partition replicas.
//!
//! ```text
//!  controller quorum ──FetchMetadata (long poll)──> apply_metadata ──> PartitionHandle::send(Metadata)
//!        ^  ^                                                   └──> start / stop replicas
//!        │  └──Heartbeat (LEOs) every heartbeat_interval_ms ──> lease (rule 8), fenced? register again
//!        └────Register (new incarnation per process)
//!  partitions ──Outbound──> dispatch ──> peers (replica fetch, flush report) / controller (AlterPartition)
//! ```
//!
//! Everything that crosses the network goes through [`Peers`], so that tests can run many
//! nodes in one process and the server can carry the same calls over TCP.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tandem_controller::model::{Endpoint, PartitionIndex};
use tandem_controller::{
    AlterPartitionRequest, ControllerError, ControllerRequest, ControllerResponse,
    CreateTopicRequest, HeartbeatRequest, IsrMember, LeaderLease, Metadata, NodeStatus,
    RegisterRequest, ReplicaLeo, TopicId,
};
use tandem_replication::types::{
    FetchData, FetchRequest, IsrState, NodeId, PartitionState, ProduceOk, ProduceRequest,
    ReplicaConfig,
};
use tandem_replication::{IsrChangeError, ProduceError, ReadError};
use tandem_storage::{DiskLog, Log, LogConfig};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::partition::{
    Input, OffsetQuery, Outbound, PartitionHandle, PartitionStats, TopicPartition,
};
use crate::table::{ReadAnswer, TableQuery, TableReadError, TableWrite, TableWriteError, Written};

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Why a call to another node got no answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("node at {address} unreachable: {reason}")]
pub struct Unreachable {
    pub address: String,
    pub reason: String,
}

/// The calls a node makes to other nodes. The server implements them over TCP with Tandem's
/// API key; tests wire nodes together in memory.
pub trait Peers: Send + Sync + 'static {
    /// One replica Fetch of many partitions (a fetcher's, fetcher.rs): an answer per
    /// partition, in order, or `Unreachable` when the leader could not be asked at all.
    fn replica_fetch(
        &self,
        address: String,
        partitions: Vec<(TopicPartition, FetchRequest)>,
    ) -> BoxFuture<Result<Vec<crate::fetcher::PartitionAnswer>, Unreachable>>;
    fn flush_report(
        &self,
        address: String,
        partition: TopicPartition,
        replica_id: NodeId,
        leader_epoch: i32,
        flushed_offset: i64,
    ) -> BoxFuture<Result<(), Unreachable>>;
    fn controller(
        &self,
        address: String,
        request: ControllerRequest,
    ) -> BoxFuture<Result<ControllerResponse, Unreachable>>;
}

/// A replica fetch that failed: the leader said why, or it could not be reached.
#[derive(Debug, Clone)]
pub enum FetchFailure {
    Refused(ReadError),
    Unreachable(Unreachable),
}

/// Settings of one node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: NodeId,
    /// host:port clients and peers use to reach this node.
    pub advertised_address: String,
    pub data_dir: PathBuf,
    /// The controller voters, id -> host:port. Every node knows them; a node among them runs
    /// a voter.
    pub voters: BTreeMap<u64, String>,
    pub replica: ReplicaConfig,
    /// Long-poll wait for metadata.
    pub metadata_wait_ms: u32,
    /// Pause before retrying a controller call that found no active controller.
    pub controller_retry_ms: u64,
    /// host:port of this node's admin HTTP listener, registered so that `tandem status` and
    /// dashboards find every node's (docs/observability.md).
    pub admin_address: Option<String>,
    /// How often table partitions are compacted (on a thread of their own).
    pub compaction_interval: Duration,
    /// One fetcher per leader node, batching every partition fetched from it (fetcher.rs);
    /// false: one Fetch per partition, for benchmarks (`TANDEM_REPLICA_FETCH_PER_PARTITION`).
    pub replica_fetch_batching: bool,
}

impl NodeConfig {
    pub fn new(
        node_id: NodeId,
        advertised_address: String,
        data_dir: PathBuf,
        voters: BTreeMap<u64, String>,
    ) -> NodeConfig {
        NodeConfig {
            node_id,
            advertised_address,
            data_dir,
            voters,
            replica: ReplicaConfig {
                // On one machine's loopback a follower that misses a few fetches is gone:
                // fail over fast (Kafka's 30 s default is tuned for data centres).
                replica_lag_time_max_ms: 2_000,
                replica_fetch_wait_max_ms: 200,
                replica_fetch_backoff_ms: 50,
                replica_fetch_timeout_ms: 2_000,
                isr_change_backoff_ms: 100,
                ..ReplicaConfig::default()
            },
            metadata_wait_ms: 1_000,
            controller_retry_ms: 50,
            admin_address: None,
            compaction_interval: Duration::from_secs(30),
            replica_fetch_batching: crate::fetcher::batching_from_env(),
        }
    }
}

struct Session {
    incarnation: Option<u64>,
    lease: LeaderLease,
    heartbeat_interval_ms: i64,
    /// Controlled shutdown asked for: heartbeats say so until the controller has moved every
    /// leadership away.
    want_shutdown: bool,
    shutdown_ready: bool,
}

struct Replica {
    handle: PartitionHandle,
    topic_id: TopicId,
    index: PartitionIndex,
    /// The last partition state given to the core, to skip repeats.
    applied: Option<(i32, i32)>,
}

/// One running node.
pub struct Node {
    config: NodeConfig,
    /// What registration reports about this node's past (clean stop, lost data).
    local_state: crate::local_state::LocalState,
    /// Registered at least once in this process: a clean stop may then claim "clean".
    registered_once: std::sync::atomic::AtomicBool,
    peers: Arc<dyn Peers>,
    process_id: u128,
    started: Instant,
    session: Mutex<Session>,
    metadata: RwLock<(u64, Arc<Metadata>)>,
    replicas: RwLock<BTreeMap<TopicPartition, Replica>>,
    outbound: mpsc::UnboundedSender<Outbound>,
    /// The fetchers' task (fetcher.rs): partitions' fetches and their handled notices, in
    /// the order the partitions emitted them.
    fetcher: mpsc::UnboundedSender<crate::fetcher::FetcherInput>,
    /// The voter believed to be the active controller.
    active_controller: Mutex<Option<u64>>,
    /// The last active controller known (for the timeline: `active_controller` is `None`
    /// while a call retries).
    last_known_controller: Mutex<Option<u64>>,
    /// Woken to fetch metadata now (a partition saw a newer epoch).
    metadata_nudge: tokio::sync::Notify,
    stopping: watch::Sender<bool>,
    /// Metrics, event timeline, throughput history (metrics.rs).
    observability: Arc<crate::metrics::Observability>,
}

impl Node {
    /// Starts the node's loops on the current tokio runtime.
    /// Starts the node's loops on the current tokio runtime, after recovering its local logs
    /// (registration must say whether they lost data).
    pub fn start(config: NodeConfig, peers: Arc<dyn Peers>) -> std::io::Result<Arc<Node>> {
        let local_state = crate::local_state::LocalState::load(&config.data_dir)?;
        let (outbound, outbound_rx) = mpsc::unbounded_channel();
        let (fetcher, fetcher_rx) = mpsc::unbounded_channel();
        let (stopping, _) = watch::channel(false);
        let process_id = process_id();
        let node = Arc::new(Node {
            config,
            local_state,
            registered_once: std::sync::atomic::AtomicBool::new(false),
            peers,
            process_id,
            started: Instant::now(),
            session: Mutex::new(Session {
                incarnation: None,
                lease: LeaderLease::new(),
                heartbeat_interval_ms: 100,
                want_shutdown: false,
                shutdown_ready: false,
            }),
            metadata: RwLock::new((0, Arc::new(Metadata::default()))),
            replicas: RwLock::new(BTreeMap::new()),
            outbound,
            fetcher,
            active_controller: Mutex::new(None),
            last_known_controller: Mutex::new(None),
            metadata_nudge: tokio::sync::Notify::new(),
            stopping,
            observability: Arc::new(crate::metrics::Observability::new()),
        });
        tokio::spawn(Arc::clone(&node.observability).sample_throughput(node.stopping.subscribe()));
        tokio::spawn(Arc::clone(&node).session_loop());
        tokio::spawn(Arc::clone(&node).metadata_loop());
        tokio::spawn(Arc::clone(&node).dispatch_loop(outbound_rx));
        tokio::spawn(crate::fetcher::run(Arc::clone(&node), fetcher_rx));
        let compactor = Arc::downgrade(&node);
        std::thread::Builder::new()
            .name("compactor".into())
            .spawn(move || crate::compaction::run(compactor))?;
        Ok(node)
    }

    pub fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    fn now_ms(&self) -> i64 {
        self.started.elapsed().as_millis() as i64
    }

    pub(crate) fn stopped(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Changes to true when the node stops.
    pub(crate) fn stopping_signal(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    pub(crate) fn peers(&self) -> &dyn Peers {
        &*self.peers
    }

    /// Hands an input to a local replica; false if there is none (any more).
    pub(crate) fn deliver_to_partition(&self, partition: &TopicPartition, input: Input) -> bool {
        self.send_to(partition, input)
    }

    /// host:port of a node, from committed metadata.
    pub(crate) fn address_of_node(&self, node_id: NodeId) -> Option<String> {
        self.address_of(node_id)
    }

    /// Metrics, event timeline and throughput history of this node.
    pub fn observability(&self) -> &crate::metrics::Observability {
        &self.observability
    }

    /// The committed metadata this node acts on, and its version.
    pub fn metadata(&self) -> (u64, Arc<Metadata>) {
        self.metadata.read().clone()
    }

    /// The incarnation the controller gave this process, once registered.
    pub fn incarnation(&self) -> Option<u64> {
        self.session.lock().incarnation
    }

    /// The voter this node last found to be the active controller (`None` while unknown).
    pub fn active_controller(&self) -> Option<u64> {
        *self.active_controller.lock()
    }

    /// Does this node hold a valid lease from the controller (DESIGN.md rule 8)?
    pub fn has_lease(&self) -> bool {
        self.session.lock().lease.is_valid(self.now_ms())
    }

    /// The live figures of each local replica.
    pub fn replica_stats(&self) -> Vec<(TopicPartition, Arc<PartitionStats>)> {
        self.replicas
            .read()
            .iter()
            .map(|(tp, r)| (tp.clone(), Arc::clone(&r.handle.stats)))
            .collect()
    }

    // ---- requests from clients and peers ----

    fn not_leader_hint(&self, partition: &TopicPartition) -> (Option<NodeId>, i32) {
        let (_, metadata) = self.metadata();
        metadata
            .topic_by_name(&partition.topic)
            .and_then(|t| t.partitions.get(partition.partition as usize))
            .map_or((None, -1), |p| (p.leader, p.leader_epoch))
    }

    /// Is the partition known to the cluster at all?
    pub fn partition_exists(&self, partition: &TopicPartition) -> bool {
        let (_, metadata) = self.metadata();
        metadata.topic_by_name(&partition.topic).is_some_and(|t| {
            partition.partition >= 0 && (partition.partition as usize) < t.partitions.len()
        })
    }

    fn send_to(&self, partition: &TopicPartition, input: Input) -> bool {
        match self.replicas.read().get(partition) {
            Some(replica) => replica.handle.send(input),
            None => false,
        }
    }

    /// A produce for a partition this node should lead.
    pub async fn produce(
        &self,
        partition: &TopicPartition,
        request: ProduceRequest,
    ) -> Result<ProduceOk, ProduceError> {
        let started = Instant::now();
        let (bytes, records) = (request.records.len() as u64, record_count(&request.records));
        let result = self.produce_unmetered(partition, request).await;
        let metrics = &self.observability.metrics;
        metrics
            .produce_seconds
            .observe(started.elapsed().as_secs_f64());
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics
            .produce_requests
            .get_or_create(&[("result", outcome)])
            .inc();
        if result.is_ok() {
            metrics.produce_bytes.inc_by(bytes);
            metrics.produce_records.inc_by(records);
        }
        result
    }

    async fn produce_unmetered(
        &self,
        partition: &TopicPartition,
        request: ProduceRequest,
    ) -> Result<ProduceOk, ProduceError> {
        // Rule 8: a leader that has lost touch with the controller for its lease period may
        // already have a successor; stop taking writes that would be thrown away.
        if !self.has_lease() {
            let (leader, leader_epoch) = self.not_leader_hint(partition);
            return Err(ProduceError::NotLeader {
                leader,
                leader_epoch,
            });
        }
        if self.is_table(&partition.topic) {
            if let Err(reason) = tandem_table::check_table_batch(&request.records) {
                debug!(partition = %partition, %reason, "produce to a table refused");
                return Err(ProduceError::InvalidRequest(
                    "records for a table need a key each and no compression",
                ));
            }
        }
        let acks_none = request.acks == tandem_replication::types::Acks::None;
        let (reply, answer) = oneshot::channel();
        let sent = self.send_to(
            partition,
            Input::Produce {
                request,
                reply: (!acks_none).then_some(reply),
            },
        );
        if !sent {
            let (leader, leader_epoch) = self.not_leader_hint(partition);
            return Err(ProduceError::NotLeader {
                leader,
                leader_epoch,
            });
        }
        if acks_none {
            return Ok(ProduceOk {
                base_offset: -1,
                log_start_offset: -1,
            });
        }
        answer
            .await
            .unwrap_or_else(|_| Err(ProduceError::Storage("the replica stopped".into())))
    }

    pub fn compaction_interval(&self) -> Duration {
        self.config.compaction_interval
    }

    /// The table replicas on this node, for the compactor.
    pub fn table_logs(&self) -> Vec<crate::compaction::CompactionTarget> {
        let (_, metadata) = self.metadata();
        self.replicas
            .read()
            .iter()
            .filter_map(|(tp, r)| {
                let topic = metadata.topic_by_name(&tp.topic)?;
                (topic.kind == tandem_controller::model::TopicKind::Table).then(|| {
                    crate::compaction::CompactionTarget {
                        partition: tp.clone(),
                        log: Arc::clone(&r.handle.log),
                        high_watermark: r
                            .handle
                            .stats
                            .high_watermark
                            .load(std::sync::atomic::Ordering::Relaxed),
                        tombstone_retention_ms: topic.config.tombstone_retention_ms,
                    }
                })
            })
            .collect()
    }

    /// A compaction moved the partition's horizon: its core must know (followers behind it
    /// copy the log again).
    pub fn compacted(&self, partition: &TopicPartition, compaction_horizon: i64) {
        self.send_to(
            partition,
            Input::Event(tandem_replication::Event::Compacted { compaction_horizon }),
        );
    }

    /// Is this topic a key-value table?
    pub fn is_table(&self, topic: &str) -> bool {
        let (_, metadata) = self.metadata();
        topic_kind_is_table(&metadata, topic)
    }

    /// A put, delete or compare-and-set on a table partition this node should lead.
    pub async fn table_write(
        &self,
        partition: &TopicPartition,
        write: TableWrite,
        acks: tandem_replication::types::Acks,
        durability: tandem_replication::types::Durability,
        timeout_ms: i64,
        current_leader_epoch: Option<i32>,
    ) -> Result<Written, TableWriteError> {
        // Rule 8, as for any produce.
        if !self.has_lease() {
            let (leader, leader_epoch) = self.not_leader_hint(partition);
            return Err(ProduceError::NotLeader {
                leader,
                leader_epoch,
            }
            .into());
        }
        let (reply, answer) = oneshot::channel();
        let input = Input::KvWrite {
            write,
            acks,
            durability,
            timeout_ms,
            current_leader_epoch,
            reply,
        };
        if !self.send_to(partition, input) {
            let (leader, leader_epoch) = self.not_leader_hint(partition);
            return Err(ProduceError::NotLeader {
                leader,
                leader_epoch,
            }
            .into());
        }
        answer
            .await
            .unwrap_or_else(|_| Err(ProduceError::Storage("the replica stopped".into()).into()))
    }

    /// A get or scan on a table partition this node holds a replica of.
    pub async fn table_read(
        &self,
        partition: &TopicPartition,
        query: TableQuery,
        consistency: tandem_table::Consistency,
        wait: Duration,
    ) -> Result<ReadAnswer, TableReadError> {
        let (reply, answer) = oneshot::channel();
        let input = Input::KvRead {
            query,
            consistency,
            has_lease: self.has_lease(),
            wait,
            reply,
        };
        if !self.send_to(partition, input) {
            return Err(tandem_table::ReadError::NotLeader.into());
        }
        answer
            .await
            .unwrap_or_else(|_| Err(TableReadError::Storage("the replica stopped".into())))
    }

    /// Who leads the partition, in which epoch, as this node last heard.
    pub fn leader_of(&self, partition: &TopicPartition) -> (Option<NodeId>, i32) {
        self.not_leader_hint(partition)
    }

    /// A fetch from a consumer or a follower.
    pub async fn fetch(
        &self,
        partition: &TopicPartition,
        request: FetchRequest,
    ) -> Result<FetchData<Bytes>, ReadError> {
        let started = Instant::now();
        let kind = [(
            "kind",
            if request.replica_id.is_some() {
                "follower"
            } else {
                "consumer"
            },
        )];
        let (reply, answer) = oneshot::channel();
        if !self.send_to(partition, Input::Fetch { request, reply }) {
            let (leader, leader_epoch) = self.not_leader_hint(partition);
            return Err(ReadError::NotLeader {
                leader,
                leader_epoch,
            });
        }
        let result = answer
            .await
            .unwrap_or_else(|_| Err(ReadError::Storage("the replica stopped".into())));
        let metrics = &self.observability.metrics;
        metrics
            .fetch_seconds
            .get_or_create(&kind)
            .observe(started.elapsed().as_secs_f64());
        if let Ok(data) = &result {
            metrics
                .fetch_bytes
                .get_or_create(&kind)
                .inc_by(data.records.len() as u64);
        }
        result
    }

    pub async fn list_offset(
        &self,
        partition: &TopicPartition,
        query: OffsetQuery,
        current_leader_epoch: Option<i32>,
    ) -> Result<i64, ReadError> {
        let (reply, answer) = oneshot::channel();
        let input = Input::ListOffset {
            query,
            current_leader_epoch,
            reply,
        };
        if !self.send_to(partition, input) {
            let (leader, leader_epoch) = self.not_leader_hint(partition);
            return Err(ReadError::NotLeader {
                leader,
                leader_epoch,
            });
        }
        answer
            .await
            .unwrap_or_else(|_| Err(ReadError::Storage("the replica stopped".into())))
    }

    /// A follower's flushed-offset report.
    pub fn flush_report(
        &self,
        partition: &TopicPartition,
        replica_id: NodeId,
        leader_epoch: i32,
        flushed_offset: i64,
    ) -> bool {
        self.send_to(
            partition,
            Input::Event(tandem_replication::Event::FlushReport {
                replica_id,
                leader_epoch,
                flushed_offset,
            }),
        )
    }

    pub async fn create_topic(
        &self,
        request: CreateTopicRequest,
    ) -> Result<TopicId, ControllerError> {
        match self
            .call_controller(ControllerRequest::CreateTopic(request))
            .await?
        {
            ControllerResponse::CreateTopic(result) => {
                let id = result?;
                self.wait_for_metadata_with(|m| m.topics.contains_key(&id))
                    .await;
                Ok(id)
            }
            other => Err(unexpected(other)),
        }
    }

    pub async fn delete_topic(&self, name: &str) -> Result<TopicId, ControllerError> {
        let request = ControllerRequest::DeleteTopic {
            name: name.to_string(),
        };
        match self.call_controller(request).await? {
            ControllerResponse::DeleteTopic(result) => result,
            other => Err(unexpected(other)),
        }
    }

    /// Waits (bounded) until the metadata this node acts on satisfies `ready`.
    async fn wait_for_metadata_with(&self, ready: impl Fn(&Metadata) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if ready(&self.metadata().1) {
                return;
            }
            self.metadata_nudge.notify_one();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // ---- the controller ----

    /// Sends a request to the active controller, following "not the controller" hints, for up
    /// to a few seconds while an election settles.
    pub async fn call_controller(
        &self,
        request: ControllerRequest,
    ) -> Result<ControllerResponse, ControllerError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let voters: Vec<u64> = self.config.voters.keys().copied().collect();
        let mut attempt = 0usize;
        loop {
            let target = self
                .active_controller
                .lock()
                .unwrap_or(voters[attempt % voters.len()]);
            attempt += 1;
            let Some(address) = self.config.voters.get(&target).cloned() else {
                *self.active_controller.lock() = None;
                continue;
            };
            let outcome = self.peers.controller(address, request.clone()).await;
            let retry_reason = match outcome {
                Ok(response) => match not_controller_hint(&response) {
                    None => {
                        *self.active_controller.lock() = Some(target);
                        self.note_active_controller(target);
                        return Ok(response);
                    }
                    Some(hint) => {
                        *self.active_controller.lock() = hint;
                        "not the active controller".to_string()
                    }
                },
                Err(e) => {
                    *self.active_controller.lock() = None;
                    e.to_string()
                }
            };
            if Instant::now() >= deadline || self.stopped() {
                return Err(ControllerError::Unavailable(format!(
                    "no active controller answered: {retry_reason}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(self.config.controller_retry_ms)).await;
        }
    }

    /// Records a change of the active controller in the timeline (this node's view: the voter
    /// that answered it last; unknown spells in between are not changes).
    fn note_active_controller(&self, now: u64) {
        let mut last = self.last_known_controller.lock();
        if *last != Some(now) {
            if let Some(before) = *last {
                let event = crate::events::Event::controller_changed(before, now);
                self.record_events(self.metadata().0, vec![event]);
            }
            *last = Some(now);
        }
    }

    fn record_events(&self, version: u64, events: Vec<crate::events::Event>) {
        let now = crate::metrics::unix_ms();
        for event in events {
            self.observability
                .metrics
                .cluster_events
                .get_or_create(&[("kind", event.kind)])
                .inc();
            self.observability.events.push(now, version, event);
        }
    }

    async fn register(&self) -> Option<u64> {
        let (host, port) = split_address(&self.config.advertised_address);
        let mut addresses = vec![Endpoint {
            listener: "tandem".into(),
            host,
            port,
        }];
        if let Some(admin) = &self.config.admin_address {
            let (host, port) = split_address(admin);
            addresses.push(Endpoint {
                listener: "admin".into(),
                host,
                port,
            });
        }
        let request = RegisterRequest {
            node_id: self.config.node_id,
            process_id: self.process_id,
            addresses,
            rack: None,
            previous_shutdown_clean: self.local_state.previous_shutdown_clean,
            lost_data: self.local_state.lost_data,
        };
        match self
            .call_controller(ControllerRequest::Register(request))
            .await
        {
            Ok(ControllerResponse::Register(Ok(reply))) => {
                let mut session = self.session.lock();
                session.incarnation = Some(reply.incarnation);
                session.heartbeat_interval_ms = reply.heartbeat_interval_ms;
                if !self
                    .registered_once
                    .swap(true, std::sync::atomic::Ordering::SeqCst)
                {
                    crate::local_state::LocalState::registered(
                        &self.config.data_dir,
                        &self.local_state,
                    );
                }
                info!(
                    node = self.config.node_id,
                    incarnation = reply.incarnation,
                    "registered"
                );
                Some(reply.incarnation)
            }
            Ok(other) => {
                warn!(node = self.config.node_id, answer = ?other, "registration refused");
                None
            }
            Err(e) => {
                warn!(node = self.config.node_id, error = %e, "registration failed");
                None
            }
        }
    }

    /// Registers, then heartbeats with the replicas' LEOs; keeps the lease fresh.
    async fn session_loop(self: Arc<Self>) {
        let mut stop = self.stopping.subscribe();
        while !self.stopped() {
            let incarnation = match self.incarnation() {
                Some(i) => i,
                None => match self.register().await {
                    Some(i) => i,
                    None => {
                        tokio::time::sleep(Duration::from_millis(self.config.controller_retry_ms))
                            .await;
                        continue;
                    }
                },
            };
            let sent_at = self.now_ms();
            let request = HeartbeatRequest {
                node_id: self.config.node_id,
                incarnation,
                replica_leos: self.replica_leos(),
                want_shutdown: self.session.lock().want_shutdown,
            };
            match self
                .call_controller(ControllerRequest::Heartbeat(request))
                .await
            {
                Ok(ControllerResponse::Heartbeat(Ok(reply))) => {
                    let mut session = self.session.lock();
                    session.lease.on_heartbeat_reply(sent_at, reply.lease_ms);
                    session.shutdown_ready |= session.want_shutdown && reply.shutdown_ready;
                    if reply.status == NodeStatus::Fenced {
                        warn!(
                            node = self.config.node_id,
                            "fenced by the controller; registering again"
                        );
                        session.incarnation = None;
                        session.lease.revoke();
                    }
                    drop(session);
                    if reply.metadata_version > self.metadata().0 {
                        self.metadata_nudge.notify_one();
                    }
                }
                Ok(ControllerResponse::Heartbeat(Err(
                    ControllerError::StaleIncarnation { .. }
                    | ControllerError::NodeFenced { .. }
                    | ControllerError::UnknownNode { .. },
                ))) => {
                    let mut session = self.session.lock();
                    session.incarnation = None;
                    session.lease.revoke();
                }
                Ok(other) => debug_unexpected(&other),
                Err(e) => warn!(node = self.config.node_id, error = %e, "heartbeat failed"),
            }
            let interval = self.session.lock().heartbeat_interval_ms.max(10) as u64;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(interval)) => {}
                _ = stop.changed() => {}
            }
        }
    }

    fn replica_leos(&self) -> Vec<ReplicaLeo> {
        self.replicas
            .read()
            .values()
            .map(|r| ReplicaLeo {
                topic_id: r.topic_id,
                partition: r.index,
                log_end_offset: r
                    .handle
                    .stats
                    .log_end_offset
                    .load(std::sync::atomic::Ordering::Relaxed),
            })
            .collect()
    }

    /// Long-polls committed metadata and acts on each new version.
    async fn metadata_loop(self: Arc<Self>) {
        let mut stop = self.stopping.subscribe();
        while !self.stopped() {
            let since = self.metadata().0;
            let request = ControllerRequest::FetchMetadata {
                since_version: since,
                max_wait_ms: self.config.metadata_wait_ms,
            };
            // Any voter answers with committed metadata; ask them in turn.
            let mut fetched = None;
            for address in self.config.voters.values() {
                match self
                    .peers
                    .controller(address.clone(), request.clone())
                    .await
                {
                    Ok(ControllerResponse::FetchMetadata(Ok(view))) => {
                        fetched = Some(view);
                        break;
                    }
                    Ok(_) | Err(_) => continue,
                }
            }
            match fetched {
                Some(view) => {
                    if let Some(metadata) = view.metadata {
                        if view.version > self.metadata().0 {
                            self.apply_metadata(view.version, Arc::new(metadata));
                        }
                    }
                }
                None => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(self.config.controller_retry_ms)) => {}
                        _ = self.metadata_nudge.notified() => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
    }

    /// Starts replicas newly assigned here, stops those no longer assigned, and gives every
    /// local replica its partition state: act only on committed metadata (rule 5).
    fn apply_metadata(&self, version: u64, metadata: Arc<Metadata>) {
        let previous = std::mem::replace(
            &mut *self.metadata.write(),
            (version, Arc::clone(&metadata)),
        );
        // The timeline (events.rs). The first metadata of this process is the baseline.
        if previous.0 > 0 {
            self.record_events(version, crate::events::diff(&previous.1, &metadata));
        }
        let me = self.config.node_id;
        let mut replicas = self.replicas.write();
        let mut assigned = BTreeMap::new();
        for (topic, index, state) in metadata.partitions() {
            if state.replicas.contains(&me) {
                let tp = TopicPartition {
                    topic: topic.name.clone(),
                    partition: index as i32,
                };
                assigned.insert(tp, (topic.id, index, topic.config.clone(), state.clone()));
            }
        }
        let gone: Vec<TopicPartition> = replicas
            .keys()
            .filter(|tp| !assigned.contains_key(*tp))
            .cloned()
            .collect();
        for tp in gone {
            if let Some(replica) = replicas.remove(&tp) {
                info!(node = me, partition = %tp, "replica no longer assigned here; stopping it");
                replica.handle.stop();
                let dir = self.log_dir(&tp);
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    warn!(node = me, dir = %dir.display(), error = %e, "could not delete the replica's log");
                }
                if let Some(tables) = self.table_snapshot_path(&tp).parent() {
                    if tables.exists() {
                        if let Err(e) = std::fs::remove_dir_all(tables) {
                            warn!(node = me, dir = %tables.display(), error = %e, "could not delete the table snapshot");
                        }
                    }
                }
            }
        }
        for (tp, (topic_id, index, config, state)) in assigned {
            if !replicas.contains_key(&tp) {
                let is_table = topic_kind_is_table(&metadata, &tp.topic);
                match self.open_replica(&tp, &config, is_table) {
                    Ok(handle) => {
                        replicas.insert(
                            tp.clone(),
                            Replica {
                                handle,
                                topic_id,
                                index,
                                applied: None,
                            },
                        );
                    }
                    Err(e) => {
                        warn!(node = me, partition = %tp, error = %e, "could not open the replica's log");
                        continue;
                    }
                }
            }
            let Some(replica) = replicas.get_mut(&tp) else {
                continue;
            };
            let key = (state.leader_epoch, state.partition_epoch);
            if replica.applied == Some(key) {
                continue;
            }
            replica.applied = Some(key);
            replica
                .handle
                .send(Input::Event(tandem_replication::Event::Metadata(
                    PartitionState {
                        leader: state.leader,
                        leader_epoch: state.leader_epoch,
                        partition_epoch: state.partition_epoch,
                        isr: state.isr.iter().copied().collect(),
                        replicas: state.replicas.clone(),
                        min_insync_replicas: config.min_insync_replicas as usize,
                    },
                )));
        }
    }

    fn log_dir(&self, tp: &TopicPartition) -> PathBuf {
        self.config.data_dir.join("logs").join(tp.to_string())
    }

    fn open_replica(
        &self,
        tp: &TopicPartition,
        config: &tandem_controller::TopicConfig,
        is_table: bool,
    ) -> Result<PartitionHandle, tandem_storage::StorageError> {
        // A table keeps every key's latest record: retention would delete live keys, so a
        // table's log is only ever compacted.
        let log_config = LogConfig {
            flush: config.flush.into(),
            segment_bytes: config.segment_bytes,
            retention_ms: if is_table { None } else { config.retention_ms },
            retention_bytes: if is_table {
                None
            } else {
                config.retention_bytes
            },
            max_batch_bytes: config.max_message_bytes as usize,
            ..LogConfig::default()
        };
        let log: Arc<dyn Log> = Arc::new(crate::metered_log::MeteredLog::new(
            DiskLog::open_path(self.log_dir(tp), log_config)?,
            self.observability.metrics.storage.clone(),
        ));
        let mut replica_config = self.config.replica.clone();
        replica_config.max_batch_bytes = config.max_message_bytes as usize;
        replica_config.flush_after_append =
            matches!(config.flush, tandem_controller::model::FlushPolicy::Always);
        PartitionHandle::start(
            tp.clone(),
            self.config.node_id,
            replica_config,
            log,
            is_table.then(|| self.table_snapshot_path(tp)),
            self.outbound.clone(),
        )
    }

    fn table_snapshot_path(&self, tp: &TopicPartition) -> PathBuf {
        self.config
            .data_dir
            .join("tables")
            .join(tp.to_string())
            .join("snapshot")
    }

    fn address_of(&self, node_id: NodeId) -> Option<String> {
        let (_, metadata) = self.metadata();
        metadata
            .node(node_id)
            .and_then(|n| n.addresses.first())
            .map(|e| format!("{}:{}", e.host, e.port))
    }

    /// Carries what partitions ask to send; each call runs on its own task, and its answer
    /// goes back to the partition as an event. Fetches go to the fetchers, in order.
    async fn dispatch_loop(self: Arc<Self>, mut outbound: mpsc::UnboundedReceiver<Outbound>) {
        use crate::fetcher::{FetcherInput, WantedFetch};
        while let Some(message) = outbound.recv().await {
            let input = match message {
                Outbound::Fetch {
                    partition,
                    to,
                    fetch_id,
                    request,
                } => FetcherInput::Want {
                    leader: to,
                    fetch: WantedFetch {
                        partition,
                        fetch_id,
                        request,
                    },
                },
                Outbound::FetchAnswered { partition } => FetcherInput::Handled { partition },
                message => {
                    let node = Arc::clone(&self);
                    tokio::spawn(async move { node.dispatch(message).await });
                    continue;
                }
            };
            if self.fetcher.send(input).is_err() {
                debug!(
                    node = self.config.node_id,
                    "the fetchers stopped; dropped a fetch"
                );
            }
        }
    }

    async fn dispatch(&self, message: Outbound) {
        match message {
            Outbound::Fetch { .. } | Outbound::FetchAnswered { .. } => {} // the fetchers'
            Outbound::FlushReport {
                partition,
                to,
                leader_epoch,
                flushed_offset,
            } => {
                if let Some(address) = self.address_of(to) {
                    let me = self.config.node_id;
                    let _ = self
                        .peers
                        .flush_report(address, partition, me, leader_epoch, flushed_offset)
                        .await;
                }
            }
            Outbound::ProposeIsr {
                partition,
                leader_epoch,
                partition_epoch,
                isr,
            } => {
                let result = self
                    .propose_isr(&partition, leader_epoch, partition_epoch, isr)
                    .await;
                self.send_to(
                    &partition,
                    Input::Event(tandem_replication::Event::IsrChangeResult(result)),
                );
            }
            Outbound::RefreshMetadata => self.metadata_nudge.notify_one(),
        }
    }

    async fn propose_isr(
        &self,
        partition: &TopicPartition,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<NodeId>,
    ) -> Result<IsrState, IsrChangeError> {
        let (_, metadata) = self.metadata();
        let Some(topic) = metadata.topic_by_name(&partition.topic) else {
            return Err(IsrChangeError::InvalidRequest);
        };
        let Some(incarnation) = self.incarnation() else {
            return Err(IsrChangeError::Unavailable);
        };
        let new_isr = isr
            .iter()
            .map(|id| IsrMember {
                node_id: *id,
                incarnation: metadata.node(*id).map_or(0, |n| n.incarnation),
            })
            .collect();
        let request = AlterPartitionRequest {
            node_id: self.config.node_id,
            incarnation,
            topic_id: topic.id,
            partition: partition.partition as PartitionIndex,
            leader_epoch,
            partition_epoch,
            new_isr,
            leader_recovered: false,
        };
        match self
            .call_controller(ControllerRequest::AlterPartition(request))
            .await
        {
            Ok(ControllerResponse::AlterPartition(Ok(state))) => Ok(IsrState {
                leader_epoch: state.leader_epoch,
                partition_epoch: state.partition_epoch,
                isr: state.isr.iter().copied().collect(),
            }),
            Ok(ControllerResponse::AlterPartition(Err(e))) => Err(isr_error(e)),
            Ok(other) => {
                debug_unexpected(&other);
                Err(IsrChangeError::Unavailable)
            }
            Err(e) => {
                warn!(node = self.config.node_id, partition = %partition, error = %e, "ISR proposal got no answer");
                Err(IsrChangeError::Unavailable)
            }
        }
    }

    /// Stops the node's replicas (final HW checkpoint and flush) and loops. With `controlled`,
    /// first asks the controller to move this node's leaderships away.
    pub async fn shutdown(&self, controlled: bool) {
        if controlled {
            self.controlled_shutdown().await;
        }
        self.stopping.send_replace(true);
        let replicas = std::mem::take(&mut *self.replicas.write());
        for (_, replica) in replicas {
            replica.handle.stop();
        }
        if controlled {
            // Every replica is flushed and stopped: the next process may claim a clean stop.
            crate::local_state::LocalState::stopped_cleanly(
                &self.config.data_dir,
                &self.local_state,
                self.registered_once
                    .load(std::sync::atomic::Ordering::SeqCst),
            );
        }
    }

    /// Asks the controller, through the heartbeats, to move this node's leaderships away, and
    /// waits (bounded) until it says nothing more can move.
    async fn controlled_shutdown(&self) {
        self.session.lock().want_shutdown = true;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let done = {
                let session = self.session.lock();
                session.shutdown_ready || session.incarnation.is_none()
            };
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        info!(
            node = self.config.node_id,
            moved = self.session.lock().shutdown_ready,
            "controlled shutdown: leaderships moved away"
        );
    }
}

fn isr_error(error: ControllerError) -> IsrChangeError {
    match error {
        // The controller's view is older than ours: ask again rather than wait for metadata.
        e if e.from_stale_controller() => IsrChangeError::Unavailable,
        ControllerError::FencedLeaderEpoch { .. } => IsrChangeError::FencedLeaderEpoch,
        ControllerError::InvalidUpdateVersion { .. } => IsrChangeError::InvalidUpdateVersion,
        ControllerError::IneligibleReplica { .. } => IsrChangeError::IneligibleReplica,
        ControllerError::InvalidRequest(_) => IsrChangeError::InvalidRequest,
        _ => IsrChangeError::Unavailable,
    }
}

/// The hint in a "not the active controller" answer: `Some(hint)` means ask elsewhere.
fn not_controller_hint(response: &ControllerResponse) -> Option<Option<u64>> {
    let error = match response {
        ControllerResponse::Register(Err(e))
        | ControllerResponse::Heartbeat(Err(e))
        | ControllerResponse::CreateTopic(Err(e))
        | ControllerResponse::DeleteTopic(Err(e))
        | ControllerResponse::NodeStopped(Err(e))
        | ControllerResponse::FetchMetadata(Err(e)) => e,
        ControllerResponse::AlterPartition(Err(e)) => e,
        _ => return None,
    };
    match error {
        ControllerError::NotController { leader_hint } => Some(*leader_hint),
        ControllerError::Unavailable(_) => Some(None),
        e if e.from_stale_controller() => Some(None),
        _ => None,
    }
}

fn unexpected(response: ControllerResponse) -> ControllerError {
    ControllerError::Unavailable(format!("unexpected controller answer {response:?}"))
}

fn debug_unexpected(response: &ControllerResponse) {
    tracing::debug!(answer = ?response, "unexpected controller answer");
}

/// The records in a produced batch (v2 header), 0 if it is too short to say.
fn record_count(batch: &[u8]) -> u64 {
    use tandem_storage::batch::{HEADER_LEN, RECORD_COUNT_OFFSET};
    if batch.len() < HEADER_LEN {
        return 0;
    }
    let mut count = [0u8; 4];
    count.copy_from_slice(&batch[RECORD_COUNT_OFFSET..RECORD_COUNT_OFFSET + 4]);
    i32::from_be_bytes(count).max(0) as u64
}

fn split_address(address: &str) -> (String, u16) {
    match address.rsplit_once(':') {
        Some((host, port)) => (host.to_string(), port.parse().unwrap_or(0)),
        None => (address.to_string(), 0),
    }
}

/// A random id for this process, so that the controller tells a retried registration from a
/// restart. Time and pid are enough to be unique on one machine.
fn process_id() -> u128 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    nanos ^ ((std::process::id() as u128) << 96)
}

fn topic_kind_is_table(metadata: &tandem_controller::model::Metadata, topic: &str) -> bool {
    metadata
        .topic_by_name(topic)
        .is_some_and(|t| t.kind == tandem_controller::model::TopicKind::Table)
}
