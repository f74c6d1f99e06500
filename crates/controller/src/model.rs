//! The cluster metadata and the records that change it.
//!
//! [`Metadata`] is the replicated state: nodes, topics, and per partition the replicas, leader,
//! ISR, eligible leader replicas (ELR), leader epoch and partition epoch. It changes only by
//! applying a committed [`MetadataBatch`] ([`Metadata::apply_batch`]), which is deterministic:
//! every voter that applies the same batches holds the same metadata.
//!
//! Records are *conditional*: a partition change names the epochs it was decided against, a
//! registration names the incarnation it allocates, a topic creation the id it allocates. A
//! batch decided on a stale view (for instance by a controller that lost its leadership while
//! deciding) fails as a whole and changes nothing; the active controller then decides again.
//! After every batch the invariants of [`Metadata::check_invariants`] must hold, or the batch is
//! refused as well, so a buggy decision can never corrupt the committed state.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A node (broker) id, as on Kafka's wire.
pub type NodeId = i32;
/// A partition index inside its topic.
pub type PartitionIndex = u32;

/// A topic's id: allocated by the controller from a counter, never reused, so a topic deleted
/// and created again under the same name is a different topic. The server shows it to Kafka
/// clients as a UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TopicId(pub u128);

impl std::fmt::Display for TopicId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// One listener of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub listener: String,
    pub host: String,
    pub port: u16,
}

/// Where a registered node stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeStatus {
    /// Registered, heartbeating: may lead, may join ISRs.
    Live,
    /// Asked to stop: its leaderships are being moved away, and it joins no ISR.
    ShuttingDown,
    /// Its session expired or its process is known dead: in no ISR, leads nothing, until it
    /// registers again as a new incarnation.
    Fenced,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node_id: NodeId,
    /// Allocated by the controller at registration, cluster-wide increasing (Kafka's broker
    /// epoch). A restarted process, or one with a wiped disk, gets a new one; requests naming an
    /// older one are refused.
    pub incarnation: u64,
    /// Chosen by the node's process at start; a retried registration from the same process is
    /// recognised and gets the same incarnation.
    pub process_id: u128,
    pub addresses: Vec<Endpoint>,
    pub rack: Option<String>,
    pub status: NodeStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopicKind {
    /// An append-only log.
    Log,
    /// A key-value table: records are (key, value | tombstone), compacted.
    Table,
}

/// When a topic's replicas make appended data durable (mirrors the storage engine's policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FlushPolicy {
    Always,
    IntervalMs(i64),
    Never,
}

impl From<FlushPolicy> for tandem_storage::FlushPolicy {
    fn from(policy: FlushPolicy) -> tandem_storage::FlushPolicy {
        match policy {
            FlushPolicy::Always => tandem_storage::FlushPolicy::Always,
            FlushPolicy::IntervalMs(ms) => tandem_storage::FlushPolicy::IntervalMs(ms),
            FlushPolicy::Never => tandem_storage::FlushPolicy::Never,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// HW does not advance, and acks=all is refused, while the ISR is smaller than this.
    pub min_insync_replicas: u16,
    /// May a replica outside the ISR and ELR be elected (possible data loss, always reported)?
    pub unclean_leader_election: bool,
    pub flush: FlushPolicy,
    pub retention_ms: Option<i64>,
    pub retention_bytes: Option<u64>,
    pub max_message_bytes: u32,
    /// Segments roll at this size (`segment.bytes`); only sealed segments are compacted.
    pub segment_bytes: u64,
    /// Tables: how long compaction keeps a tombstone (`delete.retention.ms`), so that
    /// replicas and consumers behind see the delete.
    pub tombstone_retention_ms: i64,
}

impl Default for TopicConfig {
    fn default() -> TopicConfig {
        TopicConfig {
            min_insync_replicas: 1,
            unclean_leader_election: false,
            flush: FlushPolicy::Never,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            max_message_bytes: 1_048_588,
            segment_bytes: 1 << 30,
            tombstone_retention_ms: 24 * 3600 * 1000,
        }
    }
}

/// The replicated state of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The assignment; the first is the preferred leader.
    pub replicas: Vec<NodeId>,
    pub leader: Option<NodeId>,
    /// In-sync replicas; holds the leader whenever there is one.
    pub isr: BTreeSet<NodeId>,
    /// Eligible leader replicas (KIP-966): replicas that left the ISR while it was below
    /// min.insync.replicas, so they hold everything committed. Disjoint from the ISR.
    pub elr: BTreeSet<NodeId>,
    /// Bumped on every leader change: the fencing token of the data path (rule 1).
    pub leader_epoch: i32,
    /// Bumped on every change of this state: the version ISR proposals must name (rule 5).
    pub partition_epoch: i32,
    /// Set by an unclean election: the leader may lack committed data; cleared by the leader.
    pub recovering: bool,
}

impl PartitionState {
    pub fn preferred_leader(&self) -> Option<NodeId> {
        self.replicas.first().copied()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    pub id: TopicId,
    pub name: String,
    pub kind: TopicKind,
    pub config: TopicConfig,
    pub partitions: Vec<PartitionState>,
}

/// One change to the metadata. See the module header for why each is conditional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataRecord {
    /// Registers `node` (status Live) with the incarnation it names, which must be the next one.
    /// Replaces any previous registration of that node id, which must already be fenced.
    RegisterNode {
        node: NodeRecord,
    },
    /// Fences the node if it is still the named incarnation.
    FenceNode {
        node_id: NodeId,
        incarnation: u64,
    },
    /// Marks the node as shutting down if it is the named incarnation and live.
    BeginShutdown {
        node_id: NodeId,
        incarnation: u64,
    },
    /// Creates a topic with the next topic id.
    CreateTopic {
        topic: Topic,
    },
    DeleteTopic {
        topic_id: TopicId,
    },
    /// Replaces a partition's state, if its epochs are still the ones named.
    ChangePartition {
        topic_id: TopicId,
        partition: PartitionIndex,
        expected_leader_epoch: i32,
        expected_partition_epoch: i32,
        state: PartitionState,
    },
}

/// The unit of a Raft entry: applied all or nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataBatch {
    pub records: Vec<MetadataRecord>,
}

/// Why a batch was not applied. Deterministic: every voter refuses the same batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ApplyError {
    #[error("registration of node {node_id} names incarnation {got}, the next one is {next}")]
    WrongIncarnation {
        node_id: NodeId,
        got: u64,
        next: u64,
    },
    #[error("node {node_id} is registered and not fenced; fence it before registering it again")]
    NodeNotFenced { node_id: NodeId },
    #[error("node {node_id} is not registered")]
    UnknownNode { node_id: NodeId },
    #[error("node {node_id} is incarnation {current}, the record names {got}")]
    StaleIncarnation {
        node_id: NodeId,
        current: u64,
        got: u64,
    },
    #[error("node {node_id} is {status:?}, the record needs it live")]
    NodeNotLive { node_id: NodeId, status: NodeStatus },
    #[error("topic {name:?} already exists")]
    TopicExists { name: String },
    #[error("new topic has id {got}, the next one is {next}")]
    WrongTopicId { got: TopicId, next: TopicId },
    #[error("unknown topic {topic_id} or partition {partition:?}")]
    UnknownPartition {
        topic_id: TopicId,
        partition: Option<PartitionIndex>,
    },
    #[error(
        "partition {topic_id}/{partition} is at epochs ({leader_epoch}, {partition_epoch}), \
         the change was decided at ({expected_leader_epoch}, {expected_partition_epoch})"
    )]
    StaleEpochs {
        topic_id: TopicId,
        partition: PartitionIndex,
        leader_epoch: i32,
        partition_epoch: i32,
        expected_leader_epoch: i32,
        expected_partition_epoch: i32,
    },
    #[error("invariant violated: {0}")]
    Invariant(String),
}

/// The cluster metadata: what the controller quorum agrees on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    pub topics: BTreeMap<TopicId, Topic>,
    /// Name -> id of the live topics.
    pub topic_ids: BTreeMap<String, TopicId>,
    /// The id the next topic gets.
    pub next_topic_id: u128,
    /// The incarnation the next registration gets.
    pub next_incarnation: u64,
}

impl Default for Metadata {
    fn default() -> Metadata {
        Metadata {
            nodes: BTreeMap::new(),
            topics: BTreeMap::new(),
            topic_ids: BTreeMap::new(),
            // 0 is "no id" in Kafka's UUIDs.
            next_topic_id: 1,
            next_incarnation: 1,
        }
    }
}

impl Metadata {
    pub fn node(&self, node_id: NodeId) -> Option<&NodeRecord> {
        self.nodes.get(&node_id)
    }

    pub fn node_status(&self, node_id: NodeId) -> Option<NodeStatus> {
        self.nodes.get(&node_id).map(|n| n.status)
    }

    pub fn is_live(&self, node_id: NodeId) -> bool {
        self.node_status(node_id) == Some(NodeStatus::Live)
    }

    pub fn topic_by_name(&self, name: &str) -> Option<&Topic> {
        self.topic_ids.get(name).and_then(|id| self.topics.get(id))
    }

    pub fn partition(
        &self,
        topic_id: TopicId,
        partition: PartitionIndex,
    ) -> Option<&PartitionState> {
        self.topics
            .get(&topic_id)
            .and_then(|t| t.partitions.get(partition as usize))
    }

    /// Every partition, with its topic.
    pub fn partitions(&self) -> impl Iterator<Item = (&Topic, PartitionIndex, &PartitionState)> {
        self.topics.values().flat_map(|t| {
            t.partitions
                .iter()
                .enumerate()
                .map(move |(i, p)| (t, i as PartitionIndex, p))
        })
    }

    /// Applies a committed batch: all of it, or (with the reason) none of it.
    pub fn apply_batch(&mut self, batch: &MetadataBatch) -> Result<(), ApplyError> {
        if batch.records.is_empty() {
            return Ok(());
        }
        let mut next = self.clone();
        for record in &batch.records {
            next.apply_record(record)?;
        }
        next.check_invariants().map_err(ApplyError::Invariant)?;
        *self = next;
        Ok(())
    }

    /// Applies one record on its own; [`apply_batch`](Self::apply_batch) is the committed path.
    pub fn apply_record(&mut self, record: &MetadataRecord) -> Result<(), ApplyError> {
        match record {
            MetadataRecord::RegisterNode { node } => {
                if node.incarnation != self.next_incarnation {
                    return Err(ApplyError::WrongIncarnation {
                        node_id: node.node_id,
                        got: node.incarnation,
                        next: self.next_incarnation,
                    });
                }
                if let Some(old) = self.nodes.get(&node.node_id) {
                    if old.status != NodeStatus::Fenced {
                        return Err(ApplyError::NodeNotFenced {
                            node_id: node.node_id,
                        });
                    }
                }
                if node.status != NodeStatus::Live {
                    return Err(ApplyError::NodeNotLive {
                        node_id: node.node_id,
                        status: node.status,
                    });
                }
                self.next_incarnation += 1;
                self.nodes.insert(node.node_id, node.clone());
            }
            MetadataRecord::FenceNode {
                node_id,
                incarnation,
            } => {
                let node = self.current_node_mut(*node_id, *incarnation)?;
                node.status = NodeStatus::Fenced;
            }
            MetadataRecord::BeginShutdown {
                node_id,
                incarnation,
            } => {
                let node = self.current_node_mut(*node_id, *incarnation)?;
                if node.status != NodeStatus::Live {
                    return Err(ApplyError::NodeNotLive {
                        node_id: *node_id,
                        status: node.status,
                    });
                }
                node.status = NodeStatus::ShuttingDown;
            }
            MetadataRecord::CreateTopic { topic } => {
                if self.topic_ids.contains_key(&topic.name) {
                    return Err(ApplyError::TopicExists {
                        name: topic.name.clone(),
                    });
                }
                if topic.id.0 != self.next_topic_id {
                    return Err(ApplyError::WrongTopicId {
                        got: topic.id,
                        next: TopicId(self.next_topic_id),
                    });
                }
                self.next_topic_id += 1;
                self.topic_ids.insert(topic.name.clone(), topic.id);
                self.topics.insert(topic.id, topic.clone());
            }
            MetadataRecord::DeleteTopic { topic_id } => {
                let topic = self
                    .topics
                    .remove(topic_id)
                    .ok_or(ApplyError::UnknownPartition {
                        topic_id: *topic_id,
                        partition: None,
                    })?;
                self.topic_ids.remove(&topic.name);
            }
            MetadataRecord::ChangePartition {
                topic_id,
                partition,
                expected_leader_epoch,
                expected_partition_epoch,
                state,
            } => {
                let current = self
                    .topics
                    .get_mut(topic_id)
                    .and_then(|t| t.partitions.get_mut(*partition as usize))
                    .ok_or(ApplyError::UnknownPartition {
                        topic_id: *topic_id,
                        partition: Some(*partition),
                    })?;
                if current.leader_epoch != *expected_leader_epoch
                    || current.partition_epoch != *expected_partition_epoch
                {
                    return Err(ApplyError::StaleEpochs {
                        topic_id: *topic_id,
                        partition: *partition,
                        leader_epoch: current.leader_epoch,
                        partition_epoch: current.partition_epoch,
                        expected_leader_epoch: *expected_leader_epoch,
                        expected_partition_epoch: *expected_partition_epoch,
                    });
                }
                check_transition(current, state).map_err(|reason| {
                    ApplyError::Invariant(format!("partition {topic_id}/{partition}: {reason}"))
                })?;
                *current = state.clone();
            }
        }
        Ok(())
    }

    fn current_node_mut(
        &mut self,
        node_id: NodeId,
        incarnation: u64,
    ) -> Result<&mut NodeRecord, ApplyError> {
        let node = self
            .nodes
            .get_mut(&node_id)
            .ok_or(ApplyError::UnknownNode { node_id })?;
        if node.incarnation != incarnation {
            return Err(ApplyError::StaleIncarnation {
                node_id,
                current: node.incarnation,
                got: incarnation,
            });
        }
        Ok(node)
    }

    /// The invariants every committed state keeps (rules 5 and 7):
    /// - ISR and ELR are subsets of the replicas, and disjoint;
    /// - a leader is a member of the ISR, and its node is not fenced;
    /// - every ISR member is a registered node that is not fenced.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (name, id) in &self.topic_ids {
            match self.topics.get(id) {
                Some(t) if &t.name == name => {}
                _ => {
                    return Err(format!(
                        "topic name {name:?} points at a missing topic {id}"
                    ))
                }
            }
        }
        if self.topic_ids.len() != self.topics.len() {
            return Err("topics and topic names disagree".into());
        }
        for (topic, index, p) in self.partitions() {
            let at = || format!("{}/{index}", topic.name);
            check_shape(p).map_err(|e| format!("{}: {e}", at()))?;
            for member in &p.isr {
                match self.node_status(*member) {
                    None => return Err(format!("{}: ISR member {member} is not registered", at())),
                    Some(NodeStatus::Fenced) => {
                        return Err(format!("{}: ISR member {member} is fenced", at()))
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }
}

/// Structural checks on one partition state.
fn check_shape(p: &PartitionState) -> Result<(), String> {
    let replicas: BTreeSet<NodeId> = p.replicas.iter().copied().collect();
    if replicas.len() != p.replicas.len() || replicas.is_empty() {
        return Err(format!("bad replica list {:?}", p.replicas));
    }
    if !p.isr.is_subset(&replicas) {
        return Err(format!("ISR {:?} outside replicas {:?}", p.isr, p.replicas));
    }
    if !p.elr.is_subset(&replicas) {
        return Err(format!("ELR {:?} outside replicas {:?}", p.elr, p.replicas));
    }
    if !p.isr.is_disjoint(&p.elr) {
        return Err(format!("ISR {:?} and ELR {:?} overlap", p.isr, p.elr));
    }
    if let Some(leader) = p.leader {
        if !p.isr.contains(&leader) {
            return Err(format!("leader {leader} not in ISR {:?}", p.isr));
        }
    }
    Ok(())
}

/// Checks that `after` may follow `before`: epochs only go forward, every change bumps the
/// partition epoch, and a leader change bumps the leader epoch.
fn check_transition(before: &PartitionState, after: &PartitionState) -> Result<(), String> {
    check_shape(after)?;
    if after.replicas != before.replicas {
        return Err("replica reassignment is not supported".into());
    }
    if after.partition_epoch != before.partition_epoch + 1 {
        return Err(format!(
            "partition epoch goes {} -> {}, must go up by one",
            before.partition_epoch, after.partition_epoch
        ));
    }
    let bumped = after.leader_epoch == before.leader_epoch + 1;
    if !(bumped || after.leader_epoch == before.leader_epoch) {
        return Err(format!(
            "leader epoch goes {} -> {}",
            before.leader_epoch, after.leader_epoch
        ));
    }
    if after.leader != before.leader && !bumped {
        return Err(format!(
            "leader changes {:?} -> {:?} without a new leader epoch",
            before.leader, after.leader
        ));
    }
    Ok(())
}
