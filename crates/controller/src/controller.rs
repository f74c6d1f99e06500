//! The active controller's decisions: a pure function of committed metadata, soft liveness
//! state and an event. No Raft, no I/O, no clock reads: time comes in as `now_ms`.
//!
//! ```text
//!   event (register, heartbeat, alter partition, create/delete topic, node stopped, tick)
//!     + committed Metadata + sessions (soft state, this controller only)
//!        |
//!        v
//!   Decision { records, reply, reports }
//!        |  records are proposed to Raft; the reply goes out once they are committed
//!        v
//!   Metadata::apply_batch on every voter
//! ```
//!
//! Sessions (deadlines, reported LEOs) are soft state: they live only in the active controller,
//! and a new active controller starts every live node's session afresh, so that it fences no one
//! before a full session timeout has passed since it took over (this is also what makes the
//! partition leaders' leases safe across a controller failover, see docs/controller.md).
//!
//! Election rules (DESIGN.md rule 7), in [`ActiveController`]'s `next_state`:
//! 1. a leader that is still in the ISR and not fenced stays leader;
//! 2. otherwise the live ISR member with the highest reported LEO, lowest id on a tie
//!    (a shutting-down member only if no live one is left);
//! 3. with an empty ISR, a live member of the ELR the same way; the ISR becomes {leader};
//! 4. then, only if the topic allows unclean election, any live replica: the ISR becomes
//!    {leader}, the partition is marked recovering and the election is reported;
//! 5. otherwise no leader (offline, reported).
//!
//! Every change bumps the partition epoch; every leader change bumps the leader epoch.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::model::{
    Endpoint, FlushPolicy, Metadata, MetadataRecord, NodeId, NodeRecord, NodeStatus,
    PartitionIndex, PartitionState, Topic, TopicConfig, TopicId, TopicKind,
};

/// Timings of liveness and leases. All in milliseconds of a monotonic clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerConfig {
    /// How often nodes are asked to heartbeat.
    pub heartbeat_interval_ms: i64,
    /// A node not heard from for this long is fenced.
    pub session_timeout_ms: i64,
    /// How long a partition leader may act on one heartbeat reply (rule 8). Must be shorter than
    /// the session timeout, with margin for clock drift and scheduling.
    pub lease_ms: i64,
    /// Move leadership back to the preferred replica once it is live and in the ISR.
    pub auto_leader_rebalance: bool,
}

impl Default for ControllerConfig {
    fn default() -> ControllerConfig {
        ControllerConfig {
            heartbeat_interval_ms: 100,
            session_timeout_ms: 600,
            lease_ms: 400,
            auto_leader_rebalance: true,
        }
    }
}

impl ControllerConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.heartbeat_interval_ms <= 0 {
            return Err("heartbeat_interval_ms must be positive".into());
        }
        if self.lease_ms <= self.heartbeat_interval_ms {
            return Err(format!(
                "lease_ms {} must exceed heartbeat_interval_ms {}, or every lease lapses between heartbeats",
                self.lease_ms, self.heartbeat_interval_ms
            ));
        }
        // A quarter of the session as margin: drift between the node's and the controller's
        // clocks, and a paused process, must not let a lease outlive the session.
        if self.lease_ms * 4 > self.session_timeout_ms * 3 {
            return Err(format!(
                "lease_ms {} must be at most 3/4 of session_timeout_ms {}",
                self.lease_ms, self.session_timeout_ms
            ));
        }
        Ok(())
    }
}

/// Errors a node or client can act on; each maps to a Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ControllerError {
    #[error("not the active controller; try {leader_hint:?}")]
    NotController { leader_hint: Option<u64> },
    #[error("node {node_id} is not registered")]
    UnknownNode { node_id: NodeId },
    #[error("node {node_id} is incarnation {current}, the request names {got}: register again")]
    StaleIncarnation {
        node_id: NodeId,
        current: u64,
        got: u64,
    },
    #[error("node {node_id} is fenced: register again")]
    NodeFenced { node_id: NodeId },
    #[error("unknown topic or partition {0}")]
    UnknownTopicOrPartition(String),
    #[error("leader epoch {got} is not the current {current}")]
    FencedLeaderEpoch { current: i32, got: i32 },
    #[error("partition epoch {got} is not the current {current}")]
    InvalidUpdateVersion { current: i32, got: i32 },
    #[error("replica {node_id} cannot join the ISR: {reason}")]
    IneligibleReplica { node_id: NodeId, reason: String },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("topic {name:?} already exists")]
    TopicAlreadyExists { name: String },
    #[error("replication factor {requested} needs as many live nodes, there are {live}")]
    InvalidReplicationFactor { requested: u16, live: usize },
    #[error("invalid partition count: {0}")]
    InvalidPartitions(String),
    #[error("invalid topic name: {0}")]
    InvalidTopic(String),
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The decision met a newer committed state (e.g. right after a controller failover).
    #[error("the metadata changed while deciding, retry: {0}")]
    Conflict(String),
    #[error("the controller quorum is unavailable: {0}")]
    Unavailable(String),
}

impl ControllerError {
    /// A refusal because the asker's epoch is *newer* than the controller's view: only an
    /// active controller that was deposed without knowing it yet (cut off from the other
    /// voters) answers so, since a caught-up one holds every committed change. The asker must
    /// not wait for newer metadata (it has it) but ask again, elsewhere (found by the
    /// simulator: a partition leader waited forever after such an answer).
    pub fn from_stale_controller(&self) -> bool {
        match self {
            ControllerError::FencedLeaderEpoch { current, got }
            | ControllerError::InvalidUpdateVersion { current, got } => current < got,
            _ => false,
        }
    }

    /// The Kafka error code a server answers with.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            ControllerError::NotController { .. } => 41, // NOT_CONTROLLER
            ControllerError::UnknownNode { .. } => 102,  // BROKER_ID_NOT_REGISTERED
            ControllerError::StaleIncarnation { .. } => 77, // STALE_BROKER_EPOCH
            ControllerError::NodeFenced { .. } => 77,
            ControllerError::UnknownTopicOrPartition(_) => 3,
            ControllerError::FencedLeaderEpoch { .. } => 74,
            ControllerError::InvalidUpdateVersion { .. } => 95,
            ControllerError::IneligibleReplica { .. } => 107,
            ControllerError::InvalidRequest(_) => 42,
            ControllerError::TopicAlreadyExists { .. } => 36,
            ControllerError::InvalidReplicationFactor { .. } => 38,
            ControllerError::InvalidPartitions(_) => 37,
            ControllerError::InvalidTopic(_) => 17,
            ControllerError::InvalidConfig(_) => 40,
            ControllerError::Conflict(_) => 41, // the client retries, as for NOT_CONTROLLER
            ControllerError::Unavailable(_) => 15, // COORDINATOR_NOT_AVAILABLE
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub node_id: NodeId,
    /// Random per process start.
    pub process_id: u128,
    pub addresses: Vec<Endpoint>,
    pub rack: Option<String>,
    /// Did the previous process of this node stop cleanly (flushed everything)? If not, it may
    /// have lost an unflushed tail and leaves every ELR of topics that do not flush always.
    pub previous_shutdown_clean: bool,
    /// Did this node lose data it had flushed: a new or wiped disk, or a corrupt tail that
    /// recovery cut? Then it leaves every ELR, whatever the topics' flush policy (found by the
    /// simulator, seed 432: trusting a flush-always replica with a cut tail lost committed data).
    #[serde(default)]
    pub lost_data: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterReply {
    pub incarnation: u64,
    pub heartbeat_interval_ms: i64,
    pub session_timeout_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaLeo {
    pub topic_id: TopicId,
    pub partition: PartitionIndex,
    pub log_end_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    pub node_id: NodeId,
    pub incarnation: u64,
    /// The LEO of each replica the node holds: elections prefer the highest.
    pub replica_leos: Vec<ReplicaLeo>,
    /// The node is asked to stop: move its leaderships away (controlled shutdown).
    pub want_shutdown: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// How long, counted from when the node *sent* this heartbeat, its partition leaderships
    /// stay valid without another reply. `None`: no lease (the controller has not confirmed its
    /// own leadership recently); the node must not serve linearizable reads on this reply.
    pub lease_ms: Option<i64>,
    pub status: NodeStatus,
    /// Controlled shutdown: nothing the node leads can move elsewhere any more; it may stop.
    pub shutdown_ready: bool,
    /// The last committed metadata version the controller has applied (filled by the runtime):
    /// a node that has seen less fetches the metadata.
    pub metadata_version: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsrMember {
    pub node_id: NodeId,
    pub incarnation: u64,
}

/// A partition leader's ISR change (Kafka's AlterPartition, KIP-497/903).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterPartitionRequest {
    pub node_id: NodeId,
    pub incarnation: u64,
    pub topic_id: TopicId,
    pub partition: PartitionIndex,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<IsrMember>,
    /// The leader of a recovering partition has finished recovering.
    pub leader_recovered: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTopicRequest {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u16,
    pub kind: TopicKind,
    pub config: TopicConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FenceReason {
    SessionExpired,
    /// Its process is known to have exited (it said so, or its connection closed).
    ProcessExited,
    /// A new process of the same node registered.
    Replaced,
}

/// Things an operator must hear about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Report {
    NodeFenced {
        node_id: NodeId,
        incarnation: u64,
        reason: FenceReason,
    },
    /// Possible data loss: a replica outside the ISR and ELR was elected.
    UncleanElection {
        topic: String,
        partition: PartitionIndex,
        leader: NodeId,
        leader_epoch: i32,
    },
    /// No eligible leader is live: the partition cannot be written or read.
    PartitionOffline {
        topic: String,
        partition: PartitionIndex,
    },
}

/// What the controller decided: records to commit, then the reply to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<T> {
    pub records: Vec<MetadataRecord>,
    pub reply: T,
    pub reports: Vec<Report>,
}

#[derive(Debug, Clone)]
struct Session {
    incarnation: u64,
    deadline_ms: i64,
    leos: BTreeMap<(TopicId, PartitionIndex), i64>,
}

/// Decisions in progress: records accumulate, and later steps see the earlier ones applied.
struct Txn<'a> {
    base: &'a Metadata,
    /// A copy, made on the first record only (most heartbeats change nothing).
    scratch: Option<Metadata>,
    records: Vec<MetadataRecord>,
    reports: Vec<Report>,
}

impl<'a> Txn<'a> {
    fn new(base: &'a Metadata) -> Txn<'a> {
        Txn {
            base,
            scratch: None,
            records: Vec::new(),
            reports: Vec::new(),
        }
    }
    fn view(&self) -> &Metadata {
        self.scratch.as_ref().unwrap_or(self.base)
    }
    fn push(&mut self, record: MetadataRecord) {
        let scratch = self.scratch.get_or_insert_with(|| self.base.clone());
        if let Err(e) = scratch.apply_record(&record) {
            panic!("the controller decided a record that does not apply: {e}: {record:?}");
        }
        self.records.push(record);
    }
    fn finish<T>(self, reply: T) -> Decision<T> {
        if let Some(scratch) = &self.scratch {
            if let Err(e) = scratch.check_invariants() {
                panic!("the controller's decision breaks an invariant: {e}");
            }
        }
        Decision {
            records: self.records,
            reply,
            reports: self.reports,
        }
    }
}

/// How the leader is to be chosen by `next_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaderChoice {
    /// Keep a valid leader, elect only if there is none.
    Keep,
    /// Elect anew among the target ISR (the current leader is leaving it).
    Elect,
    /// This replica, which the caller checked is live and in the ISR.
    Preferred(NodeId),
}

/// The active controller's soft state and decision logic.
#[derive(Debug, Clone)]
pub struct ActiveController {
    config: ControllerConfig,
    sessions: BTreeMap<NodeId, Session>,
    /// When a quorum last confirmed this controller's Raft leadership (start of that round).
    quorum_confirmed_at_ms: Option<i64>,
}

impl ActiveController {
    pub fn new(config: ControllerConfig) -> ActiveController {
        ActiveController {
            config,
            sessions: BTreeMap::new(),
            quorum_confirmed_at_ms: None,
        }
    }

    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// A round that started at `started_at_ms` confirmed that a quorum still follows this
    /// controller: no other controller can have been elected before that instant.
    pub fn leadership_confirmed(&mut self, started_at_ms: i64) {
        if self
            .quorum_confirmed_at_ms
            .is_none_or(|t| t < started_at_ms)
        {
            self.quorum_confirmed_at_ms = Some(started_at_ms);
        }
    }

    /// The session deadline of a node, for tests and status pages.
    pub fn session_deadline_ms(&self, node_id: NodeId) -> Option<i64> {
        self.sessions.get(&node_id).map(|s| s.deadline_ms)
    }

    fn reported_leo(&self, node_id: NodeId, topic_id: TopicId, partition: PartitionIndex) -> i64 {
        self.sessions
            .get(&node_id)
            .and_then(|s| s.leos.get(&(topic_id, partition)))
            .copied()
            .unwrap_or(-1)
    }

    fn open_session(&mut self, node_id: NodeId, incarnation: u64, now_ms: i64) {
        self.sessions.insert(
            node_id,
            Session {
                incarnation,
                deadline_ms: now_ms + self.config.session_timeout_ms,
                leos: BTreeMap::new(),
            },
        );
    }

    /// The lease a heartbeat reply grants: it ends no later than `lease_ms` after the last
    /// confirmation of this controller's leadership, so a deposed controller cannot extend a
    /// lease past the moment its successor could start counting sessions.
    fn lease_ms(&self, now_ms: i64) -> Option<i64> {
        let confirmed = self.quorum_confirmed_at_ms?;
        let remaining = (confirmed + self.config.lease_ms - now_ms).min(self.config.lease_ms);
        (remaining > 0).then_some(remaining)
    }

    // ---------------------------------------------------------------- registration

    pub fn register(
        &mut self,
        meta: &Metadata,
        now_ms: i64,
        request: &RegisterRequest,
    ) -> Result<Decision<RegisterReply>, ControllerError> {
        if request.node_id < 0 {
            return Err(ControllerError::InvalidRequest(format!(
                "node id {} is negative",
                request.node_id
            )));
        }
        let (heartbeat_interval_ms, session_timeout_ms) = (
            self.config.heartbeat_interval_ms,
            self.config.session_timeout_ms,
        );
        let reply = move |incarnation| RegisterReply {
            incarnation,
            heartbeat_interval_ms,
            session_timeout_ms,
        };
        if let Some(existing) = meta.node(request.node_id) {
            if existing.process_id == request.process_id && existing.status != NodeStatus::Fenced {
                // A retry of a registration that already committed.
                let incarnation = existing.incarnation;
                let r = reply(incarnation);
                self.open_session(request.node_id, incarnation, now_ms);
                return Ok(Txn::new(meta).finish(r));
            }
        }
        let mut txn = Txn::new(meta);
        if let Some(existing) = meta.node(request.node_id) {
            if existing.status != NodeStatus::Fenced {
                // A new process of this node: the old one is gone, no need to wait for its
                // session to expire.
                self.fence_in(&mut txn, request.node_id, FenceReason::Replaced);
            }
            if request.lost_data || !request.previous_shutdown_clean {
                self.drop_from_elrs(&mut txn, request.node_id, request.lost_data);
            }
        }
        let incarnation = txn.view().next_incarnation;
        txn.push(MetadataRecord::RegisterNode {
            node: NodeRecord {
                node_id: request.node_id,
                incarnation,
                process_id: request.process_id,
                addresses: request.addresses.clone(),
                rack: request.rack.clone(),
                status: NodeStatus::Live,
            },
        });
        self.open_session(request.node_id, incarnation, now_ms);
        // Partitions waiting for this node (it may be their only eligible leader).
        self.elect_leaderless(&mut txn);
        Ok(txn.finish(reply(incarnation)))
    }

    /// A node that may have lost its unflushed tail is no longer a safe leader for partitions
    /// that do not flush on every append; one that lost flushed data (`everywhere`) is safe for
    /// none.
    fn drop_from_elrs(&mut self, txn: &mut Txn, node_id: NodeId, everywhere: bool) {
        let affected: Vec<(TopicId, PartitionIndex)> = txn
            .view()
            .partitions()
            .filter(|(t, _, p)| {
                p.elr.contains(&node_id) && (everywhere || t.config.flush != FlushPolicy::Always)
            })
            .map(|(t, i, _)| (t.id, i))
            .collect();
        for (topic_id, index) in affected {
            let view = txn.view();
            let (topic, p) = topic_partition(view, topic_id, index);
            let mut elr = p.elr.clone();
            elr.remove(&node_id);
            let change = self.next_state(
                view,
                topic,
                index,
                p,
                p.isr.clone(),
                elr,
                LeaderChoice::Keep,
            );
            self.push_change(txn, topic_id, index, change);
        }
    }

    // ---------------------------------------------------------------- heartbeats

    pub fn heartbeat(
        &mut self,
        meta: &Metadata,
        now_ms: i64,
        request: &HeartbeatRequest,
    ) -> Result<Decision<HeartbeatReply>, ControllerError> {
        let node = current_node(meta, request.node_id, request.incarnation)?;
        let session = self
            .sessions
            .entry(request.node_id)
            .or_insert_with(|| Session {
                incarnation: node.incarnation,
                deadline_ms: now_ms,
                leos: BTreeMap::new(),
            });
        session.incarnation = node.incarnation;
        session.deadline_ms = session
            .deadline_ms
            .max(now_ms + self.config.session_timeout_ms);
        for leo in &request.replica_leos {
            session
                .leos
                .insert((leo.topic_id, leo.partition), leo.log_end_offset);
        }
        let mut txn = Txn::new(meta);
        if request.want_shutdown && node.status == NodeStatus::Live {
            txn.push(MetadataRecord::BeginShutdown {
                node_id: node.node_id,
                incarnation: node.incarnation,
            });
        }
        if txn.view().node_status(request.node_id) == Some(NodeStatus::ShuttingDown) {
            // Retried on every heartbeat: a follower may only now have rejoined an ISR.
            self.move_leaderships_away(&mut txn, request.node_id);
        }
        let view = txn.view();
        let status = view
            .node_status(request.node_id)
            .unwrap_or(NodeStatus::Fenced);
        let shutdown_ready =
            status == NodeStatus::ShuttingDown && !leads_movable(view, request.node_id);
        let reply = HeartbeatReply {
            lease_ms: self.lease_ms(now_ms),
            status,
            shutdown_ready,
            metadata_version: 0,
        };
        Ok(txn.finish(reply))
    }

    /// Controlled shutdown: leave every ISR and hand over every leadership that has a live
    /// successor in the ISR. A sole ISR member keeps leading until it stops.
    fn move_leaderships_away(&mut self, txn: &mut Txn, node_id: NodeId) {
        let affected: Vec<(TopicId, PartitionIndex)> = txn
            .view()
            .partitions()
            .filter(|(_, _, p)| p.isr.contains(&node_id))
            .map(|(t, i, _)| (t.id, i))
            .collect();
        for (topic_id, index) in affected {
            let view = txn.view();
            let (topic, p) = topic_partition(view, topic_id, index);
            let mut isr = p.isr.clone();
            isr.remove(&node_id);
            let choice = if p.leader == Some(node_id) {
                if !isr.iter().any(|m| view.is_live(*m)) {
                    continue;
                }
                LeaderChoice::Elect
            } else {
                LeaderChoice::Keep
            };
            let change = self.next_state(view, topic, index, p, isr, p.elr.clone(), choice);
            self.push_change(txn, topic_id, index, change);
        }
    }

    // ---------------------------------------------------------------- fencing

    /// The node's process is known to have exited: fence it now, not after its session.
    /// A notice about an older incarnation changes nothing.
    pub fn node_stopped(
        &mut self,
        meta: &Metadata,
        node_id: NodeId,
        incarnation: u64,
    ) -> Decision<()> {
        let mut txn = Txn::new(meta);
        if let Some(node) = meta.node(node_id) {
            if node.incarnation == incarnation && node.status != NodeStatus::Fenced {
                self.fence_in(&mut txn, node_id, FenceReason::ProcessExited);
            }
        }
        txn.finish(())
    }

    fn fence_in(&mut self, txn: &mut Txn, node_id: NodeId, reason: FenceReason) {
        let Some(node) = txn.view().node(node_id) else {
            return;
        };
        let incarnation = node.incarnation;
        txn.push(MetadataRecord::FenceNode {
            node_id,
            incarnation,
        });
        txn.reports.push(Report::NodeFenced {
            node_id,
            incarnation,
            reason,
        });
        self.sessions.remove(&node_id);
        let affected: Vec<(TopicId, PartitionIndex)> = txn
            .view()
            .partitions()
            .filter(|(_, _, p)| p.isr.contains(&node_id))
            .map(|(t, i, _)| (t.id, i))
            .collect();
        for (topic_id, index) in affected {
            let view = txn.view();
            let (topic, p) = topic_partition(view, topic_id, index);
            let mut isr = p.isr.clone();
            isr.remove(&node_id);
            let change = self.next_state(
                view,
                topic,
                index,
                p,
                isr,
                p.elr.clone(),
                LeaderChoice::Keep,
            );
            self.push_change(txn, topic_id, index, change);
        }
    }

    // ---------------------------------------------------------------- ticks

    /// Expires sessions, elects leaders for leaderless partitions, and moves leadership back to
    /// preferred replicas.
    pub fn tick(&mut self, meta: &Metadata, now_ms: i64) -> Decision<()> {
        // Sessions follow the committed nodes; one this controller has not heard from yet
        // (registered under a previous controller) starts a full session now.
        self.sessions.retain(|id, s| {
            meta.node(*id)
                .is_some_and(|n| n.incarnation == s.incarnation && n.status != NodeStatus::Fenced)
        });
        for node in meta.nodes.values() {
            if node.status != NodeStatus::Fenced && !self.sessions.contains_key(&node.node_id) {
                self.open_session(node.node_id, node.incarnation, now_ms);
            }
        }
        let expired: Vec<NodeId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.deadline_ms < now_ms)
            .map(|(id, _)| *id)
            .collect();
        let mut txn = Txn::new(meta);
        for node_id in expired {
            self.fence_in(&mut txn, node_id, FenceReason::SessionExpired);
        }
        self.elect_leaderless(&mut txn);
        if self.config.auto_leader_rebalance {
            self.rebalance(&mut txn);
        }
        txn.finish(())
    }

    fn elect_leaderless(&mut self, txn: &mut Txn) {
        let leaderless: Vec<(TopicId, PartitionIndex)> = txn
            .view()
            .partitions()
            .filter(|(_, _, p)| p.leader.is_none())
            .map(|(t, i, _)| (t.id, i))
            .collect();
        for (topic_id, index) in leaderless {
            let view = txn.view();
            let (topic, p) = topic_partition(view, topic_id, index);
            let mut change = self.next_state(
                view,
                topic,
                index,
                p,
                p.isr.clone(),
                p.elr.clone(),
                LeaderChoice::Keep,
            );
            // Still offline: already reported when it went offline.
            if change.as_ref().is_some_and(|(s, _)| s.leader.is_none()) {
                change = None;
            }
            self.push_change(txn, topic_id, index, change);
        }
    }

    fn rebalance(&mut self, txn: &mut Txn) {
        let movable: Vec<(TopicId, PartitionIndex, NodeId)> = txn
            .view()
            .partitions()
            .filter_map(|(t, i, p)| {
                let preferred = p.preferred_leader()?;
                let wanted = p.leader != Some(preferred)
                    && p.isr.contains(&preferred)
                    && txn.view().is_live(preferred)
                    && !p.recovering;
                wanted.then_some((t.id, i, preferred))
            })
            .collect();
        for (topic_id, index, preferred) in movable {
            let view = txn.view();
            let (topic, p) = topic_partition(view, topic_id, index);
            let change = self.next_state(
                view,
                topic,
                index,
                p,
                p.isr.clone(),
                p.elr.clone(),
                LeaderChoice::Preferred(preferred),
            );
            self.push_change(txn, topic_id, index, change);
        }
    }

    // ---------------------------------------------------------------- ISR changes

    /// A leader's ISR change: committed only if it names the current leader epoch and partition
    /// epoch, and adds only live members of their current incarnation (rule 5).
    pub fn alter_partition(
        &mut self,
        meta: &Metadata,
        request: &AlterPartitionRequest,
    ) -> Result<Decision<PartitionState>, ControllerError> {
        current_node(meta, request.node_id, request.incarnation)?;
        let topic = meta.topics.get(&request.topic_id).ok_or_else(|| {
            ControllerError::UnknownTopicOrPartition(format!("topic {}", request.topic_id))
        })?;
        let p = topic
            .partitions
            .get(request.partition as usize)
            .ok_or_else(|| {
                ControllerError::UnknownTopicOrPartition(format!(
                    "{}/{}",
                    topic.name, request.partition
                ))
            })?;
        if request.leader_epoch != p.leader_epoch {
            return Err(ControllerError::FencedLeaderEpoch {
                current: p.leader_epoch,
                got: request.leader_epoch,
            });
        }
        if p.leader != Some(request.node_id) {
            return Err(ControllerError::InvalidRequest(format!(
                "node {} is not the leader of {}/{} (the leader is {:?})",
                request.node_id, topic.name, request.partition, p.leader
            )));
        }
        if request.partition_epoch != p.partition_epoch {
            return Err(ControllerError::InvalidUpdateVersion {
                current: p.partition_epoch,
                got: request.partition_epoch,
            });
        }
        let mut isr = BTreeSet::new();
        for member in &request.new_isr {
            if !isr.insert(member.node_id) {
                return Err(ControllerError::InvalidRequest(format!(
                    "replica {} is twice in the proposed ISR",
                    member.node_id
                )));
            }
            if !p.replicas.contains(&member.node_id) {
                return Err(ControllerError::InvalidRequest(format!(
                    "replica {} is not assigned to {}/{}",
                    member.node_id, topic.name, request.partition
                )));
            }
            let ineligible = |reason: String| ControllerError::IneligibleReplica {
                node_id: member.node_id,
                reason,
            };
            let node = meta
                .node(member.node_id)
                .ok_or_else(|| ineligible("not registered".into()))?;
            if node.incarnation != member.incarnation {
                return Err(ineligible(format!(
                    "incarnation {} is not the current {}",
                    member.incarnation, node.incarnation
                )));
            }
            if !p.isr.contains(&member.node_id) && node.status != NodeStatus::Live {
                return Err(ineligible(format!("node is {:?}", node.status)));
            }
        }
        if !isr.contains(&request.node_id) {
            return Err(ControllerError::InvalidRequest(
                "the proposed ISR does not hold its leader".into(),
            ));
        }
        let recovering = p.recovering && !request.leader_recovered;
        if recovering && isr.len() > 1 {
            return Err(ControllerError::InvalidRequest(
                "a recovering partition's ISR cannot grow before its leader has recovered".into(),
            ));
        }
        let mut txn = Txn::new(meta);
        let mut change = self.next_state(
            meta,
            topic,
            request.partition,
            p,
            isr,
            p.elr.clone(),
            LeaderChoice::Keep,
        );
        if !recovering && p.recovering {
            let state = match change {
                Some((state, _)) => state,
                None => bump(p.clone(), false),
            };
            change = Some((
                PartitionState {
                    recovering: false,
                    ..state
                },
                None,
            ));
        }
        let reply = match &change {
            Some((state, _)) => state.clone(),
            None => p.clone(),
        };
        self.push_change(&mut txn, request.topic_id, request.partition, change);
        Ok(txn.finish(reply))
    }

    // ---------------------------------------------------------------- topics

    pub fn create_topic(
        &mut self,
        meta: &Metadata,
        request: &CreateTopicRequest,
    ) -> Result<Decision<TopicId>, ControllerError> {
        validate_topic_name(&request.name)?;
        if meta.topic_ids.contains_key(&request.name) {
            return Err(ControllerError::TopicAlreadyExists {
                name: request.name.clone(),
            });
        }
        if request.partitions == 0 || request.partitions > 100_000 {
            return Err(ControllerError::InvalidPartitions(format!(
                "{} partitions; between 1 and 100000 are allowed",
                request.partitions
            )));
        }
        let rf = request.replication_factor;
        if rf == 0 {
            return Err(ControllerError::InvalidReplicationFactor {
                requested: 0,
                live: 0,
            });
        }
        let config = &request.config;
        if config.min_insync_replicas == 0 || config.min_insync_replicas > rf {
            return Err(ControllerError::InvalidConfig(format!(
                "min.insync.replicas {} must be between 1 and the replication factor {rf}",
                config.min_insync_replicas
            )));
        }
        if config.max_message_bytes == 0 {
            return Err(ControllerError::InvalidConfig(
                "max.message.bytes must be positive".into(),
            ));
        }
        if let FlushPolicy::IntervalMs(ms) = config.flush {
            if ms <= 0 {
                return Err(ControllerError::InvalidConfig(format!(
                    "flush interval {ms} ms must be positive"
                )));
            }
        }
        let live: Vec<NodeId> = meta
            .nodes
            .values()
            .filter(|n| n.status == NodeStatus::Live)
            .map(|n| n.node_id)
            .collect();
        if live.len() < rf as usize {
            return Err(ControllerError::InvalidReplicationFactor {
                requested: rf,
                live: live.len(),
            });
        }
        let partitions = assign_replicas(meta, &live, request.partitions, rf)
            .into_iter()
            .map(|replicas| PartitionState {
                leader: replicas.first().copied(),
                // New, empty logs are identical: every replica is in sync.
                isr: replicas.iter().copied().collect(),
                replicas,
                elr: BTreeSet::new(),
                leader_epoch: 0,
                partition_epoch: 0,
                recovering: false,
            })
            .collect();
        let topic_id = TopicId(meta.next_topic_id);
        let mut txn = Txn::new(meta);
        txn.push(MetadataRecord::CreateTopic {
            topic: Topic {
                id: topic_id,
                name: request.name.clone(),
                kind: request.kind,
                config: config.clone(),
                partitions,
            },
        });
        Ok(txn.finish(topic_id))
    }

    pub fn delete_topic(
        &mut self,
        meta: &Metadata,
        name: &str,
    ) -> Result<Decision<TopicId>, ControllerError> {
        let topic_id = *meta
            .topic_ids
            .get(name)
            .ok_or_else(|| ControllerError::UnknownTopicOrPartition(name.to_string()))?;
        let mut txn = Txn::new(meta);
        txn.push(MetadataRecord::DeleteTopic { topic_id });
        for session in self.sessions.values_mut() {
            session.leos.retain(|(t, _), _| *t != topic_id);
        }
        Ok(txn.finish(topic_id))
    }

    // ---------------------------------------------------------------- the election rules

    /// The state a partition moves to when its ISR becomes `isr` and its ELR `elr` (before the
    /// ELR rules below), with the leader chosen by `choice`. `None` if nothing changes.
    #[allow(clippy::too_many_arguments)]
    fn next_state(
        &self,
        view: &Metadata,
        topic: &Topic,
        index: PartitionIndex,
        p: &PartitionState,
        mut isr: BTreeSet<NodeId>,
        mut elr: BTreeSet<NodeId>,
        choice: LeaderChoice,
    ) -> Option<(PartitionState, Option<Report>)> {
        let min_isr = topic.config.min_insync_replicas as usize;
        // KIP-966: replicas leaving an ISR that is below min.insync.replicas hold everything
        // committed (HW has stopped), so they stay eligible.
        if isr.len() < min_isr {
            elr.extend(p.isr.difference(&isr).copied());
        }
        let mut recovering = p.recovering;
        let mut report = None;
        let rank = |id: NodeId| {
            (
                std::cmp::Reverse(self.reported_leo(id, topic.id, index)),
                id,
            )
        };
        let best =
            |candidates: &mut dyn Iterator<Item = NodeId>| candidates.min_by_key(|id| rank(*id));
        let keep = p.leader.filter(|l| {
            isr.contains(l)
                && view
                    .node_status(*l)
                    .is_some_and(|s| s != NodeStatus::Fenced)
        });
        let leader = match choice {
            LeaderChoice::Preferred(id) => Some(id),
            LeaderChoice::Keep if keep.is_some() => keep,
            LeaderChoice::Keep | LeaderChoice::Elect => {
                let live_isr = best(&mut isr.iter().copied().filter(|m| view.is_live(*m)));
                let any_isr = || {
                    best(
                        &mut isr
                            .iter()
                            .copied()
                            .filter(|m| view.node_status(*m) == Some(NodeStatus::ShuttingDown)),
                    )
                };
                if let Some(l) = live_isr.or_else(any_isr) {
                    Some(l)
                } else if let Some(l) = best(&mut elr.iter().copied().filter(|m| view.is_live(*m)))
                {
                    isr = BTreeSet::from([l]);
                    Some(l)
                } else if topic.config.unclean_leader_election {
                    let l = best(&mut p.replicas.iter().copied().filter(|m| view.is_live(*m)));
                    if let Some(l) = l {
                        isr = BTreeSet::from([l]);
                        elr.clear();
                        recovering = true;
                        report = Some(Report::UncleanElection {
                            topic: topic.name.clone(),
                            partition: index,
                            leader: l,
                            leader_epoch: p.leader_epoch + 1,
                        });
                    }
                    l
                } else {
                    None
                }
            }
        };
        elr.retain(|m| !isr.contains(m));
        if isr.len() >= min_isr {
            elr.clear();
        }
        if leader.is_none() && p.leader.is_some() {
            report = Some(Report::PartitionOffline {
                topic: topic.name.clone(),
                partition: index,
            });
        }
        if leader == p.leader && isr == p.isr && elr == p.elr && recovering == p.recovering {
            return None;
        }
        let state = PartitionState {
            replicas: p.replicas.clone(),
            leader,
            isr,
            elr,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            recovering,
        };
        Some((bump(state, leader != p.leader), report))
    }

    fn push_change(
        &mut self,
        txn: &mut Txn,
        topic_id: TopicId,
        partition: PartitionIndex,
        change: Option<(PartitionState, Option<Report>)>,
    ) {
        let Some((state, report)) = change else {
            return;
        };
        let before = txn
            .view()
            .partition(topic_id, partition)
            .expect("a change is decided on an existing partition");
        let record = MetadataRecord::ChangePartition {
            topic_id,
            partition,
            expected_leader_epoch: before.leader_epoch,
            expected_partition_epoch: before.partition_epoch,
            state,
        };
        txn.push(record);
        txn.reports.extend(report);
    }
}

/// One step up of the partition epoch, and of the leader epoch if the leader changed.
fn bump(mut state: PartitionState, leader_changed: bool) -> PartitionState {
    state.partition_epoch += 1;
    if leader_changed {
        state.leader_epoch += 1;
    }
    state
}

fn topic_partition(
    view: &Metadata,
    topic_id: TopicId,
    index: PartitionIndex,
) -> (&Topic, &PartitionState) {
    let topic = &view.topics[&topic_id];
    (topic, &topic.partitions[index as usize])
}

/// The node of a request, which must be the named incarnation and not fenced.
fn current_node(
    meta: &Metadata,
    node_id: NodeId,
    incarnation: u64,
) -> Result<&NodeRecord, ControllerError> {
    let node = meta
        .node(node_id)
        .ok_or(ControllerError::UnknownNode { node_id })?;
    if node.incarnation != incarnation {
        return Err(ControllerError::StaleIncarnation {
            node_id,
            current: node.incarnation,
            got: incarnation,
        });
    }
    if node.status == NodeStatus::Fenced {
        return Err(ControllerError::NodeFenced { node_id });
    }
    Ok(node)
}

/// Does the node lead a partition that another live ISR member could lead?
fn leads_movable(meta: &Metadata, node_id: NodeId) -> bool {
    meta.partitions().any(|(_, _, p)| {
        p.leader == Some(node_id) && p.isr.iter().any(|m| *m != node_id && meta.is_live(*m))
    })
}

/// Kafka's topic name rules.
fn validate_topic_name(name: &str) -> Result<(), ControllerError> {
    let bad = |why: &str| Err(ControllerError::InvalidTopic(format!("{name:?}: {why}")));
    if name.is_empty() {
        return bad("empty");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not allowed");
    }
    if name.len() > 249 {
        return bad("longer than 249 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
    {
        return bad("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// Spreads replicas evenly: partition `p` gets `rf` consecutive live nodes of a ring, starting
/// at its own position, so preferred leaders (the first replica) go round the ring too. The
/// ring starts after the nodes that already prefer-lead the most partitions, so that topics
/// created one after another do not all put their partition 0 on the same node.
fn assign_replicas(meta: &Metadata, live: &[NodeId], partitions: u32, rf: u16) -> Vec<Vec<NodeId>> {
    let mut preferred_count: BTreeMap<NodeId, usize> = live.iter().map(|n| (*n, 0)).collect();
    for (_, _, p) in meta.partitions() {
        if let Some(count) = p
            .preferred_leader()
            .and_then(|l| preferred_count.get_mut(&l))
        {
            *count += 1;
        }
    }
    let start = live
        .iter()
        .enumerate()
        .min_by_key(|(_, n)| (preferred_count[n], **n))
        .map_or(0, |(i, _)| i);
    let n = live.len();
    (0..partitions as usize)
        .map(|p| {
            (0..rf as usize)
                .map(|j| live[(start + p + j) % n])
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests;
