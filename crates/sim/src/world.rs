//! The world of one seed: every entity, the event queue on virtual time, the network, the
//! fault generator, and the run loop that checks every invariant after every event.
//!
//! ```text
//!   queue: (virtual ms, sequence) -> Ev      one thread, popped in order
//!      Deliver(message) ──> node glue (node.rs) ──> Replica::step ──> actions ──> log / send
//!                      ──> controller voters (controller.rs): openraft + ActiveController on
//!                          paused tokio runtimes, advanced to the world's time
//!                      ──> clients (workload.rs): producers, consumers, the oracle
//!      ticks, heartbeats, disk completions, faults, restarts
//!   after every event: checks::after_step (checks/*.rs); a failure stops the run
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use tandem_replication::{Event, NodeId};

use crate::checks::{self, CheckState, Violation};
use crate::config::{DurabilityMode, SimConfig};
use crate::controller::ControllerSim;
use crate::kv::KvClients;
use crate::net::{Endpoint, Message, Part, Payload};
use crate::node::{CrashKind, Node};
use crate::rng::Rng;
use crate::workload::Clients;

/// Lines of trace kept for a failure report.
pub const TRACE_LINES: usize = 200;
/// Override for debugging: SIM_TRACE_LINES.
pub fn trace_lines_limit() -> usize {
    std::env::var("SIM_TRACE_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(TRACE_LINES)
}
/// Hard cap on events per seed, so a livelock cannot run forever.
const MAX_EVENTS: u64 = 3_000_000;

#[derive(Debug)]
pub enum Ev {
    Deliver(Message),
    NodeTick {
        node: NodeId,
        generation: u64,
    },
    Heartbeat {
        node: NodeId,
        generation: u64,
    },
    /// A log action's completion, reported late (a slow disk).
    DiskDone {
        node: NodeId,
        generation: u64,
        part: Part,
        event: Event,
    },
    Restart {
        node: NodeId,
    },
    HealLink {
        from: Endpoint,
        to: Endpoint,
    },
    SlowEnd {
        node: NodeId,
    },
    /// Voter `voter` runs the tasks its last delivery made ready.
    VoterRun {
        voter: NodeId,
        generation: u64,
    },
    /// Every voter catches up with the world's time.
    QuorumPoll,
    /// The admin client creates the topic once every node registered.
    AdminTick,
    ClientTick,
    FaultDue(FaultKind),
    /// A leader kill aimed at the leader that took over after the previous one.
    KillLeader {
        part: Part,
    },
    FaultPhaseEnd,
    LivenessCheck,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Partition,
    Crash,
    LeaderKill,
    PowerLoss,
    Wipe,
    CleanRestart,
    Corrupt,
    Slow,
    ControllerFailover,
    /// A replica's stored table snapshot is damaged, then its node restarts (node.rs).
    DamageSnapshot,
}

/// What a finished seed reports.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub events: u64,
    pub virtual_ms: i64,
    pub acked_all: u64,
    pub acked_leader: u64,
    pub indeterminate: u64,
    pub reads: u64,
    pub faults: BTreeMap<&'static str, u64>,
    pub elections: u64,
    /// The highest Raft term any controller voter reached.
    pub raft_terms: u64,
    pub offline_by_design: bool,
    /// Table operations issued, reads answered, and operations in the checked history.
    pub kv_ops: u64,
    pub kv_reads: u64,
    /// Of those reads, scans.
    pub kv_scans: u64,
    pub kv_checked: u64,
    /// The linearizability check ran out of steps (no verdict).
    pub lincheck_unknown: bool,
    /// Table snapshots written, restored at a restart, and discarded (no longer matching
    /// the recovered log).
    pub snapshots_written: u64,
    pub snapshots_loaded: u64,
    pub snapshots_discarded: u64,
    /// Table log compactions that rewrote segments, and the records they removed.
    pub compactions: u64,
    pub records_compacted: u64,
    /// Of those discarded, refused as damaged (checksum, lengths) rather than stale.
    pub snapshots_damaged: u64,
}

pub struct World {
    pub cfg: SimConfig,
    pub rng: Rng,
    pub now: i64,
    seq: u64,
    queue: BTreeMap<(i64, u64), Ev>,
    pub nodes: BTreeMap<NodeId, Node>,
    pub controller: ControllerSim,
    pub clients: Clients,
    /// Table clients and their history.
    pub kv: KvClients,
    /// Directed links that are cut.
    pub cut: BTreeSet<(Endpoint, Endpoint)>,
    pub faults_on: bool,
    /// Some node registered saying it lost data (a wiped disk, a cut corrupt tail): the
    /// controller may then have dropped a partition's last eligible replica (checks/liveness).
    pub lost_data_registered: bool,
    pub heal_at: Option<i64>,
    pub checks: CheckState,
    /// `None` when tracing is off (the fast path); a failing seed is replayed with it on.
    trace: Option<VecDeque<String>>,
    trace_limit: usize,
    pub stats: Stats,
    pub failure: Option<Violation>,
    done: bool,
}

impl World {
    pub fn new(cfg: SimConfig, tracing: bool) -> World {
        // openraft's election timeouts, drawn on this thread, replay with the seed.
        tandem_controller::raft_runtime::seed_election_rng(cfg.seed ^ 0xE1EC_7100_0000_0000);
        let mut rng = Rng::new(cfg.seed);
        let nodes = (1..=cfg.nodes)
            .map(|id| (id, Node::new(id, &cfg, &mut rng)))
            .collect();
        let controller = ControllerSim::new(&cfg);
        let clients = Clients::new(&cfg, &mut rng);
        let kv = KvClients::new(&cfg, &mut rng);
        World {
            cfg,
            rng,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            nodes,
            controller,
            clients,
            kv,
            cut: BTreeSet::new(),
            faults_on: true,
            lost_data_registered: false,
            heal_at: None,
            checks: CheckState::default(),
            trace: tracing.then(VecDeque::new),
            trace_limit: trace_lines_limit(),
            stats: Stats::default(),
            failure: None,
            done: false,
        }
    }

    pub fn schedule(&mut self, at: i64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at.max(self.now), self.seq), ev);
    }

    pub fn trace(&mut self, line: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            if t.len() >= self.trace_limit {
                t.pop_front();
            }
            t.push_back(format!("{:>6} {}", self.now, line()));
        }
    }

    /// Is the trace on (a replay)? Costly descriptions are built only then.
    pub fn tracing(&self) -> bool {
        self.trace.is_some()
    }

    pub fn trace_lines(&self) -> Vec<String> {
        self.trace.iter().flatten().cloned().collect()
    }

    pub fn fail(&mut self, v: Violation) {
        if self.failure.is_none() {
            self.trace(|| format!("VIOLATION {}: {}", v.check, v.detail));
            self.failure = Some(v);
        }
    }

    /// Runs the seed to the end: the fault phase, then the liveness phase.
    pub fn run(&mut self) {
        self.controller_init();
        for id in 1..=self.cfg.nodes {
            self.restart_node(id);
        }
        self.schedule(0, Ev::ClientTick);
        self.schedule(self.cfg.fault_phase_ms, Ev::FaultPhaseEnd);
        let kinds = [
            (FaultKind::Partition, self.cfg.faults.partition_every_ms),
            (FaultKind::Crash, self.cfg.faults.crash_every_ms),
            (FaultKind::LeaderKill, self.cfg.faults.leader_kill_every_ms),
            (FaultKind::PowerLoss, self.cfg.faults.power_loss_every_ms),
            (FaultKind::Wipe, self.cfg.faults.wipe_every_ms),
            (
                FaultKind::CleanRestart,
                self.cfg.faults.clean_restart_every_ms,
            ),
            (FaultKind::Corrupt, self.cfg.faults.corrupt_every_ms),
            (FaultKind::Slow, self.cfg.faults.slow_every_ms),
            (
                FaultKind::ControllerFailover,
                self.cfg.faults.controller_failover_every_ms,
            ),
            (
                FaultKind::DamageSnapshot,
                self.cfg.tables.damage_snapshot_every_ms,
            ),
        ];
        for (kind, every) in kinds {
            if every > 0 {
                // Faults start once the topic had a chance to exist.
                let at = 1_000 + self.rng.range(0, 2 * every);
                self.schedule(at, Ev::FaultDue(kind));
            }
        }
        while !self.done && self.failure.is_none() {
            let Some(((at, _), ev)) = self.queue.pop_first() else {
                break;
            };
            self.now = at;
            self.stats.events += 1;
            if self.stats.events > MAX_EVENTS {
                self.fail(Violation::new(
                    "liveness",
                    format!("more than {MAX_EVENTS} events: livelock"),
                ));
                break;
            }
            self.handle(ev);
            if self.failure.is_none() {
                checks::after_step(self);
            }
        }
        self.stats.virtual_ms = self.now;
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver(m) => self.deliver(m),
            Ev::NodeTick { node, generation } => self.node_tick(node, generation),
            Ev::Heartbeat { node, generation } => self.node_heartbeat(node, generation),
            Ev::DiskDone {
                node,
                generation,
                part,
                event,
            } => {
                if self.generation(node) == Some(generation) {
                    self.node_step(node, part, event);
                }
            }
            Ev::Restart { node } => self.restart_node(node),
            Ev::HealLink { from, to } => {
                self.cut.remove(&(from, to));
                self.trace(|| format!("heal {from}->{to}"));
            }
            Ev::SlowEnd { node } => {
                if let Some(n) = self.nodes.get_mut(&node) {
                    n.slow_ms = 0;
                }
            }
            Ev::VoterRun { voter, generation } => self.voter_run(voter, generation),
            Ev::QuorumPoll => self.quorum_poll(),
            Ev::AdminTick => self.admin_tick(),
            Ev::ClientTick => self.client_tick(),
            Ev::FaultDue(kind) => self.fault(kind),
            Ev::KillLeader { part } => {
                if self.faults_on {
                    self.kill_leader(part);
                }
            }
            Ev::FaultPhaseEnd => self.end_faults(),
            Ev::LivenessCheck => self.liveness_check(),
        }
    }

    // ---- the network ----

    pub fn link_up(&self, from: Endpoint, to: Endpoint) -> bool {
        !self.cut.contains(&(from, to))
    }

    /// Sends a message over the simulated network: maybe lost, maybe twice, always late.
    pub fn send(
        &mut self,
        from: Endpoint,
        to: Endpoint,
        to_generation: Option<u64>,
        payload: Payload,
    ) {
        if !self.link_up(from, to) {
            self.trace(|| format!("lost at send {from}->{to}: {}", payload.describe()));
            return;
        }
        let f = &self.cfg.faults;
        let (drop_p, dup_p, max_latency) = if self.faults_on {
            (
                f.drop_probability,
                f.duplicate_probability,
                f.max_latency_ms,
            )
        } else {
            (0.0, 0.0, f.max_latency_ms)
        };
        // Traffic between clients and the cluster is not dropped: clients retry on timeouts
        // anyway, and losing their requests only slows the workload down.
        let droppable = from != Endpoint::Clients && to != Endpoint::Clients;
        if droppable && self.rng.chance(drop_p) {
            self.trace(|| format!("dropped {from}->{to}: {}", payload.describe()));
            return;
        }
        // A table write is not sent twice: over TCP a request arrives once, and a table
        // client never retries a write blindly (a second put would be a second version).
        let duplicable = !matches!(payload, Payload::KvWrite { .. });
        let copies = if self.rng.chance(dup_p) && duplicable {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut latency = self.rng.range(1, max_latency.max(1));
            if let Endpoint::Node(n) | Endpoint::Voter(n) = to {
                latency += self.nodes.get(&n).map_or(0, |n| n.slow_ms);
            }
            let m = Message {
                from,
                to,
                to_generation,
                payload: payload.clone(),
            };
            self.schedule(self.now + latency, Ev::Deliver(m));
        }
    }

    fn deliver(&mut self, m: Message) {
        if !self.link_up(m.from, m.to) {
            self.trace(|| format!("lost {}->{}: {}", m.from, m.to, m.payload.describe()));
            return;
        }
        self.trace(|| format!("{}->{} {}", m.from, m.to, m.payload.describe()));
        match m.to {
            Endpoint::Voter(v) => {
                if m.to_generation.is_some() && m.to_generation != self.voter_generation(v) {
                    return; // an answer to a voter process that is gone
                }
                self.voter_receive(v, m.from, m.payload)
            }
            Endpoint::Node(n) => self.node_receive(n, m),
            Endpoint::Clients => self.clients_receive(m),
        }
    }

    // ---- faults ----

    fn count_fault(&mut self, name: &'static str) {
        *self.stats.faults.entry(name).or_default() += 1;
    }

    fn next_fault(&mut self, kind: FaultKind, every: i64) {
        let at = self.now + self.rng.range(every / 2, every * 3 / 2);
        self.schedule(at, Ev::FaultDue(kind));
    }

    fn fault(&mut self, kind: FaultKind) {
        if !self.faults_on {
            return;
        }
        let f = self.cfg.faults.clone();
        let node = self.rng.range(1, self.cfg.nodes as i64) as NodeId;
        match kind {
            FaultKind::Partition => {
                self.partition_fault();
                self.next_fault(kind, f.partition_every_ms);
            }
            FaultKind::Crash => {
                if self.is_up(node) {
                    self.count_fault("crash");
                    self.crash(node, CrashKind::Kill);
                }
                self.next_fault(kind, f.crash_every_ms);
            }
            FaultKind::LeaderKill => {
                let parts = self.cfg.partitions as i64;
                let part = self.rng.range(0, parts - 1) as Part;
                // Half the time the next leader dies too, soon after taking over: its HW may
                // still lag its epoch start while a lagging follower asks to rejoin (KAFKA-7128).
                if self.kill_leader(part) && self.rng.chance(0.5) {
                    let at = self.now + self.rng.range(100, 800);
                    self.schedule(at, Ev::KillLeader { part });
                }
                self.next_fault(kind, f.leader_kill_every_ms);
            }
            FaultKind::PowerLoss => {
                let lossy = self.cfg.durability == DurabilityMode::FlushNever;
                if self.is_up(node) && (!lossy || self.lossy_fault_allowed()) {
                    self.count_fault("power-loss");
                    self.crash(node, CrashKind::PowerLoss);
                }
                self.next_fault(kind, f.power_loss_every_ms);
            }
            FaultKind::Wipe => {
                if self.is_up(node) && self.lossy_fault_allowed() {
                    self.count_fault("wipe");
                    self.crash(node, CrashKind::Wipe);
                }
                self.next_fault(kind, f.wipe_every_ms);
            }
            FaultKind::CleanRestart => {
                if self.is_up(node) {
                    self.count_fault("clean-restart");
                    self.crash(node, CrashKind::Clean);
                }
                self.next_fault(kind, f.clean_restart_every_ms);
            }
            FaultKind::Corrupt => {
                if self.is_up(node) && self.lossy_fault_allowed() && self.corrupt(node) {
                    self.count_fault("corrupt");
                    // Bit rot is found when the log is next opened: restart at once.
                    self.crash(node, CrashKind::Kill);
                }
                self.next_fault(kind, f.corrupt_every_ms);
            }
            FaultKind::Slow => {
                if let Some(n) = self.nodes.get_mut(&node) {
                    n.slow_ms = self.rng.range(20, 300);
                    let slow_ms = n.slow_ms;
                    self.count_fault("slow");
                    self.trace(|| format!("n{node} slow by {slow_ms} ms"));
                    let until = self.now + self.rng.range(300, 3_000);
                    self.schedule(until, Ev::SlowEnd { node });
                }
                self.next_fault(kind, f.slow_every_ms);
            }
            FaultKind::ControllerFailover => {
                // The node whose voter is the active controller dies (kill -9): the quorum
                // elects another, which starts every session afresh.
                if let Some(active) = self.controller.active() {
                    if self.is_up(active) {
                        self.count_fault("controller-failover");
                        self.crash(active, CrashKind::Kill);
                        // Three in four come back at once, before the other voters' election
                        // timeout: openraft restores such a voter as leader of its old term.
                        if self.rng.chance(0.75) {
                            let back = self.now + self.rng.range(5, 150);
                            self.schedule(back, Ev::Restart { node: active });
                        }
                    }
                }
                self.next_fault(kind, f.controller_failover_every_ms);
            }
            FaultKind::DamageSnapshot => {
                if self.is_up(node) && self.damage_snapshot(node) {
                    self.count_fault("damage-snapshot");
                    // The damage is found when the table is next loaded: restart at once.
                    self.crash(node, CrashKind::Kill);
                }
                self.next_fault(kind, self.cfg.tables.damage_snapshot_every_ms);
            }
        }
    }

    /// Kills the committed leader of `part` (kill -9), back 50–600 ms later. False if it has
    /// none running.
    fn kill_leader(&mut self, part: Part) -> bool {
        let leader = self
            .controller
            .metadata
            .partitions()
            .nth(part as usize)
            .and_then(|(_, _, p)| p.leader);
        let Some(leader) = leader.filter(|l| self.is_up(*l)) else {
            return false;
        };
        self.count_fault("leader-kill");
        self.crash(leader, CrashKind::Kill);
        let back = self.now + self.rng.range(50, 600);
        self.schedule(back, Ev::Restart { node: leader });
        true
    }

    /// Cuts links for a while: one node (and its voter) from everything, a leader from the
    /// controller quorum only (still reachable by clients and followers), a node from one
    /// peer, one direction only, a node from its clients, or the active controller from the
    /// other voters only (the nodes still reach it).
    fn partition_fault(&mut self) {
        self.count_fault("partition");
        let node = self.rng.range(1, self.cfg.nodes as i64) as NodeId;
        let mine = self.host_endpoints(node);
        let others: Vec<Endpoint> = self
            .endpoints()
            .into_iter()
            .filter(|e| !mine.contains(e) && *e != Endpoint::Clients)
            .collect();
        let mut cuts: Vec<(Endpoint, Endpoint)> = Vec::new();
        let both = |cuts: &mut Vec<(Endpoint, Endpoint)>, a: Endpoint, b: Endpoint| {
            cuts.push((a, b));
            cuts.push((b, a));
        };
        match self.rng.range(0, 5) {
            0 => {
                for &me in &mine {
                    for &other in &others {
                        both(&mut cuts, me, other);
                    }
                }
            }
            1 => {
                // A leader cut off from the controller but not from clients (a zombie): from
                // every voter, its own voter from the others too.
                let leader = self
                    .controller
                    .metadata
                    .partitions()
                    .find_map(|(_, _, p)| p.leader)
                    .unwrap_or(node);
                let voters = self.controller.voter_ids();
                for v in voters.iter().filter(|v| **v != leader) {
                    both(&mut cuts, Endpoint::Node(leader), Endpoint::Voter(*v));
                    if self.controller.is_voter(leader) {
                        both(&mut cuts, Endpoint::Voter(leader), Endpoint::Voter(*v));
                    }
                }
            }
            2 => {
                let other = self.rng.range(1, self.cfg.nodes as i64) as NodeId;
                if other != node {
                    for me in &mine {
                        for them in self.host_endpoints(other) {
                            both(&mut cuts, *me, them);
                        }
                    }
                }
            }
            3 => {
                // Asymmetric: the node hears everyone, nobody hears it (or the reverse).
                let outgoing = self.rng.chance(0.5);
                for &me in &mine {
                    for &other in &others {
                        cuts.push(if outgoing { (me, other) } else { (other, me) });
                    }
                }
            }
            4 => {
                // The active controller loses the other voters but not the nodes: it must
                // stop deciding (its leases lapse) while a new one is elected.
                if let Some(active) = self.controller.active() {
                    for v in self.controller.voter_ids() {
                        if v != active {
                            both(&mut cuts, Endpoint::Voter(active), Endpoint::Voter(v));
                        }
                    }
                }
            }
            _ => {
                both(&mut cuts, Endpoint::Clients, Endpoint::Node(node));
            }
        }
        let heal_at = self.now + self.rng.range(200, 3_000);
        for (from, to) in cuts {
            self.trace(|| format!("cut {from}->{to}"));
            self.cut.insert((from, to));
            self.schedule(heal_at, Ev::HealLink { from, to });
        }
    }

    /// The endpoints in node `n`'s process: the node, and its voter if it has one.
    fn host_endpoints(&self, n: NodeId) -> Vec<Endpoint> {
        let mut mine = vec![Endpoint::Node(n)];
        if self.controller.is_voter(n) {
            mine.push(Endpoint::Voter(n));
        }
        mine
    }

    fn endpoints(&self) -> Vec<Endpoint> {
        let mut all: Vec<Endpoint> = self.nodes.keys().map(|n| Endpoint::Node(*n)).collect();
        all.extend(self.controller.voter_ids().into_iter().map(Endpoint::Voter));
        all.push(Endpoint::Clients);
        all
    }

    /// A fault that loses data on one node (power loss without fsync, a wiped disk, a cut
    /// corrupt tail) is only allowed while every node is up, registered as its current
    /// incarnation, and in every ISR: then every committed record is on every other replica.
    /// acks=all promises nothing beyond that. Every controller voter must be in the quorum too
    /// (a wipe takes the node's voter with it). See docs/simulation.md.
    fn lossy_fault_allowed(&self) -> bool {
        // With topic flush `Always` the controller keeps an uncleanly restarted node in the
        // ELR, trusting that it lost nothing; a wiped disk or a cut corrupt tail breaks that
        // trust, so registration says so (`lost_data`) and the node leaves every ELR. Seed 432
        // lost committed data before that flag existed.
        let meta = &self.controller.metadata;
        let all_registered = self.nodes.values().all(|n| {
            n.process.as_ref().is_some_and(|p| {
                p.incarnation.is_some() && meta.node(n.id).map(|r| r.incarnation) == p.incarnation
            })
        });
        let topics_exist = !meta.topics.is_empty();
        all_registered
            && self.controller.voters_healthy()
            && topics_exist
            && meta
                .partitions()
                .all(|(_, _, p)| p.isr.len() == p.replicas.len())
    }

    fn end_faults(&mut self) {
        self.trace(|| "faults stop: heal everything, restart every node".into());
        self.faults_on = false;
        self.heal_at = Some(self.now);
        self.cut.clear();
        let down: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| n.process.is_none())
            .map(|n| n.id)
            .collect();
        for n in down {
            self.restart_node(n);
        }
        for n in self.nodes.values_mut() {
            n.slow_ms = 0;
        }
        self.clients.liveness_started(self.now);
        self.schedule(self.now + 100, Ev::LivenessCheck);
    }

    fn liveness_check(&mut self) {
        let Some(heal_at) = self.heal_at else { return };
        match checks::liveness::check(self) {
            checks::liveness::Verdict::Done { offline_by_design } => {
                self.stats.offline_by_design = offline_by_design;
                if let Err(v) = checks::acked_writes::final_check(self) {
                    self.fail(v);
                }
                self.kv_finish();
                if self.failure.is_none() {
                    if let Err(v) = checks::table_linearizable::final_check(self) {
                        self.fail(v);
                    }
                }
                self.done = true;
            }
            checks::liveness::Verdict::Waiting(why) => {
                if self.now - heal_at > self.cfg.liveness_bound_ms {
                    self.fail(Violation::new(
                        "liveness",
                        format!(
                            "no recovery within {} ms after the faults stopped: {why}",
                            self.cfg.liveness_bound_ms
                        ),
                    ));
                } else {
                    self.schedule(self.now + 100, Ev::LivenessCheck);
                }
            }
        }
    }

    pub fn is_up(&self, node: NodeId) -> bool {
        self.nodes.get(&node).is_some_and(|n| n.process.is_some())
    }

    pub fn generation(&self, node: NodeId) -> Option<u64> {
        let n = self.nodes.get(&node)?;
        n.process.as_ref().map(|p| p.generation)
    }
}
