//! Scenario tests of the controller's decisions: each drives the pure core with events and
//! commits its records as the quorum would, then checks the exact outcome.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::model::{ApplyError, MetadataBatch};

const SESSION_MS: i64 = 600;

/// The pure controller plus the committed metadata, with time under the test's control.
struct Harness {
    meta: Metadata,
    ctl: ActiveController,
    now_ms: i64,
    reports: Vec<Report>,
    /// node id -> incarnation of its current process.
    incarnations: BTreeMap<NodeId, u64>,
    next_process: u128,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            meta: Metadata::default(),
            ctl: ActiveController::new(ControllerConfig::default()),
            now_ms: 1_000,
            reports: Vec::new(),
            incarnations: BTreeMap::new(),
            next_process: 1,
        }
    }

    fn with_nodes(ids: &[NodeId]) -> Harness {
        let mut h = Harness::new();
        for id in ids {
            h.register(*id);
        }
        h
    }

    /// Commits a decision the way the quorum would: the whole batch or nothing.
    fn commit<T>(&mut self, decision: Decision<T>) -> T {
        self.meta
            .apply_batch(&MetadataBatch {
                records: decision.records,
            })
            .expect("a fresh decision applies");
        self.reports.extend(decision.reports);
        decision.reply
    }

    fn register_with(&mut self, node_id: NodeId, clean: bool) -> u64 {
        self.register_full(node_id, clean, false)
    }

    fn register_full(&mut self, node_id: NodeId, clean: bool, lost_data: bool) -> u64 {
        let process_id = self.next_process;
        self.next_process += 1;
        let request = RegisterRequest {
            node_id,
            process_id,
            addresses: vec![Endpoint {
                listener: "PLAINTEXT".into(),
                host: "127.0.0.1".into(),
                port: 9000 + node_id as u16,
            }],
            rack: None,
            previous_shutdown_clean: clean,
            lost_data,
        };
        let decision = self
            .ctl
            .register(&self.meta, self.now_ms, &request)
            .unwrap();
        let reply = self.commit(decision);
        self.incarnations.insert(node_id, reply.incarnation);
        reply.incarnation
    }

    fn register(&mut self, node_id: NodeId) -> u64 {
        self.register_with(node_id, true)
    }

    fn heartbeat_request(
        &self,
        node_id: NodeId,
        leos: &[(TopicId, PartitionIndex, i64)],
    ) -> HeartbeatRequest {
        HeartbeatRequest {
            node_id,
            incarnation: self.incarnations[&node_id],
            replica_leos: leos
                .iter()
                .map(|(t, p, leo)| ReplicaLeo {
                    topic_id: *t,
                    partition: *p,
                    log_end_offset: *leo,
                })
                .collect(),
            want_shutdown: false,
        }
    }

    fn heartbeat(
        &mut self,
        node_id: NodeId,
        leos: &[(TopicId, PartitionIndex, i64)],
    ) -> HeartbeatReply {
        let request = self.heartbeat_request(node_id, leos);
        let decision = self
            .ctl
            .heartbeat(&self.meta, self.now_ms, &request)
            .unwrap();
        self.commit(decision)
    }

    fn request_shutdown(&mut self, node_id: NodeId) -> HeartbeatReply {
        let mut request = self.heartbeat_request(node_id, &[]);
        request.want_shutdown = true;
        let decision = self
            .ctl
            .heartbeat(&self.meta, self.now_ms, &request)
            .unwrap();
        self.commit(decision)
    }

    fn create(&mut self, name: &str, partitions: u32, rf: u16, config: TopicConfig) -> TopicId {
        let request = CreateTopicRequest {
            name: name.into(),
            partitions,
            replication_factor: rf,
            kind: TopicKind::Log,
            config,
        };
        let decision = self.ctl.create_topic(&self.meta, &request).unwrap();
        self.commit(decision)
    }

    fn tick(&mut self, advance_ms: i64) {
        self.now_ms += advance_ms;
        let decision = self.ctl.tick(&self.meta, self.now_ms);
        self.commit(decision);
    }

    fn stopped(&mut self, node_id: NodeId) {
        let decision = self
            .ctl
            .node_stopped(&self.meta, node_id, self.incarnations[&node_id]);
        self.commit(decision);
    }

    fn part(&self, topic: TopicId, partition: PartitionIndex) -> PartitionState {
        self.meta.partition(topic, partition).unwrap().clone()
    }

    /// An ISR proposal from the partition's current leader at its current epochs.
    fn proposal(
        &self,
        topic: TopicId,
        partition: PartitionIndex,
        isr: &[NodeId],
    ) -> AlterPartitionRequest {
        let p = self.part(topic, partition);
        let leader = p.leader.unwrap();
        AlterPartitionRequest {
            node_id: leader,
            incarnation: self.incarnations[&leader],
            topic_id: topic,
            partition,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            new_isr: isr
                .iter()
                .map(|n| IsrMember {
                    node_id: *n,
                    incarnation: self.incarnations[n],
                })
                .collect(),
            leader_recovered: false,
        }
    }

    fn alter(
        &mut self,
        request: &AlterPartitionRequest,
    ) -> Result<PartitionState, ControllerError> {
        let decision = self.ctl.alter_partition(&self.meta, request)?;
        Ok(self.commit(decision))
    }

    /// Heartbeats from `live` only, past the session timeout, then a tick.
    fn expire_all_but(&mut self, live: &[NodeId]) {
        for _ in 0..4 {
            self.now_ms += SESSION_MS / 3;
            for n in live {
                self.heartbeat(*n, &[]);
            }
        }
        self.tick(0);
    }
}

fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
    ids.iter().copied().collect()
}

fn config(min_isr: u16) -> TopicConfig {
    TopicConfig {
        min_insync_replicas: min_isr,
        ..TopicConfig::default()
    }
}

// ------------------------------------------------------------------ registration, incarnations

#[test]
fn registration_allocates_increasing_incarnations_and_a_retry_is_idempotent() {
    let mut h = Harness::new();
    assert_eq!(h.register(1), 1);
    assert_eq!(h.register(2), 2);
    // The same process retrying: same incarnation, nothing to commit.
    let request = RegisterRequest {
        node_id: 1,
        process_id: 1,
        addresses: vec![],
        rack: None,
        previous_shutdown_clean: true,
        lost_data: false,
    };
    let decision = h.ctl.register(&h.meta, h.now_ms, &request).unwrap();
    assert!(decision.records.is_empty());
    assert_eq!(decision.reply.incarnation, 1);
    // A restarted process of node 1 is a new incarnation; the old one is fenced first.
    assert_eq!(h.register(1), 3);
    assert_eq!(h.meta.node(1).unwrap().incarnation, 3);
    assert_eq!(h.meta.node(1).unwrap().status, NodeStatus::Live);
    assert!(h.reports.contains(&Report::NodeFenced {
        node_id: 1,
        incarnation: 1,
        reason: FenceReason::Replaced
    }));
}

#[test]
fn requests_of_an_old_incarnation_are_refused() {
    let mut h = Harness::with_nodes(&[1, 2, 3]);
    let t = h.create("t", 1, 3, config(1));
    let old = h.incarnations[&2];
    h.register(2);
    let mut stale = h.heartbeat_request(2, &[]);
    stale.incarnation = old;
    assert_eq!(
        h.ctl.heartbeat(&h.meta, h.now_ms, &stale),
        Err(ControllerError::StaleIncarnation {
            node_id: 2,
            current: 4,
            got: old
        })
    );
    // A leader proposing the old incarnation of node 2 back into the ISR (KIP-903).
    let mut proposal = h.proposal(t, 0, &[1, 2, 3]);
    proposal.new_isr[1].incarnation = old;
    assert!(matches!(
        h.alter(&proposal),
        Err(ControllerError::IneligibleReplica { node_id: 2, .. })
    ));
    // A connection of the old process closing does not fence the new one.
    let decision = h.ctl.node_stopped(&h.meta, 2, old);
    assert!(decision.records.is_empty());
    assert_eq!(h.meta.node(2).unwrap().status, NodeStatus::Live);
}

// ------------------------------------------------------------------ topics

#[test]
fn create_topic_spreads_replicas_and_preferred_leaders_evenly() {
    let mut h = Harness::with_nodes(&[1, 2, 3]);
    let t = h.create("events", 6, 2, config(1));
    let topic = &h.meta.topics[&t];
    let mut leaders: BTreeMap<NodeId, usize> = BTreeMap::new();
    let mut replicas: BTreeMap<NodeId, usize> = BTreeMap::new();
    for p in &topic.partitions {
        assert_eq!(p.replicas.len(), 2);
        assert_eq!(p.leader, p.preferred_leader());
        assert_eq!(p.isr, p.replicas.iter().copied().collect());
        assert_eq!((p.leader_epoch, p.partition_epoch), (0, 0));
        *leaders.entry(p.replicas[0]).or_default() += 1;
        for r in &p.replicas {
            *replicas.entry(*r).or_default() += 1;
        }
    }
    assert_eq!(leaders, BTreeMap::from([(1, 2), (2, 2), (3, 2)]));
    assert_eq!(replicas, BTreeMap::from([(1, 4), (2, 4), (3, 4)]));
    // A one-partition topic after it starts on a node that leads the fewest.
    let u = h.create("one", 1, 1, config(1));
    let v = h.create("two", 1, 1, config(1));
    assert_ne!(h.part(u, 0).leader, h.part(v, 0).leader);
}

#[test]
fn create_topic_refuses_more_replicas_than_live_nodes() {
    let mut h = Harness::with_nodes(&[1, 2, 3]);
    h.stopped(3);
    let request = CreateTopicRequest {
        name: "t".into(),
        partitions: 1,
        replication_factor: 3,
        kind: TopicKind::Table,
        config: config(1),
    };
    assert_eq!(
        h.ctl.create_topic(&h.meta, &request).unwrap_err(),
        ControllerError::InvalidReplicationFactor {
            requested: 3,
            live: 2
        }
    );
}

#[test]
fn create_topic_validates_name_config_and_uniqueness() {
    let mut h = Harness::with_nodes(&[1]);
    let mut request = CreateTopicRequest {
        name: "bad/name".into(),
        partitions: 1,
        replication_factor: 1,
        kind: TopicKind::Log,
        config: config(1),
    };
    assert!(matches!(
        h.ctl.create_topic(&h.meta, &request),
        Err(ControllerError::InvalidTopic(_))
    ));
    request.name = "ok".into();
    request.config.min_insync_replicas = 2;
    assert!(matches!(
        h.ctl.create_topic(&h.meta, &request),
        Err(ControllerError::InvalidConfig(_))
    ));
    request.config.min_insync_replicas = 1;
    request.partitions = 0;
    assert!(matches!(
        h.ctl.create_topic(&h.meta, &request),
        Err(ControllerError::InvalidPartitions(_))
    ));
    request.partitions = 1;
    let decision = h.ctl.create_topic(&h.meta, &request).unwrap();
    let first = h.commit(decision);
    assert_eq!(
        h.ctl.create_topic(&h.meta, &request).unwrap_err(),
        ControllerError::TopicAlreadyExists { name: "ok".into() }
    );
    // Deleted and created again: a new id.
    let decision = h.ctl.delete_topic(&h.meta, "ok").unwrap();
    h.commit(decision);
    assert!(h.meta.topic_by_name("ok").is_none());
    let decision = h.ctl.create_topic(&h.meta, &request).unwrap();
    let second = h.commit(decision);
    assert_ne!(first, second);
}

// ------------------------------------------------------------------ fencing and elections

#[test]
fn session_expiry_fences_and_elects_the_isr_member_with_the_highest_leo() {
    let mut h = Harness::with_nodes(&[1, 2, 3]);
    let t = h.create("t", 3, 3, config(1));
    let p0 = h.part(t, 0);
    assert_eq!(p0.leader, Some(1));
    h.heartbeat(2, &[(t, 0, 10)]);
    h.heartbeat(3, &[(t, 0, 12)]);
    // Not yet expired: nothing happens.
    h.tick(SESSION_MS / 2);
    assert_eq!(h.meta.node(1).unwrap().status, NodeStatus::Live);
    h.expire_all_but(&[2, 3]);
    assert_eq!(h.meta.node(1).unwrap().status, NodeStatus::Fenced);
    let p0 = h.part(t, 0);
    assert_eq!(p0.leader, Some(3), "highest LEO wins");
    assert_eq!(p0.isr, set(&[2, 3]));
    assert_eq!((p0.leader_epoch, p0.partition_epoch), (1, 1));
    // Node 1 is out of every ISR, and leads nothing.
    for (_, _, p) in h.meta.partitions() {
        assert!(!p.isr.contains(&1));
        assert_ne!(p.leader, Some(1));
    }
    assert!(h.reports.contains(&Report::NodeFenced {
        node_id: 1,
        incarnation: 1,
        reason: FenceReason::SessionExpired
    }));
}

#[test]
fn a_tie_on_leo_elects_the_lowest_id() {
    let mut h = Harness::with_nodes(&[1, 2, 3]);
    let t = h.create("t", 1, 3, config(1));
    h.heartbeat(2, &[(t, 0, 7)]);
    h.heartbeat(3, &[(t, 0, 7)]);
    h.stopped(1);
    assert_eq!(h.part(t, 0).leader, Some(2));
}

#[test]
fn a_node_known_dead_is_fenced_at_once() {
    let mut h = Harness::with_nodes(&[1, 2, 3]);
    let t = h.create("t", 1, 3, config(1));
    let before = h.now_ms;
    h.stopped(1);
    assert_eq!(h.now_ms, before, "no time passed");
    assert_eq!(h.meta.node(1).unwrap().status, NodeStatus::Fenced);
    let p = h.part(t, 0);
    assert_eq!(p.leader, Some(2));
    assert_eq!(p.leader_epoch, 1);
    // Fenced nodes must register again.
    let request = h.heartbeat_request(1, &[]);
    assert_eq!(
        h.ctl.heartbeat(&h.meta, h.now_ms, &request),
        Err(ControllerError::NodeFenced { node_id: 1 })
    );
}

#[test]
fn an_empty_isr_elects_from_the_eligible_leader_replicas() {
    let mut h = Harness::with_nodes(&[1, 2, 3]);
    let t = h.create("t", 1, 3, config(2));
    h.stopped(1);
    let p = h.part(t, 0);
    assert_eq!(
        (p.leader, p.isr.clone(), p.elr.clone()),
        (Some(2), set(&[2, 3]), set(&[]))
    );
    // Below min.insync: node 2 leaves with everything committed, so it becomes eligible.
    h.stopped(2);
    let p = h.part(t, 0);
    assert_eq!(
        (p.leader, p.isr.clone(), p.elr.clone()),
        (Some(3), set(&[3]), set(&[2]))
    );
    h.stopped(3);
    let p = h.part(t, 0);
    assert_eq!(
        (p.leader, p.isr.clone(), p.elr.clone()),
        (None, set(&[]), set(&[2, 3]))
    );
    assert!(h.reports.contains(&Report::PartitionOffline {
        topic: "t".into(),
        partition: 0
    }));
    let epoch_offline = p.leader_epoch;
    // Node 1 comes back: it is neither in the ISR nor the ELR, so it must not lead.
    h.register(1);
    h.tick(1);
    assert_eq!(h.part(t, 0).leader, None);
    // Node 3 comes back after a clean shutdown: it is eligible.
    h.register(3);
    let p = h.part(t, 0);
    assert_eq!(
        (p.leader, p.isr.clone(), p.elr.clone()),
        (Some(3), set(&[3]), set(&[2]))
    );
    assert_eq!(p.leader_epoch, epoch_offline + 1);
}

#[test]
fn an_unclean_restart_leaves_the_elr_unless_the_topic_flushes_always() {
    let mut h = Harness::with_nodes(&[1, 2]);
    let lossy = h.create("lossy", 1, 2, config(2));
    let durable = h.create(
        "durable",
        1,
        2,
        TopicConfig {
            flush: FlushPolicy::Always,
            ..config(2)
        },
    );
    h.stopped(1);
    h.stopped(2);
    for t in [lossy, durable] {
        assert_eq!(h.part(t, 0).elr, set(&[1, 2]));
    }
    // Node 2 crashed and may have lost its unflushed tail.
    h.register_with(2, false);
    let p = h.part(lossy, 0);
    assert_eq!((p.leader, p.elr.clone()), (None, set(&[1])));
    let p = h.part(durable, 0);
    assert_eq!(
        (p.leader, p.isr.clone(), p.elr.clone()),
        (Some(2), set(&[2]), set(&[1]))
    );
}

#[test]
fn a_node_that_lost_flushed_data_leaves_every_elr() {
    // Simulator seed 432: a flush-always replica whose corrupt tail was cut (or whose disk is
    // new) must not be trusted as an eligible leader.
    let mut h = Harness::with_nodes(&[1, 2]);
    let durable = h.create(
        "durable",
        1,
        2,
        TopicConfig {
            flush: FlushPolicy::Always,
            ..config(2)
        },
    );
    h.stopped(1);
    h.stopped(2);
    assert_eq!(h.part(durable, 0).elr, set(&[1, 2]));
    h.register_full(2, true, true);
    let p = h.part(durable, 0);
    assert_eq!((p.leader, p.elr.clone()), (None, set(&[1])));
}

#[test]
fn unclean_election_only_where_allowed_and_marked_recovering() {
    let mut h = Harness::with_nodes(&[1, 2, 3]);
    let strict = h.create("strict", 1, 3, config(1));
    let loose = h.create(
        "loose",
        1,
        3,
        TopicConfig {
            unclean_leader_election: true,
            ..config(1)
        },
    );
    // Both ISRs shrink to their leader, then the leader dies uncleanly.
    for t in [strict, loose] {
        let leader = h.part(t, 0).leader.unwrap();
        h.alter(&h.proposal(t, 0, &[leader])).unwrap();
    }
    let strict_leader = h.part(strict, 0).leader.unwrap();
    let loose_leader = h.part(loose, 0).leader.unwrap();
    for t in [strict, loose] {
        let p = h.part(t, 0);
        for r in &p.replicas {
            if Some(*r) != p.leader {
                h.heartbeat(*r, &[(t, 0, 5 + *r as i64)]);
            }
        }
    }
    h.stopped(strict_leader);
    if loose_leader != strict_leader {
        h.stopped(loose_leader);
    }
    h.register_with(strict_leader, false);
    if loose_leader != strict_leader {
        h.register_with(loose_leader, false);
    }
    h.tick(1);
    let p = h.part(strict, 0);
    assert_eq!(p.leader, None, "never outside ISR/ELR without permission");
    let p = h.part(loose, 0);
    let leader = p.leader.expect("unclean election allowed");
    assert!(p.recovering);
    assert_eq!(p.isr, set(&[leader]));
    assert!(h.reports.iter().any(|r| matches!(r,
        Report::UncleanElection { topic, leader: l, .. } if topic == "loose" && *l == leader)));
    // A recovering partition's ISR grows only once its leader has recovered.
    let others: Vec<NodeId> = p.replicas.clone();
    let proposal = h.proposal(loose, 0, &others);
    assert!(matches!(
        h.alter(&proposal),
        Err(ControllerError::InvalidRequest(_))
    ));
    let mut proposal = h.proposal(loose, 0, &others);
    proposal.leader_recovered = true;
    let after = h.alter(&proposal).unwrap();
    assert!(!after.recovering);
    assert_eq!(after.isr, others.iter().copied().collect());
}

// ------------------------------------------------------------------ ISR proposals

#[test]
fn stale_isr_proposals_are_refused() {
    let mut h = Harness::with_nodes(&[1, 2, 3]);
    let t = h.create("t", 1, 3, config(1));
    let mut stale_leader_epoch = h.proposal(t, 0, &[1, 2]);
    stale_leader_epoch.leader_epoch -= 1;
    assert_eq!(
        h.alter(&stale_leader_epoch),
        Err(ControllerError::FencedLeaderEpoch {
            current: 0,
            got: -1
        })
    );
    let first = h.proposal(t, 0, &[1, 2]);
    let after = h.alter(&first).unwrap();
    assert_eq!(
        (after.leader_epoch, after.partition_epoch),
        (0, 1),
        "a shrink bumps the partition epoch only"
    );
    assert_eq!(after.isr, set(&[1, 2]));
    // The same proposal again names an old partition epoch.
    assert_eq!(
        h.alter(&first),
        Err(ControllerError::InvalidUpdateVersion { current: 1, got: 0 })
    );
    // Only the leader proposes.
    let mut not_leader = h.proposal(t, 0, &[1, 2]);
    not_leader.node_id = 2;
    not_leader.incarnation = h.incarnations[&2];
    assert!(matches!(
        h.alter(&not_leader),
        Err(ControllerError::InvalidRequest(_))
    ));
    // The ISR must hold the leader.
    assert!(matches!(
        h.alter(&h.proposal(t, 0, &[2])),
        Err(ControllerError::InvalidRequest(_))
    ));
    // A fenced or shutting-down node cannot join.
    h.request_shutdown(3);
    assert!(matches!(
        h.alter(&h.proposal(t, 0, &[1, 2, 3])),
        Err(ControllerError::IneligibleReplica { node_id: 3, .. })
    ));
    h.stopped(3);
    assert!(matches!(
        h.alter(&h.proposal(t, 0, &[1, 2, 3])),
        Err(ControllerError::IneligibleReplica { node_id: 3, .. })
    ));
    // After a leader change, a proposal of the old leader is fenced by its epoch.
    let old = h.proposal(t, 0, &[1]);
    h.stopped(1);
    h.register(1);
    let mut old = old;
    old.incarnation = h.incarnations[&1];
    assert_eq!(
        h.alter(&old),
        Err(ControllerError::FencedLeaderEpoch { current: 1, got: 0 })
    );
}

#[test]
fn an_isr_shrink_below_min_insync_makes_the_removed_replicas_eligible() {
    let mut h = Harness::with_nodes(&[1, 2, 3]);
    let t = h.create("t", 1, 3, config(2));
    let after = h.alter(&h.proposal(t, 0, &[1, 2])).unwrap();
    assert_eq!(after.elr, set(&[]), "still at min.insync: no ELR");
    let after = h.alter(&h.proposal(t, 0, &[1])).unwrap();
    assert_eq!(
        after.elr,
        set(&[2]),
        "HW froze: 2 holds everything committed"
    );
    // Back at min.insync, the ELR is cleared.
    let after = h.alter(&h.proposal(t, 0, &[1, 3])).unwrap();
    assert_eq!(
        (after.isr.clone(), after.elr.clone()),
        (set(&[1, 3]), set(&[]))
    );
}

// ------------------------------------------------------------------ shutdown, rebalance

#[test]
fn controlled_shutdown_moves_leaderships_away_first() {
    let mut h = Harness::with_nodes(&[1, 2, 3]);
    let t = h.create("t", 3, 2, config(1));
    let solo = h.create("solo", 1, 1, config(1));
    let solo_leader = h.part(solo, 0).leader.unwrap();
    let led_before: Vec<PartitionIndex> = (0..3)
        .filter(|i| h.part(t, *i).leader == Some(solo_leader))
        .collect();
    assert!(!led_before.is_empty());
    let reply = h.request_shutdown(solo_leader);
    assert_eq!(reply.status, NodeStatus::ShuttingDown);
    assert!(reply.shutdown_ready, "every movable leadership moved");
    for i in 0..3 {
        let p = h.part(t, i);
        assert_ne!(p.leader, Some(solo_leader));
        assert!(!p.isr.contains(&solo_leader));
    }
    for i in led_before {
        assert_eq!(h.part(t, i).leader_epoch, 1);
    }
    // Nowhere to move the single-replica partition: it stays until the node stops.
    assert_eq!(h.part(solo, 0).leader, Some(solo_leader));
    h.stopped(solo_leader);
    let p = h.part(solo, 0);
    assert_eq!((p.leader, p.elr.clone()), (None, set(&[solo_leader])));
    // The clean restart brings it back from the ELR.
    h.register(solo_leader);
    assert_eq!(h.part(solo, 0).leader, Some(solo_leader));
}

#[test]
fn leadership_returns_to_the_preferred_replica_once_it_is_back_in_the_isr() {
    let mut h = Harness::with_nodes(&[1, 2, 3]);
    let t = h.create("t", 1, 3, config(1));
    h.stopped(1);
    assert_eq!(h.part(t, 0).leader, Some(2));
    h.register(1);
    h.tick(1);
    assert_eq!(
        h.part(t, 0).leader,
        Some(2),
        "not caught up: not in the ISR yet"
    );
    h.alter(&h.proposal(t, 0, &[1, 2, 3])).unwrap();
    h.tick(1);
    let p = h.part(t, 0);
    assert_eq!(p.leader, Some(1));
    assert_eq!(p.leader_epoch, 2);
}

// ------------------------------------------------------------------ failover, leases, apply

#[test]
fn a_new_controller_waits_a_full_session_before_fencing() {
    let mut h = Harness::with_nodes(&[1, 2]);
    h.create("t", 1, 2, config(1));
    // The previous controller last heard from node 1 long ago; the new one does not know it.
    h.now_ms += 10 * SESSION_MS;
    h.ctl = ActiveController::new(ControllerConfig::default());
    h.tick(0);
    assert_eq!(h.meta.node(1).unwrap().status, NodeStatus::Live);
    assert_eq!(h.ctl.session_deadline_ms(1), Some(h.now_ms + SESSION_MS));
    h.expire_all_but(&[2]);
    assert_eq!(h.meta.node(1).unwrap().status, NodeStatus::Fenced);
}

#[test]
fn a_lease_never_outlives_the_last_quorum_confirmation() {
    let mut h = Harness::with_nodes(&[1]);
    assert_eq!(h.heartbeat(1, &[]).lease_ms, None, "no confirmation yet");
    let confirmed_at = h.now_ms;
    h.ctl.leadership_confirmed(confirmed_at);
    h.now_ms += 100;
    assert_eq!(h.heartbeat(1, &[]).lease_ms, Some(300));
    h.now_ms += 300;
    assert_eq!(h.heartbeat(1, &[]).lease_ms, None, "confirmation too old");
    // An older confirmation arriving late changes nothing.
    h.ctl.leadership_confirmed(confirmed_at - 50);
    assert_eq!(h.heartbeat(1, &[]).lease_ms, None);
    assert!(ControllerConfig::default().lease_ms < ControllerConfig::default().session_timeout_ms);
}

#[test]
fn a_batch_decided_on_stale_metadata_is_refused_whole() {
    let mut h = Harness::with_nodes(&[1, 2, 3]);
    let t = h.create("t", 1, 3, config(1));
    let stale = h.meta.clone();
    let first = h.ctl.node_stopped(&stale, 1, h.incarnations[&1]);
    let second = h
        .ctl
        .alter_partition(&stale, &h.proposal(t, 0, &[1, 2]))
        .unwrap();
    h.commit(first);
    let before = h.meta.clone();
    let err = h
        .meta
        .apply_batch(&MetadataBatch {
            records: second.records,
        })
        .unwrap_err();
    assert!(matches!(err, ApplyError::StaleEpochs { .. }), "{err}");
    assert_eq!(h.meta, before);
}

#[test]
fn apply_refuses_a_batch_that_breaks_an_invariant() {
    let mut h = Harness::with_nodes(&[1, 2]);
    h.create("t", 1, 2, config(1));
    let before = h.meta.clone();
    // Fencing without leaving the ISR would leave a fenced leader.
    let err = h
        .meta
        .apply_batch(&MetadataBatch {
            records: vec![MetadataRecord::FenceNode {
                node_id: 1,
                incarnation: 1,
            }],
        })
        .unwrap_err();
    assert!(matches!(err, ApplyError::Invariant(_)), "{err}");
    assert_eq!(h.meta, before);
}

// ------------------------------------------------------------------ random event sequences

#[derive(Debug, Clone)]
enum Event {
    Register {
        node: NodeId,
        clean: bool,
    },
    Heartbeat {
        node: NodeId,
        leo: i64,
    },
    Stopped {
        node: NodeId,
    },
    Shutdown {
        node: NodeId,
    },
    Tick {
        advance_ms: i64,
    },
    /// The leader of partition `partition % n` proposes the ISR given by bits of `mask`.
    Alter {
        partition: u32,
        mask: u8,
        stale: bool,
    },
}

fn event() -> impl Strategy<Value = Event> {
    let node = 1..=4i32;
    prop_oneof![
        (node.clone(), any::<bool>()).prop_map(|(node, clean)| Event::Register { node, clean }),
        (node.clone(), 0..100i64).prop_map(|(node, leo)| Event::Heartbeat { node, leo }),
        node.clone().prop_map(|node| Event::Stopped { node }),
        node.prop_map(|node| Event::Shutdown { node }),
        (0..400i64).prop_map(|advance_ms| Event::Tick { advance_ms }),
        (0..8u32, any::<u8>(), any::<bool>()).prop_map(|(partition, mask, stale)| Event::Alter {
            partition,
            mask,
            stale
        }),
    ]
}

/// Checks what must hold between two committed states.
fn check_step(
    before: &Metadata,
    after: &Metadata,
    leaders: &mut BTreeMap<(TopicId, PartitionIndex, i32), Option<NodeId>>,
) {
    after.check_invariants().unwrap();
    for (topic, index, p) in after.partitions() {
        let old = before.partition(topic.id, index).unwrap();
        assert!(p.leader_epoch >= old.leader_epoch, "leader epoch went back");
        assert!(
            p.partition_epoch >= old.partition_epoch,
            "partition epoch went back"
        );
        if p.leader != old.leader {
            assert!(
                p.leader_epoch > old.leader_epoch,
                "leader changed within an epoch"
            );
        }
        if let Some(leader) = p.leader {
            if p.leader != old.leader {
                let eligible = old.isr.contains(&leader) || old.elr.contains(&leader);
                assert!(
                    eligible || (topic.config.unclean_leader_election && p.recovering),
                    "{leader} elected outside ISR {:?} / ELR {:?}",
                    old.isr,
                    old.elr
                );
            }
            assert_ne!(after.node_status(leader), Some(NodeStatus::Fenced));
        }
        // One leader per epoch, ever.
        let seen = leaders
            .entry((topic.id, index, p.leader_epoch))
            .or_insert(p.leader);
        assert_eq!(*seen, p.leader, "two leaders in epoch {}", p.leader_epoch);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn random_events_keep_the_invariants(events in proptest::collection::vec(event(), 1..60)) {
        let mut h = Harness::with_nodes(&[1, 2, 3, 4]);
        let strict = h.create("strict", 4, 3, config(2));
        let loose = h.create("loose", 4, 2, TopicConfig { unclean_leader_election: true, ..config(1) });
        let topics = [strict, loose];
        let mut leaders = BTreeMap::new();
        for e in events {
            let before = h.meta.clone();
            match e {
                Event::Register { node, clean } => { h.register_with(node, clean); }
                Event::Heartbeat { node, leo } => {
                    let leos: Vec<_> = topics.iter().flat_map(|t| (0..4).map(move |p| (*t, p, leo))).collect();
                    let request = h.heartbeat_request(node, &leos);
                    if let Ok(d) = h.ctl.heartbeat(&h.meta, h.now_ms, &request) { h.commit(d); }
                }
                Event::Stopped { node } => h.stopped(node),
                Event::Shutdown { node } => {
                    let mut request = h.heartbeat_request(node, &[]);
                    request.want_shutdown = true;
                    if let Ok(d) = h.ctl.heartbeat(&h.meta, h.now_ms, &request) { h.commit(d); }
                }
                Event::Tick { advance_ms } => h.tick(advance_ms),
                Event::Alter { partition, mask, stale } => {
                    let t = topics[(partition % 2) as usize];
                    let index = partition / 2 % 4;
                    let p = h.part(t, index);
                    if let Some(leader) = p.leader {
                        let mut isr: Vec<NodeId> = p.replicas.iter().enumerate()
                            .filter(|(i, r)| mask & (1 << i) != 0 || **r == leader)
                            .map(|(_, r)| *r).collect();
                        isr.sort();
                        let mut request = h.proposal(t, index, &isr);
                        if stale { request.partition_epoch -= 1; }
                        let result = h.alter(&request);
                        if stale { prop_assert!(result.is_err()); }
                    }
                }
            }
            check_step(&before, &h.meta, &mut leaders);
        }
    }
}

#[test]
fn only_a_refusal_older_than_the_request_comes_from_a_stale_controller() {
    let stale = ControllerError::InvalidUpdateVersion { current: 1, got: 2 };
    let newer = ControllerError::InvalidUpdateVersion { current: 3, got: 2 };
    let fenced_stale = ControllerError::FencedLeaderEpoch { current: 4, got: 5 };
    let fenced = ControllerError::FencedLeaderEpoch { current: 5, got: 4 };
    assert!(stale.from_stale_controller());
    assert!(fenced_stale.from_stale_controller());
    assert!(!newer.from_stale_controller());
    assert!(!fenced.from_stale_controller());
    assert!(!ControllerError::Unavailable("x".into()).from_stale_controller());
}
