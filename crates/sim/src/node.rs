//! One node's glue around the replication core: what the server runtime will do, written for
//! virtual time. It registers and heartbeats the controller (incarnations, leases), applies
//! committed metadata to its replicas, performs their actions on MemLog (via the replication
//! crate's `driver`), carries fetches and ISR proposals, and answers clients.
//!
//! A node acts on metadata only while that metadata names its *current* incarnation: a
//! restarted process must not take up a leadership granted to its predecessor (whose log it
//! may not have). Its registration fences the predecessor and elects a new leader in the same
//! committed batch, so the first metadata it acts on never names it leader by mistake.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use tandem_controller::{
    AlterPartitionRequest, ControllerError, HeartbeatRequest, IsrMember, LeaderLease, Metadata,
    NodeStatus, RegisterRequest, ReplicaLeo, TopicId,
};
use tandem_replication::driver;
use tandem_replication::{
    Action, Event, FetchId, IsrChangeError, IsrState, NodeId, PartitionState, ProduceError,
    ReadError, Replica, ReplicaConfig, RequestId, RoleKind,
};
use tandem_storage::batch::split_batches;
use tandem_storage::{
    BatchBuilder, FlushPolicy, Log, LogConfig, ManualClock, MemDir, MemLog, SegmentedLog,
};
use tandem_table::{Answer, CasDecision, TableReplica, TableWriteError, Token, Written};

use crate::checks;
use crate::config::{DurabilityMode, SimConfig};
use crate::net::{Endpoint, Message, Part, Payload};
use crate::world::{Ev, World};

/// How long a node waits for an ISR proposal's answer before telling its replica it is lost.
const ALTER_TIMEOUT_MS: i64 = 2_000;
const TICK_MS: i64 = 25;
/// Chance per replica per tick of checkpointing its table (about every 1.25 s), besides the
/// snapshot every replica writes at a clean shutdown.
const SNAPSHOT_CHANCE_PER_TICK: f64 = 0.02;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashKind {
    /// kill -9: the process dies, the page cache (unflushed writes) survives.
    Kill,
    /// The machine loses power: everything not fsynced is lost, maybe leaving a torn tail.
    PowerLoss,
    /// The disk is replaced: the node comes back empty, a new incarnation.
    Wipe,
    /// A clean shutdown: logs flushed, the controller told, `previous_shutdown_clean`.
    Clean,
}

pub struct Node {
    pub id: NodeId,
    /// One directory per partition replica; survives restarts (not wipes).
    pub disks: BTreeMap<Part, MemDir>,
    /// Each replica's table snapshot, as the server keeps it beside the logs (written
    /// atomically and fsynced, so crashes keep it; a wipe loses it).
    pub snapshots: BTreeMap<Part, Bytes>,
    pub process: Option<Process>,
    generation: u64,
    /// Local clock = offset + global * rate / 1000: nodes' clocks drift apart.
    rate_permille: i64,
    offset_ms: i64,
    /// Extra latency of everything this node receives and of its disk (a slow node).
    pub slow_ms: i64,
    disk_free_at: i64,
    /// An unclean crash happened since a process of this node last registered: the next
    /// registration must say so, even if the process in between stopped cleanly, or a log
    /// that lost its tail stays eligible in an ELR (found by the simulator, seed 2284; KIP-966
    /// ties the claim to the previous broker epoch for the same reason). The server needs the
    /// same bookkeeping, persisted beside the logs.
    unclean_since_registration: bool,
    /// Lost flushed data (wiped disk, corrupt tail cut) since its last registration.
    lost_data_since_registration: bool,
    /// Replica slots built so far on this node (each slot's `serial`).
    slots_made: u64,
}

/// One process life of a node.
pub struct Process {
    pub generation: u64,
    process_id: u128,
    /// Set once the controller accepted our registration.
    pub incarnation: Option<u64>,
    register_sent_at: Option<i64>,
    pub metadata: Option<(u64, Arc<Metadata>)>,
    pub replicas: BTreeMap<Part, Slot>,
    pub lease: LeaderLease,
    /// The ISR proposal in flight per partition: request id and give-up time.
    alter: BTreeMap<Part, (u64, i64)>,
    next_id: u64,
    routes: BTreeMap<RequestId, Route>,
    /// Each follower replica's fetch in flight, so that a crash of its leader fails it.
    pub fetches_out: BTreeMap<Part, (NodeId, FetchId)>,
    clock: Arc<ManualClock>,
    /// The voter this process believes is the active controller (followed from the
    /// controller's hints; the next voter after silence).
    controller: NodeId,
    /// Local time of the oldest request to the controller still without an answer.
    controller_asked_at: Option<i64>,
}

pub struct Slot {
    pub log: MemLog,
    pub replica: Replica,
    /// The log's batches (base offset, last offset, bytes), kept in step with the log after
    /// every log action: the checks read it instead of the log.
    pub mirror: Vec<(i64, i64, Bytes)>,
    /// The key-value table beside the replica, fed from the log actions performed here, as
    /// the server's partition thread does (replies are table clients' request ids).
    pub table: TableReplica<u64, u64>,
    /// Which slot of this node this is (a slot is rebuilt after a log failure), so that the
    /// checks can tell a rebuilt table from the one before.
    pub serial: u64,
    /// Compactions that rewrote segments of this log: the checks compare it again.
    pub compactions: u64,
}

enum Route {
    Follower {
        node: NodeId,
        fetch_id: FetchId,
    },
    Producer {
        client_request: u64,
    },
    Consumer {
        client_request: u64,
    },
    TableWrite {
        client_request: u64,
        leader_epoch: i32,
    },
}

impl Node {
    pub fn new(id: NodeId, cfg: &SimConfig, rng: &mut crate::rng::Rng) -> Node {
        let skew = cfg.faults.clock_skew_permille;
        Node {
            id,
            disks: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            process: None,
            generation: 0,
            rate_permille: 1000 + rng.range(-skew, skew),
            offset_ms: rng.range(0, 1_000_000),
            slow_ms: 0,
            disk_free_at: 0,
            unclean_since_registration: false,
            lost_data_since_registration: false,
            slots_made: 0,
        }
    }

    /// This node's monotonic clock at global virtual time `now`.
    pub fn local_ms(&self, now: i64) -> i64 {
        self.offset_ms + now * self.rate_permille / 1000
    }

    /// How fast this node's clock runs, in parts per thousand of virtual time.
    pub fn rate_permille(&self) -> i64 {
        self.rate_permille
    }

    /// This node's wall clock (batch timestamps, tombstone age): virtual time at the node's
    /// clock rate, so nodes' wall clocks drift apart by up to the skew, as NTP allows.
    pub fn wall_ms(&self, now: i64) -> i64 {
        now * self.rate_permille / 1000
    }

    /// Global time after `local` ms of this node's clock.
    fn global_after(&self, local: i64) -> i64 {
        (local * 1000 / self.rate_permille).max(1)
    }
}

impl Slot {
    /// Re-reads what changed in the log: appended batches from the mirror's end, or
    /// everything after a cut or a restart.
    fn sync_mirror(&mut self) {
        let offsets = self.log.offsets();
        let end = self
            .mirror
            .last()
            .map_or(offsets.log_start_offset, |b| b.1 + 1);
        let start_ok = self
            .mirror
            .first()
            .is_none_or(|b| b.0 == offsets.log_start_offset);
        if end > offsets.log_end_offset || !start_ok {
            self.mirror.clear();
        }
        let mut offset = self
            .mirror
            .last()
            .map_or(offsets.log_start_offset, |b| b.1 + 1);
        while offset < offsets.log_end_offset {
            let Ok(bytes) = self.log.read(offset, 1 << 20) else {
                break;
            };
            let before = offset;
            for (header, raw) in split_batches(&bytes).map_while(Result::ok) {
                self.mirror.push((
                    header.base_offset,
                    header.last_offset(),
                    bytes.slice_ref(raw),
                ));
                offset = header.next_offset();
            }
            if offset == before {
                break;
            }
        }
    }
}

pub fn replica_config(cfg: &SimConfig) -> ReplicaConfig {
    ReplicaConfig {
        replica_lag_time_max_ms: 1_000,
        replica_fetch_wait_max_ms: 200,
        replica_fetch_max_bytes: 16 << 10,
        replica_fetch_backoff_ms: 50,
        replica_fetch_timeout_ms: 1_000,
        isr_change_backoff_ms: 200,
        flush_after_append: cfg.durability == DurabilityMode::FlushAlways,
        ..ReplicaConfig::default()
    }
}

fn log_config(cfg: &SimConfig) -> LogConfig {
    LogConfig {
        // Small segments, so that rolls, sealed segments and recovery across them happen.
        segment_bytes: 4096,
        index_interval_bytes: 512,
        retention_ms: None,
        flush: match cfg.durability {
            DurabilityMode::FlushAlways => FlushPolicy::Always,
            DurabilityMode::FlushNever => FlushPolicy::Never,
        },
        ..LogConfig::default()
    }
}

/// The replication core's view of a committed partition.
pub fn partition_state(meta: &Metadata, topic_id: TopicId, part: Part) -> Option<PartitionState> {
    let topic = meta.topics.get(&topic_id)?;
    let p = topic.partitions.get(part as usize)?;
    Some(PartitionState {
        leader: p.leader,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        isr: p.isr.iter().copied().collect(),
        replicas: p.replicas.clone(),
        min_insync_replicas: topic.config.min_insync_replicas as usize,
    })
}

/// The voter after `current`, in id order, wrapping around.
fn next_voter(voters: &[NodeId], current: NodeId) -> NodeId {
    voters
        .iter()
        .copied()
        .find(|v| *v > current)
        .or_else(|| voters.first().copied())
        .unwrap_or(current)
}

fn isr_error(e: ControllerError) -> IsrChangeError {
    match e {
        // The controller's view is older than ours (a deposed active controller that does not
        // know it yet): ask again rather than wait for metadata we already have.
        e if e.from_stale_controller() => IsrChangeError::Unavailable,
        ControllerError::FencedLeaderEpoch { .. } => IsrChangeError::FencedLeaderEpoch,
        ControllerError::InvalidUpdateVersion { .. } => IsrChangeError::InvalidUpdateVersion,
        ControllerError::IneligibleReplica { .. } => IsrChangeError::IneligibleReplica,
        ControllerError::InvalidRequest(_) => IsrChangeError::InvalidRequest,
        _ => IsrChangeError::Unavailable,
    }
}

impl World {
    fn process_mut(&mut self, node: NodeId) -> Option<&mut Process> {
        self.nodes.get_mut(&node)?.process.as_mut()
    }

    /// Where node `id` sends its controller requests: the voter it believes is active.
    fn controller_of(&self, id: NodeId) -> Endpoint {
        let voter = self
            .nodes
            .get(&id)
            .and_then(|n| n.process.as_ref())
            .map_or(1, |p| p.controller);
        Endpoint::Voter(voter)
    }

    /// Follows the controller's answers: any answer from the active controller is news of it;
    /// "not the controller" names the one to ask (or none: try the next voter).
    fn controller_answered(&mut self, id: NodeId, error: Option<&ControllerError>) {
        let voters = self.controller.voter_ids();
        let Some(p) = self.process_mut(id) else {
            return;
        };
        match error {
            Some(e) if e.from_stale_controller() => {
                p.controller_asked_at = None;
                p.controller = next_voter(&voters, p.controller);
            }
            Some(ControllerError::NotController { leader_hint }) => {
                p.controller_asked_at = None;
                p.controller = match leader_hint {
                    Some(hint) if voters.contains(&(*hint as NodeId)) => *hint as NodeId,
                    _ => next_voter(&voters, p.controller),
                };
            }
            // The new active controller catching up, or a commit that timed out: stay.
            Some(ControllerError::Unavailable(_)) => {}
            _ => p.controller_asked_at = None,
        }
    }

    fn local_now(&self, node: NodeId) -> i64 {
        self.nodes
            .get(&node)
            .map_or(self.now, |n| n.local_ms(self.now))
    }

    pub fn restart_node(&mut self, id: NodeId) {
        let process_id = (self.rng.next_u64() as u128) << 64 | self.rng.next_u64() as u128;
        let now = self.now;
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if node.process.is_some() {
            return;
        }
        node.generation += 1;
        let generation = node.generation;
        let local = node.local_ms(now);
        let clock = Arc::new(ManualClock::new(local));
        let controller = *self.rng.pick(&self.controller.voter_ids());
        node.process = Some(Process {
            generation,
            process_id,
            incarnation: None,
            register_sent_at: None,
            metadata: None,
            replicas: BTreeMap::new(),
            lease: LeaderLease::new(),
            alter: BTreeMap::new(),
            next_id: 0,
            routes: BTreeMap::new(),
            fetches_out: BTreeMap::new(),
            clock,
            controller,
            controller_asked_at: None,
        });
        if self.controller.is_voter(id) {
            self.voter_start(id);
        }
        self.trace(|| format!("n{id} starts (generation {generation})"));
        self.schedule(
            now,
            Ev::Heartbeat {
                node: id,
                generation,
            },
        );
        self.schedule(
            now + 1,
            Ev::NodeTick {
                node: id,
                generation,
            },
        );
    }

    pub fn crash(&mut self, id: NodeId, kind: CrashKind) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(process) = node.process.take() else {
            return;
        };
        let incarnation = process.incarnation;
        let controller = Endpoint::Voter(process.controller);
        if kind == CrashKind::Clean {
            // A clean shutdown flushes the logs and checkpoints every table (as the server's
            // partition threads do when they stop).
            for (part, slot) in &process.replicas {
                if slot.log.flush().is_ok() {
                    if let Some(bytes) = slot.table.snapshot(&slot.replica) {
                        node.snapshots.insert(*part, bytes);
                    }
                }
            }
        }
        drop(process);
        if kind != CrashKind::Clean {
            node.unclean_since_registration = true;
        }
        match kind {
            CrashKind::Kill | CrashKind::Clean => {
                for dir in node.disks.values() {
                    dir.crash(&mut |_, appended| appended);
                }
            }
            CrashKind::PowerLoss => {
                let mut torn = Vec::new();
                for dir in node.disks.values() {
                    let r = &mut self.rng;
                    dir.crash(&mut |_, appended| {
                        let keep = if r.chance(0.3) {
                            r.range(0, appended as i64) as usize
                        } else {
                            0
                        };
                        torn.push(keep);
                        keep
                    });
                }
            }
            CrashKind::Wipe => {
                node.disks.clear();
                node.snapshots.clear();
                node.lost_data_since_registration = true;
            }
        }
        self.trace(|| format!("n{id} {kind:?}"));
        self.voter_crash(id, kind);
        // Its connections close: followers' fetches to it fail at once, and the controller
        // may learn that the process exited (fast failover, rule 8).
        let failed: Vec<(NodeId, Part, FetchId)> = self
            .nodes
            .values()
            .filter_map(|n| n.process.as_ref().map(|p| (n.id, p)))
            .flat_map(|(n, p)| {
                p.fetches_out
                    .iter()
                    .filter(|(_, (to, _))| *to == id)
                    .map(move |(part, (_, f))| (n, *part, *f))
            })
            .collect();
        for (n, part, fetch_id) in failed {
            self.node_step(n, part, Event::FetchFailed { fetch_id });
        }
        if let Some(incarnation) = incarnation {
            if kind == CrashKind::Clean || self.rng.chance(0.5) {
                self.send(
                    Endpoint::Node(id),
                    controller,
                    None,
                    Payload::NodeStopped {
                        node_id: id,
                        incarnation,
                    },
                );
            }
        }
        let back = self.now + self.rng.range(50, 2_500);
        self.schedule(back, Ev::Restart { node: id });
    }

    /// Flips a bit inside a batch (under its CRC) of the active segment of one replica.
    pub fn corrupt(&mut self, id: NodeId) -> bool {
        let Some(node) = self.nodes.get(&id) else {
            return false;
        };
        let Some(process) = &node.process else {
            return false;
        };
        let parts: Vec<Part> = process.replicas.keys().copied().collect();
        if parts.is_empty() {
            return false;
        }
        let part = *self.rng.pick(&parts);
        let (Some(slot), Some(dir)) = (process.replicas.get(&part), node.disks.get(&part)) else {
            return false;
        };
        // The active segment is the file named after the highest base offset; the mirror
        // gives each batch's position in it.
        let Ok(names) = tandem_storage::Directory::list(dir) else {
            return false;
        };
        let Some(active) = names.iter().filter(|n| n.ends_with(".log")).max() else {
            return false;
        };
        let Ok(base) = active.trim_end_matches(".log").parse::<i64>() else {
            return false;
        };
        let mut position = 0usize;
        let mut candidates = Vec::new();
        for (b, _, bytes) in &slot.mirror {
            if *b < base {
                continue;
            }
            candidates.push((position, bytes.len()));
            position += bytes.len();
        }
        if candidates.is_empty() {
            return false;
        }
        let (at, len) = *self.rng.pick(&candidates);
        let header = tandem_storage::batch::ATTRIBUTES_OFFSET;
        let pos = at + self.rng.range(header as i64, len as i64 - 1) as usize;
        let bit = 1u8 << self.rng.range(0, 7);
        let active = active.clone();
        let dir = dir.clone();
        self.trace(|| format!("n{id} p{part}: corrupt {active} byte {pos}"));
        let corrupted = dir.corrupt(&active, pos, bit);
        if corrupted {
            // Recovery will cut the batch at the next restart: the node's next registration
            // must say it lost data.
            if let Some(node) = self.nodes.get_mut(&id) {
                node.lost_data_since_registration = true;
            }
        }
        corrupted
    }

    /// Damages the stored table snapshot of one of the node's replicas, as a disk might: a
    /// flipped bit anywhere in the file, the file cut short, or an empty file (a crash between
    /// creating and writing it, on a file system that does not order them). The next load must
    /// refuse it (`snapshot::decode`: magic, lengths, CRC32C) and rebuild the table from the log.
    pub fn damage_snapshot(&mut self, id: NodeId) -> bool {
        let Some(node) = self.nodes.get(&id) else {
            return false;
        };
        let parts: Vec<Part> = node
            .snapshots
            .iter()
            .filter(|(_, b)| !b.is_empty())
            .map(|(p, _)| *p)
            .collect();
        if parts.is_empty() {
            return false;
        }
        let part = *self.rng.pick(&parts);
        let Some(bytes) = node.snapshots.get(&part).cloned() else {
            return false;
        };
        let (how, damaged) = match self.rng.range(0, 3) {
            // Bit flips are the most likely damage, and the one only the checksum can see.
            0 | 1 => {
                let at = self.rng.range(0, bytes.len() as i64 - 1) as usize;
                let bit = 1u8 << self.rng.range(0, 7);
                let mut damaged = bytes.to_vec();
                damaged[at] ^= bit;
                (
                    format!("bit {bit:#04x} of byte {at} flipped"),
                    Bytes::from(damaged),
                )
            }
            2 => {
                let len = self.rng.range(0, bytes.len() as i64 - 1) as usize;
                (format!("cut to {len} bytes"), bytes.slice(..len))
            }
            _ => ("emptied".to_string(), Bytes::new()),
        };
        let len = bytes.len();
        self.trace(|| format!("n{id} p{part}: table snapshot ({len} bytes) damaged: {how}"));
        if let Some(node) = self.nodes.get_mut(&id) {
            node.snapshots.insert(part, damaged);
        }
        true
    }

    pub fn node_tick(&mut self, id: NodeId, generation: u64) {
        if self.generation(id) != Some(generation) {
            return;
        }
        let now_local = self.local_now(id);
        let parts: Vec<Part> = self
            .nodes
            .get(&id)
            .and_then(|n| n.process.as_ref())
            .map(|p| p.replicas.keys().copied().collect())
            .unwrap_or_default();
        let compact_every = self.cfg.tables.compact_every_ms;
        for part in parts {
            // First, while every replica's log below its HW is in the checks' committed
            // history (they ran after the previous event): compaction only rewrites below it.
            if compact_every > 0 && self.rng.chance(TICK_MS as f64 / compact_every as f64) {
                self.compact_table(id, part);
            }
            // An ISR proposal with no answer is lost: the replica may propose again.
            let expired = self
                .process_mut(id)
                .and_then(|p| p.alter.get(&part).copied())
                .is_some_and(|(_, deadline)| deadline <= now_local);
            if expired {
                if let Some(p) = self.process_mut(id) {
                    p.alter.remove(&part);
                }
                self.node_step(
                    id,
                    part,
                    Event::IsrChangeResult(Err(IsrChangeError::Unavailable)),
                );
            }
            self.node_step(id, part, Event::Tick);
            if self.rng.chance(SNAPSHOT_CHANCE_PER_TICK) {
                self.snapshot_table(id, part);
            }
        }
        let next = self.now
            + self
                .nodes
                .get(&id)
                .map_or(TICK_MS, |n| n.global_after(TICK_MS));
        self.schedule(
            next,
            Ev::NodeTick {
                node: id,
                generation,
            },
        );
    }

    /// Compacts a table replica's log below its HW, as the server's compaction thread does
    /// (`crates/server/src/compaction.rs`): `Log::compact`, then the new horizon to the core
    /// (`Event::Compacted`), which puts it in its Fetch answers (tag 10002) so that a follower
    /// whose log ends below it copies the log again. Tombstone age is measured on the node's
    /// wall clock, as the batches' timestamps are.
    fn compact_table(&mut self, id: NodeId, part: Part) {
        let now = self.now;
        let retention = self.cfg.tables.tombstone_retention_ms;
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let wall = node.wall_ms(now);
        let Some(slot) = node
            .process
            .as_mut()
            .and_then(|p| p.replicas.get_mut(&part))
        else {
            return;
        };
        let config = tandem_storage::CompactionConfig {
            tombstone_retention_ms: retention,
            // Small, so that cleaned segments are merged now and then.
            max_segment_bytes: 8 << 10,
            ..tandem_storage::CompactionConfig::default()
        };
        let before = slot.log.compaction_horizon();
        let report = match slot
            .log
            .compact(slot.replica.high_watermark(), wall, &config)
        {
            Ok(report) => report,
            Err(e) => {
                self.trace(|| format!("n{id} p{part}: compaction failed: {e}"));
                return;
            }
        };
        if report.segments_rewritten > 0 {
            slot.mirror.clear();
            slot.sync_mirror();
            slot.compactions += 1;
            self.stats.compactions += 1;
            self.stats.records_compacted += report.records_removed;
        }
        let horizon = report.compaction_horizon;
        self.trace(|| {
            format!(
                "n{id} p{part}: compacted {} segments, {} records ({} tombstones) removed, horizon {before} -> {horizon}",
                report.segments_rewritten, report.records_removed, report.tombstones_removed
            )
        });
        if horizon != before {
            self.node_step(
                id,
                part,
                Event::Compacted {
                    compaction_horizon: horizon,
                },
            );
        }
    }

    /// Checkpoints a replica's table: flush the log first, so that after a crash the log still
    /// holds every offset the snapshot covers (the server's `maybe_snapshot`).
    fn snapshot_table(&mut self, id: NodeId, part: Part) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(slot) = node.process.as_ref().and_then(|p| p.replicas.get(&part)) else {
            return;
        };
        if slot.log.flush().is_err() {
            return;
        }
        if let Some(bytes) = slot.table.snapshot(&slot.replica) {
            node.snapshots.insert(part, bytes);
            self.stats.snapshots_written += 1;
        }
    }

    pub fn node_heartbeat(&mut self, id: NodeId, generation: u64) {
        if self.generation(id) != Some(generation) {
            return;
        }
        let now = self.now;
        let local = self.local_now(id);
        let interval = self.controller.config.heartbeat_interval_ms;
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let clean = !node.unclean_since_registration;
        let lost_data = node.lost_data_since_registration;
        let Some(p) = node.process.as_mut() else {
            return;
        };
        // No answer from the controller for a few heartbeats: try the next voter.
        if p.controller_asked_at
            .is_some_and(|at| local - at > 3 * interval)
        {
            p.controller_asked_at = None;
            p.controller = next_voter(&self.controller.voter_ids(), p.controller);
        }
        let controller = Endpoint::Voter(p.controller);
        let registering =
            p.incarnation.is_none() && p.register_sent_at.is_none_or(|t| now - t >= 500);
        if p.incarnation.is_some() || registering {
            p.controller_asked_at.get_or_insert(local);
        }
        match p.incarnation {
            None => {
                if p.register_sent_at.is_none_or(|t| now - t >= 500) {
                    p.register_sent_at = Some(now);
                    self.lost_data_registered |= lost_data;
                    let request = RegisterRequest {
                        node_id: id,
                        process_id: p.process_id,
                        addresses: Vec::new(),
                        rack: None,
                        previous_shutdown_clean: clean,
                        lost_data,
                    };
                    self.send(
                        Endpoint::Node(id),
                        controller,
                        None,
                        Payload::Register(request),
                    );
                }
            }
            Some(incarnation) => {
                let topic_id = p
                    .metadata
                    .as_ref()
                    .and_then(|(_, m)| m.topics.keys().next().copied());
                let replica_leos = match topic_id {
                    Some(topic_id) => p
                        .replicas
                        .iter()
                        .map(|(part, s)| ReplicaLeo {
                            topic_id,
                            partition: *part,
                            log_end_offset: s.replica.local_log().log_end_offset(),
                        })
                        .collect(),
                    None => Vec::new(),
                };
                let known_version = p.metadata.as_ref().map_or(0, |(v, _)| *v);
                let request = HeartbeatRequest {
                    node_id: id,
                    incarnation,
                    replica_leos,
                    want_shutdown: false,
                };
                self.send(
                    Endpoint::Node(id),
                    controller,
                    None,
                    Payload::Heartbeat {
                        request,
                        sent_local_ms: local,
                        known_version,
                    },
                );
            }
        }
        let next = self.now
            + self
                .nodes
                .get(&id)
                .map_or(interval, |n| n.global_after(interval));
        self.schedule(
            next,
            Ev::Heartbeat {
                node: id,
                generation,
            },
        );
    }

    pub fn node_receive(&mut self, id: NodeId, m: Message) {
        let Some(generation) = self.generation(id) else {
            return; // down: nobody listens
        };
        if m.to_generation.is_some_and(|g| g != generation) {
            return; // a reply to a process that is gone
        }
        let from_node = match m.from {
            Endpoint::Node(n) => Some(n),
            _ => None,
        };
        let local = self.local_now(id);
        match m.payload {
            Payload::Fetch {
                part,
                fetch_id,
                request,
            } => {
                let (Some(from), true) = (from_node, self.has_slot(id, part)) else {
                    let response = Err(ReadError::NotLeader {
                        leader: None,
                        leader_epoch: -1,
                    });
                    if let Some(from) = from_node {
                        self.send(
                            Endpoint::Node(id),
                            Endpoint::Node(from),
                            None,
                            Payload::FetchReply {
                                part,
                                fetch_id,
                                response,
                            },
                        );
                    }
                    return;
                };
                let rid = self.new_route(
                    id,
                    Route::Follower {
                        node: from,
                        fetch_id,
                    },
                );
                self.node_step(id, part, Event::Fetch { id: rid, request });
            }
            Payload::FetchReply {
                part,
                fetch_id,
                response,
            } => {
                if let Some(p) = self.process_mut(id) {
                    if p.fetches_out
                        .get(&part)
                        .is_some_and(|(_, f)| *f == fetch_id)
                    {
                        p.fetches_out.remove(&part);
                    }
                    if let (Some(slot), Ok(data)) = (p.replicas.get_mut(&part), &response) {
                        slot.table.on_leader_log_end_offset(data.log_end_offset);
                    }
                }
                self.node_step(id, part, Event::FetchResponse { fetch_id, response });
            }
            Payload::FlushReport {
                part,
                leader_epoch,
                flushed_offset,
            } => {
                if let Some(from) = from_node {
                    self.node_step(
                        id,
                        part,
                        Event::FlushReport {
                            replica_id: from,
                            leader_epoch,
                            flushed_offset,
                        },
                    );
                }
            }
            Payload::RegisterReply(result) => {
                self.controller_answered(id, result.as_ref().err());
                // Refused (not the active controller, or it is catching up): ask again at the
                // next heartbeat, where the hint points (the server retries every 50 ms).
                if result.is_err() {
                    if let Some(p) = self.process_mut(id) {
                        p.register_sent_at = None;
                    }
                }
                let Some(node) = self.nodes.get_mut(&id) else {
                    return;
                };
                if let (Ok(reply), Some(p)) = (result, node.process.as_mut()) {
                    if p.incarnation.is_none() {
                        node.unclean_since_registration = false;
                        node.lost_data_since_registration = false;
                        p.incarnation = Some(reply.incarnation);
                        let controller = Endpoint::Voter(p.controller);
                        self.trace(|| {
                            format!("n{id} registered as incarnation {}", reply.incarnation)
                        });
                        self.send(
                            Endpoint::Node(id),
                            controller,
                            None,
                            Payload::MetadataRequest,
                        );
                    }
                }
            }
            Payload::HeartbeatReply {
                sent_local_ms,
                result,
                metadata,
            } => {
                self.controller_answered(id, result.as_ref().err());
                match result {
                    Ok(reply) => {
                        if let Some(p) = self.process_mut(id) {
                            if reply.status == NodeStatus::Fenced {
                                p.lease.revoke();
                                p.incarnation = None;
                                p.register_sent_at = None;
                            } else {
                                p.lease.on_heartbeat_reply(sent_local_ms, reply.lease_ms);
                            }
                        }
                    }
                    Err(
                        ControllerError::StaleIncarnation { .. }
                        | ControllerError::NodeFenced { .. }
                        | ControllerError::UnknownNode { .. },
                    ) => {
                        // Register again (same process: the controller gives a new incarnation).
                        if let Some(p) = self.process_mut(id) {
                            p.lease.revoke();
                            p.incarnation = None;
                            p.register_sent_at = None;
                        }
                    }
                    Err(_) => {}
                }
                if let Some((version, meta)) = metadata {
                    self.apply_metadata(id, version, meta);
                }
            }
            Payload::Metadata { version, metadata } => self.apply_metadata(id, version, metadata),
            Payload::AlterPartitionReply {
                request_id,
                part,
                result,
            } => {
                self.controller_answered(id, result.as_ref().err());
                let current = self
                    .process_mut(id)
                    .and_then(|p| p.alter.get(&part).copied())
                    .is_some_and(|(r, _)| r == request_id);
                if !current {
                    return; // an answer to a proposal given up on
                }
                if let Some(p) = self.process_mut(id) {
                    p.alter.remove(&part);
                }
                let result = result
                    .map(|s| IsrState {
                        leader_epoch: s.leader_epoch,
                        partition_epoch: s.partition_epoch,
                        isr: s.isr.iter().copied().collect(),
                    })
                    .map_err(isr_error);
                self.node_step(id, part, Event::IsrChangeResult(result));
            }
            Payload::Produce {
                client_request,
                part,
                request,
            } => {
                let refuse = |e: ProduceError| Payload::ProduceReply {
                    client_request,
                    result: Err(e),
                };
                let Some(p) = self.nodes.get(&id).and_then(|n| n.process.as_ref()) else {
                    return;
                };
                let Some(slot) = p.replicas.get(&part) else {
                    let reply = refuse(ProduceError::NotLeader {
                        leader: None,
                        leader_epoch: -1,
                    });
                    self.send(Endpoint::Node(id), Endpoint::Clients, None, reply);
                    return;
                };
                // Rule 8: a leader whose lease lapsed takes no write until a reply renews it.
                if slot.replica.role() == RoleKind::Leader && !p.lease.is_valid(local) {
                    let epoch = slot.replica.leader_epoch();
                    let reply = refuse(ProduceError::NotLeader {
                        leader: None,
                        leader_epoch: epoch,
                    });
                    self.send(Endpoint::Node(id), Endpoint::Clients, None, reply);
                    return;
                }
                let rid = self.new_route(id, Route::Producer { client_request });
                self.node_step(id, part, Event::Produce { id: rid, request });
            }
            Payload::ConsumerFetch {
                client_request,
                part,
                request,
            } => {
                if !self.has_slot(id, part) {
                    let result = Err(ReadError::NotLeader {
                        leader: None,
                        leader_epoch: -1,
                    });
                    self.send(
                        Endpoint::Node(id),
                        Endpoint::Clients,
                        None,
                        Payload::ConsumerFetchReply {
                            client_request,
                            result,
                        },
                    );
                    return;
                }
                let rid = self.new_route(id, Route::Consumer { client_request });
                self.node_step(id, part, Event::Fetch { id: rid, request });
            }
            Payload::KvWrite {
                client_request,
                part,
                write,
                acks,
                timeout_ms,
                current_leader_epoch,
            } => {
                self.table_write(
                    id,
                    part,
                    client_request,
                    write,
                    acks,
                    timeout_ms,
                    current_leader_epoch,
                );
            }
            Payload::KvRead {
                client_request,
                part,
                query,
                consistency,
                wait_ms,
            } => {
                let Some(p) = self.process_mut(id) else {
                    return;
                };
                let has_lease = p.lease.is_valid(local);
                let answer = match p.replicas.get_mut(&part) {
                    None => Some(Err(tandem_table::ReadError::NotLeader.into())),
                    Some(slot) => slot
                        .table
                        .read(
                            &slot.replica,
                            query,
                            consistency,
                            has_lease,
                            local,
                            wait_ms,
                            client_request,
                        )
                        .map(|(_, answer)| answer),
                };
                if let Some(result) = answer {
                    self.send(
                        Endpoint::Node(id),
                        Endpoint::Clients,
                        None,
                        Payload::KvReadReply {
                            client_request,
                            result,
                        },
                    );
                }
            }
            _ => {}
        }
    }

    /// A put, delete or compare-and-set: refused without a lease (rule 8, as any produce),
    /// decided (a compare-and-set) against the leader's latest appended state, then produced
    /// as a one-record batch with the key.
    #[allow(clippy::too_many_arguments)]
    fn table_write(
        &mut self,
        id: NodeId,
        part: Part,
        client_request: u64,
        write: tandem_table::TableWrite,
        acks: tandem_replication::Acks,
        timeout_ms: i64,
        current_leader_epoch: Option<i32>,
    ) {
        let local = self.local_now(id);
        let Some(p) = self.process_mut(id) else {
            return;
        };
        let has_lease = p.lease.is_valid(local);
        let refusal = match p.replicas.get_mut(&part) {
            None => Some(TableWriteError::from(ProduceError::NotLeader {
                leader: None,
                leader_epoch: -1,
            })),
            Some(slot) if !has_lease => Some(TableWriteError::from(ProduceError::NotLeader {
                leader: None,
                leader_epoch: slot.replica.leader_epoch(),
            })),
            Some(slot) => match write.expected {
                None => None,
                Some(expected) => match slot.table.decide_cas(
                    &slot.replica,
                    &write.key,
                    expected,
                    local,
                    timeout_ms,
                    client_request,
                ) {
                    CasDecision::Append(_) => None,
                    CasDecision::Answered(_, error) => Some(error),
                    CasDecision::Parked => return,
                },
            },
        };
        if let Some(error) = refusal {
            self.send(
                Endpoint::Node(id),
                Endpoint::Clients,
                None,
                Payload::KvWriteReply {
                    client_request,
                    result: Err(error),
                },
            );
            return;
        }
        let leader_epoch = self
            .process_mut(id)
            .and_then(|p| p.replicas.get(&part))
            .map_or(-1, |s| s.replica.leader_epoch());
        let wall = self
            .nodes
            .get(&id)
            .map_or(self.now, |n| n.wall_ms(self.now));
        let mut batch = BatchBuilder::new(wall);
        batch.push(wall, Some(&write.key), write.value.as_deref());
        let request = tandem_replication::ProduceRequest {
            acks,
            durability: tandem_replication::Durability::Replicated,
            timeout_ms,
            current_leader_epoch,
            records: batch.build(),
        };
        let rid = self.new_route(
            id,
            Route::TableWrite {
                client_request,
                leader_epoch,
            },
        );
        self.node_step(id, part, Event::Produce { id: rid, request });
    }

    /// Answers of table requests that waited (for a token, for the HW), to their clients.
    fn send_table_answers(&mut self, id: NodeId, answers: Vec<Answer<u64, u64>>) {
        for answer in answers {
            let payload = match answer {
                Answer::Write(client_request, result) => Payload::KvWriteReply {
                    client_request,
                    result,
                },
                Answer::Read(client_request, result) => Payload::KvReadReply {
                    client_request,
                    result,
                },
            };
            self.send(Endpoint::Node(id), Endpoint::Clients, None, payload);
        }
    }

    fn has_slot(&self, id: NodeId, part: Part) -> bool {
        self.nodes
            .get(&id)
            .and_then(|n| n.process.as_ref())
            .is_some_and(|p| p.replicas.contains_key(&part))
    }

    fn new_route(&mut self, id: NodeId, route: Route) -> RequestId {
        let p = self
            .process_mut(id)
            .expect("routes are made by a running process");
        p.next_id += 1;
        let rid = RequestId(p.next_id);
        p.routes.insert(rid, route);
        rid
    }

    /// Metadata naming this process's incarnation goes to its replicas, stale or not: the core
    /// ignores older epochs itself (rule 1), and the simulator checks that it does.
    fn apply_metadata(&mut self, id: NodeId, version: u64, meta: Arc<Metadata>) {
        let cfg = self.cfg.clone();
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(p) = node.process.as_mut() else {
            return;
        };
        let Some(incarnation) = p.incarnation else {
            return;
        };
        if meta.node(id).map(|n| n.incarnation) != Some(incarnation) {
            return;
        }
        if p.metadata.as_ref().is_none_or(|(v, _)| *v < version) {
            p.metadata = Some((version, meta.clone()));
        }
        let Some(topic) = meta.topics.values().next() else {
            return;
        };
        let topic_id = topic.id;
        let mut states = Vec::new();
        for part in 0..topic.partitions.len() as Part {
            let Some(state) = partition_state(&meta, topic_id, part) else {
                continue;
            };
            if !state.replicas.contains(&id) {
                continue;
            }
            if !p.replicas.contains_key(&part) {
                let dir = node.disks.entry(part).or_default().clone();
                p.clock
                    .set(node.offset_ms + self.now * node.rate_permille / 1000);
                let log = match SegmentedLog::open(dir, log_config(&cfg), p.clock.clone()) {
                    Ok(log) => log,
                    Err(e) => panic!("n{id} p{part}: an in-memory log does not open: {e}"),
                };
                let (model, high_watermark) = match driver::recover(&log) {
                    Ok(x) => x,
                    Err(e) => panic!("n{id} p{part}: recovery failed: {e}"),
                };
                let replica = Replica::new(id, replica_config(&cfg), model, high_watermark);
                // The table: from its snapshot if that still matches the recovered log, then
                // the log after it; else the whole log.
                // A damaged file (checksum, lengths) is refused and the table rebuilt from the
                // log, as the server's `read_snapshot` does.
                let decoded = node
                    .snapshots
                    .get(&part)
                    .map(tandem_table::snapshot::decode);
                if matches!(decoded, Some(Err(_))) {
                    self.stats.snapshots_damaged += 1;
                }
                let snapshot = decoded.and_then(Result::ok);
                let restored = snapshot.and_then(|s| tandem_table::replica::restore(s, &log));
                if node.snapshots.contains_key(&part) {
                    match restored {
                        Some(_) => self.stats.snapshots_loaded += 1,
                        None => self.stats.snapshots_discarded += 1,
                    }
                }
                let table = match TableReplica::load(&log, replica.high_watermark(), restored) {
                    Ok(table) => table,
                    Err(e) => panic!("n{id} p{part}: the table does not load from the log: {e}"),
                };
                node.slots_made += 1;
                let mut slot = Slot {
                    log,
                    replica,
                    mirror: Vec::new(),
                    table,
                    serial: node.slots_made,
                    compactions: 0,
                };
                slot.sync_mirror();
                p.replicas.insert(part, slot);
            }
            states.push((part, state));
        }
        for (part, state) in states {
            self.node_step(id, part, Event::Metadata(state));
        }
    }

    /// Feeds one event to a replica and performs its actions, and the events they cause, in
    /// order (the driver's contract, event.rs).
    pub fn node_step(&mut self, id: NodeId, part: Part, event: Event) {
        let mut local = VecDeque::from([event]);
        while let Some(event) = local.pop_front() {
            let now_local = self.local_now(id);
            let Some(p) = self.process_mut(id) else {
                return;
            };
            p.clock.set(now_local);
            let Some(slot) = p.replicas.get_mut(&part) else {
                return;
            };
            let actions = slot.replica.step(now_local, event);
            for action in actions {
                self.perform(id, part, action, &mut local);
            }
            let failed = self
                .process_mut(id)
                .and_then(|p| p.replicas.get(&part))
                .is_some_and(|s| s.replica.failure().is_some());
            if failed {
                self.rebuild_replica(id, part);
                return;
            }
        }
        // The table follows the HW, then answers what waited on it (the server's
        // `after_step`, after every step of the partition thread).
        let now_local = self.local_now(id);
        let answers = self
            .process_mut(id)
            .and_then(|p| p.replicas.get_mut(&part))
            .map(|slot| slot.table.after_step(&slot.replica, &slot.log, now_local))
            .unwrap_or_default();
        self.send_table_answers(id, answers);
    }

    /// After a log failure: reopen the log and build the replica again from it.
    fn rebuild_replica(&mut self, id: NodeId, part: Part) {
        self.trace(|| format!("n{id} p{part}: log failed, rebuilding the replica"));
        let meta = self.process_mut(id).and_then(|p| p.metadata.clone());
        if let Some(p) = self.process_mut(id) {
            p.replicas.remove(&part);
        }
        if let Some((version, meta)) = meta {
            self.apply_metadata(id, version, meta);
        }
    }

    fn perform(&mut self, id: NodeId, part: Part, action: Action, local: &mut VecDeque<Event>) {
        let Some(node) = self.nodes.get(&id) else {
            return;
        };
        let slow_ms = node.slow_ms;
        let Some(p) = node.process.as_ref() else {
            return;
        };
        let generation = p.generation;
        if !p.replicas.contains_key(&part) {
            return;
        }
        // The table follows the HW before any reply leaves (as the server's partition thread
        // does after every action): a client that got its ack and then reads sees its write.
        if let Some(slot) = self.process_mut(id).and_then(|p| p.replicas.get_mut(&part)) {
            slot.table.commit_to(slot.replica.high_watermark());
        }
        let Some(slot) = self
            .nodes
            .get(&id)
            .and_then(|n| n.process.as_ref())
            .and_then(|p| p.replicas.get(&part))
        else {
            return;
        };
        match &action {
            Action::Append { .. }
            | Action::Truncate { .. }
            | Action::TruncateFullyAndStartAt { .. }
            | Action::Flush => {
                let done = driver::perform(&slot.log, &action);
                if let Some(slot) = self.process_mut(id).and_then(|p| p.replicas.get_mut(&part)) {
                    slot.sync_mirror();
                    let failed = matches!(done, Some(Event::LogFailed { .. }));
                    slot.table.on_log_action(&action, failed);
                    slot.table.commit_to(slot.replica.high_watermark());
                }
                if let Some(done) = done {
                    if slow_ms > 0 {
                        // A slow disk reports late, in order.
                        let node = self.nodes.get_mut(&id).expect("node exists");
                        node.disk_free_at = node.disk_free_at.max(self.now) + slow_ms / 4 + 1;
                        let at = node.disk_free_at;
                        self.schedule(
                            at,
                            Ev::DiskDone {
                                node: id,
                                generation,
                                part,
                                event: done,
                            },
                        );
                    } else {
                        local.push_back(done);
                    }
                }
                if let Action::Truncate { offset } = action {
                    self.trace(|| format!("n{id} p{part} truncate to {offset}"));
                }
            }
            Action::SendFetch {
                to,
                fetch_id,
                request,
            } => {
                let (to, fetch_id, request) = (*to, *fetch_id, request.clone());
                if let Some(p) = self.process_mut(id) {
                    p.fetches_out.insert(part, (to, fetch_id));
                }
                self.send(
                    Endpoint::Node(id),
                    Endpoint::Node(to),
                    None,
                    Payload::Fetch {
                        part,
                        fetch_id,
                        request,
                    },
                );
            }
            Action::SendFlushReport {
                to,
                leader_epoch,
                flushed_offset,
            } => {
                let payload = Payload::FlushReport {
                    part,
                    leader_epoch: *leader_epoch,
                    flushed_offset: *flushed_offset,
                };
                self.send(Endpoint::Node(id), Endpoint::Node(*to), None, payload);
            }
            Action::RespondFetch { id: rid, result } => {
                let high_watermark = slot.replica.high_watermark();
                let read = result.clone().and_then(|data| {
                    let bytes = driver::read_range(&slot.log, data.records)
                        .map_err(|e| ReadError::Storage(e.to_string()))?;
                    Ok(data.with_records(bytes))
                });
                let route = self.process_mut(id).and_then(|p| p.routes.remove(rid));
                match route {
                    Some(Route::Follower { node, fetch_id }) => {
                        let payload = Payload::FetchReply {
                            part,
                            fetch_id,
                            response: read,
                        };
                        self.send(Endpoint::Node(id), Endpoint::Node(node), None, payload);
                    }
                    Some(Route::Consumer { client_request }) => {
                        let result = read.map(|d| d.records);
                        if let Ok(bytes) = &result {
                            if let Err(v) =
                                checks::reads_below_hw::check(self, id, part, high_watermark, bytes)
                            {
                                self.fail(v);
                            }
                        }
                        self.send(
                            Endpoint::Node(id),
                            Endpoint::Clients,
                            None,
                            Payload::ConsumerFetchReply {
                                client_request,
                                result,
                            },
                        );
                    }
                    _ => {}
                }
            }
            Action::CompleteProduce { id: rid, result } => {
                let result = result.clone();
                match self.process_mut(id).and_then(|p| p.routes.remove(rid)) {
                    Some(Route::Producer { client_request }) => {
                        self.send(
                            Endpoint::Node(id),
                            Endpoint::Clients,
                            None,
                            Payload::ProduceReply {
                                client_request,
                                result,
                            },
                        );
                    }
                    Some(Route::TableWrite {
                        client_request,
                        leader_epoch,
                    }) => {
                        let result = result
                            .map(|ok| Written {
                                token: Some(Token {
                                    offset: ok.base_offset,
                                    leader_epoch,
                                }),
                            })
                            .map_err(TableWriteError::from);
                        self.send(
                            Endpoint::Node(id),
                            Endpoint::Clients,
                            None,
                            Payload::KvWriteReply {
                                client_request,
                                result,
                            },
                        );
                    }
                    _ => {}
                }
            }
            Action::ProposeIsr {
                leader_epoch,
                partition_epoch,
                isr,
            } => {
                let now_local = self.local_now(id);
                let p = self.process_mut(id).expect("checked above");
                let (Some(incarnation), Some((_, meta))) = (p.incarnation, p.metadata.clone())
                else {
                    local.push_back(Event::IsrChangeResult(Err(IsrChangeError::Unavailable)));
                    return;
                };
                let Some(topic_id) = meta.topics.keys().next().copied() else {
                    return;
                };
                let new_isr = isr
                    .iter()
                    .map(|m| IsrMember {
                        node_id: *m,
                        incarnation: meta.node(*m).map_or(0, |n| n.incarnation),
                    })
                    .collect();
                p.next_id += 1;
                let request_id = p.next_id;
                p.alter
                    .insert(part, (request_id, now_local + ALTER_TIMEOUT_MS));
                let request = AlterPartitionRequest {
                    node_id: id,
                    incarnation,
                    topic_id,
                    partition: part,
                    leader_epoch: *leader_epoch,
                    partition_epoch: *partition_epoch,
                    new_isr,
                    leader_recovered: false,
                };
                let controller = self.controller_of(id);
                self.send(
                    Endpoint::Node(id),
                    controller,
                    None,
                    Payload::AlterPartition {
                        request_id,
                        part,
                        request,
                    },
                );
            }
            Action::HighWatermarkAdvanced { high_watermark } => {
                // Checkpointed now and then, as a real server does (Kafka: every 5 s).
                if self.rng.chance(0.3) {
                    let _ = slot.log.checkpoint_high_watermark(*high_watermark);
                }
            }
            Action::RefreshMetadata => {
                let controller = self.controller_of(id);
                self.send(
                    Endpoint::Node(id),
                    controller,
                    None,
                    Payload::MetadataRequest,
                );
            }
        }
    }
}
