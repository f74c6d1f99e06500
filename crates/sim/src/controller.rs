//! The simulated controller: the real, pure [`ActiveController`] deciding on committed
//! [`Metadata`], on virtual time. "Committed" is modelled as applying the decision's records
//! with [`Metadata::apply_batch`] after a random commit delay, one decision at a time (as
//! `ControllerNode` holds a lock across decide + commit). A controller failover drops the
//! active controller (a decision in flight may or may not commit), waits for an election,
//! and builds a fresh `ActiveController` from the committed metadata, which starts every
//! session afresh, as the real one does.
//!
//! Not simulated: openraft's own timing, elections and log replication among voters. Those
//! are covered by crates/controller/tests/quorum.rs; here a commit is atomic and ordered.

use std::collections::BTreeMap;
use std::sync::Arc;

use tandem_controller::model::FlushPolicy;
use tandem_controller::{
    ActiveController, ControllerConfig, ControllerError, CreateTopicRequest, Metadata,
    MetadataBatch, MetadataRecord, Report, TopicConfig, TopicKind,
};

use crate::checks;
use crate::config::{DurabilityMode, SimConfig};
use crate::net::{Endpoint, Message, Payload};
use crate::world::{Ev, World};

const TICK_MS: i64 = 50;
pub const TOPIC: &str = "sim";

pub struct ControllerSim {
    pub config: ControllerConfig,
    pub metadata: Arc<Metadata>,
    pub version: u64,
    active: Option<ActiveController>,
    /// Decisions wait for the one before them to commit.
    busy_until: i64,
    pending: BTreeMap<u64, Pending>,
    next_commit: u64,
    topic: CreateTopicRequest,
}

/// A decision waiting for its commit, and the reply to send once it commits.
struct Pending {
    records: Vec<MetadataRecord>,
    reply: Option<(Endpoint, Option<u64>, Payload)>,
}

impl ControllerSim {
    pub fn new(cfg: &SimConfig) -> ControllerSim {
        let topic = CreateTopicRequest {
            name: TOPIC.into(),
            partitions: cfg.partitions,
            replication_factor: cfg.replication_factor,
            kind: TopicKind::Log,
            config: TopicConfig {
                min_insync_replicas: cfg.min_insync_replicas,
                unclean_leader_election: false,
                flush: match cfg.durability {
                    DurabilityMode::FlushAlways => FlushPolicy::Always,
                    DurabilityMode::FlushNever => FlushPolicy::Never,
                },
                retention_ms: None,
                ..TopicConfig::default()
            },
        };
        ControllerSim {
            config: ControllerConfig::default(),
            metadata: Arc::new(Metadata::default()),
            version: 0,
            active: None,
            busy_until: 0,
            pending: BTreeMap::new(),
            next_commit: 0,
            topic,
        }
    }

    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }
}

impl World {
    pub fn controller_up(&mut self) {
        if self.controller.active.is_none() {
            self.trace(|| "controller: a new active controller takes over".into());
            self.controller.active = Some(ActiveController::new(self.controller.config.clone()));
        }
    }

    pub fn controller_failover(&mut self) {
        if self.controller.active.take().is_none() {
            return;
        }
        // A decision in flight may have reached the Raft log or not; its reply is lost.
        let pending = std::mem::take(&mut self.controller.pending);
        for (_, p) in pending {
            if self.rng.chance(0.5) {
                self.apply(p.records);
            }
        }
        self.controller.busy_until = 0;
        let back = self.now + self.rng.range(300, 1_200);
        self.trace(|| "controller: the active controller is gone".into());
        self.schedule(back, Ev::ControllerUp);
    }

    pub fn controller_tick(&mut self) {
        self.schedule(self.now + TICK_MS, Ev::ControllerTick);
        let now = self.now;
        if self.controller.busy_until > now {
            return;
        }
        let meta = self.controller.metadata.clone();
        let Some(core) = self.controller.active.as_mut() else {
            return;
        };
        // A quorum round confirms this controller's leadership every tick (rule 8's leases).
        core.leadership_confirmed(now);
        if meta.topics.is_empty() {
            let registered = meta.nodes.len() as i32 == self.cfg.nodes;
            if registered {
                if let Ok(d) = core.create_topic(&meta, &self.controller.topic) {
                    self.start_commit(d.records, d.reports, None);
                }
            }
            return;
        }
        let d = core.tick(&meta, now);
        self.start_commit(d.records, d.reports, None);
    }

    pub fn controller_receive(&mut self, m: Message) {
        if self.controller.active.is_none() {
            return; // no active controller: the request times out at the node
        }
        if self.controller.busy_until > self.now {
            let at = self.controller.busy_until;
            self.schedule(at, Ev::ControllerProcess(m));
            return;
        }
        let now = self.now;
        let meta = self.controller.metadata.clone();
        let version = self.controller.version;
        let core = self.controller.active.as_mut().expect("checked above");
        let to = m.from;
        let to_generation = m.to_generation;
        match m.payload {
            Payload::Register(request) => match core.register(&meta, now, &request) {
                Ok(d) => {
                    let reply = Payload::RegisterReply(Ok(d.reply));
                    self.start_commit(d.records, d.reports, Some((to, None, reply)));
                }
                Err(e) => self.send(
                    Endpoint::Controller,
                    to,
                    None,
                    Payload::RegisterReply(Err(e)),
                ),
            },
            Payload::Heartbeat {
                request,
                sent_local_ms,
                known_version,
            } => {
                let result = core.heartbeat(&meta, now, &request);
                let metadata = (known_version < version).then(|| (version, meta.clone()));
                match result {
                    Ok(d) => {
                        let reply = Payload::HeartbeatReply {
                            sent_local_ms,
                            result: Ok(d.reply),
                            metadata,
                        };
                        self.start_commit(d.records, d.reports, Some((to, None, reply)));
                    }
                    Err(e) => {
                        let reply = Payload::HeartbeatReply {
                            sent_local_ms,
                            result: Err(e),
                            metadata,
                        };
                        self.send(Endpoint::Controller, to, None, reply);
                    }
                }
            }
            Payload::AlterPartition {
                request_id,
                part,
                request,
            } => match core.alter_partition(&meta, &request) {
                Ok(d) => {
                    let reply = Payload::AlterPartitionReply {
                        request_id,
                        part,
                        result: Ok(d.reply),
                    };
                    self.start_commit(d.records, d.reports, Some((to, to_generation, reply)));
                }
                Err(e) => {
                    let reply = Payload::AlterPartitionReply {
                        request_id,
                        part,
                        result: Err(e),
                    };
                    self.send(Endpoint::Controller, to, to_generation, reply);
                }
            },
            Payload::NodeStopped {
                node_id,
                incarnation,
            } => {
                let d = core.node_stopped(&meta, node_id, incarnation);
                self.start_commit(d.records, d.reports, None);
            }
            Payload::MetadataRequest => {
                let reply = Payload::Metadata {
                    version,
                    metadata: meta,
                };
                self.send(Endpoint::Controller, to, to_generation, reply);
            }
            _ => {}
        }
    }

    fn start_commit(
        &mut self,
        records: Vec<MetadataRecord>,
        reports: Vec<Report>,
        reply: Option<(Endpoint, Option<u64>, Payload)>,
    ) {
        for r in &reports {
            if matches!(r, Report::UncleanElection { .. }) {
                self.fail(checks::Violation::new(
                    "no-unclean-election",
                    format!("unclean election with unclean.leader.election off: {r:?}"),
                ));
            }
            self.trace(|| format!("controller report {r:?}"));
        }
        if records.is_empty() {
            if let Some((to, generation, payload)) = reply {
                self.send(Endpoint::Controller, to, generation, payload);
            }
            return;
        }
        let delay = self.rng.range(0, self.cfg.faults.max_commit_delay_ms);
        self.controller.next_commit += 1;
        let commit_id = self.controller.next_commit;
        self.controller
            .pending
            .insert(commit_id, Pending { records, reply });
        self.controller.busy_until = self.now + delay + 1;
        self.schedule(self.now + delay, Ev::ControllerCommit { commit_id });
    }

    pub fn controller_commit(&mut self, commit_id: u64) {
        let Some(p) = self.controller.pending.remove(&commit_id) else {
            return; // lost in a failover
        };
        let applied = self.apply(p.records);
        if let Some((to, generation, payload)) = p.reply {
            let payload = match (applied, payload) {
                (true, payload) => payload,
                // Refused on apply (decided on a stale view): the asker retries.
                (
                    false,
                    Payload::AlterPartitionReply {
                        request_id, part, ..
                    },
                ) => {
                    let e = ControllerError::Conflict("metadata changed".into());
                    Payload::AlterPartitionReply {
                        request_id,
                        part,
                        result: Err(e),
                    }
                }
                (false, _) => return,
            };
            self.send(Endpoint::Controller, to, generation, payload);
        }
    }

    /// Commits records: applies them, checks the committed epochs, and tells every node.
    fn apply(&mut self, records: Vec<MetadataRecord>) -> bool {
        let mut next = (*self.controller.metadata).clone();
        if let Err(e) = next.apply_batch(&MetadataBatch { records }) {
            self.trace(|| format!("controller: batch refused on apply: {e}"));
            return false;
        }
        if let Err(v) = checks::epochs_monotonic::check_committed(&self.controller.metadata, &next)
        {
            self.fail(v);
        }
        for (_, _, p) in next.partitions() {
            let before = self
                .controller
                .metadata
                .partitions()
                .find(|(_, _, q)| q.replicas == p.replicas)
                .map(|(_, _, q)| q.leader_epoch);
            if before.is_some_and(|e| e != p.leader_epoch) {
                self.stats.elections += 1;
            }
        }
        self.controller.version += 1;
        let version = self.controller.version;
        self.controller.metadata = Arc::new(next);
        let meta = self.controller.metadata.clone();
        self.trace(|| {
            let parts: Vec<String> = meta
                .partitions()
                .map(|(_, i, p)| {
                    format!(
                        "p{i} leader {:?} epochs ({}, {}) isr {:?} elr {:?}",
                        p.leader, p.leader_epoch, p.partition_epoch, p.isr, p.elr
                    )
                })
                .collect();
            let nodes: Vec<String> = meta
                .nodes
                .values()
                .map(|n| format!("n{}#{} {:?}", n.node_id, n.incarnation, n.status))
                .collect();
            format!(
                "controller: committed v{version}: {} | {}",
                parts.join("; "),
                nodes.join(" ")
            )
        });
        let ids: Vec<i32> = self.nodes.keys().copied().collect();
        for n in ids {
            let payload = Payload::Metadata {
                version,
                metadata: meta.clone(),
            };
            self.send(Endpoint::Controller, Endpoint::Node(n), None, payload);
        }
        true
    }
}
