//! The simulated controller quorum: the real [`ControllerNode`] of each voter — openraft with
//! its log on tandem-storage over `MemDir`, the metadata state machine, and the pure
//! `ActiveController` it drives while it leads — each on its own tokio current-thread runtime
//! with paused time, so that its clock is virtual and advances only when the world says.
//!
//! ```text
//!  world event at T ──> voter_advance(v): runtime.block_on(sleep_until(local clock at T))
//!                         └─ tasks run: Raft timers, RPCs, decisions ──> outbox
//!  drain_outbox ──> Raft calls to other voters and answers to nodes, over the simulated network
//!  Deliver to Voter(v) ──> a task on v's runtime: ControllerNode::handle(request)
//! ```
//!
//! Voters live in the processes of nodes 1..=V: a node's crash, power loss, wipe or clean
//! stop is its voter's too; a network partition of the node cuts its voter off as well.
//! Messages between voters are postcard bytes, as over TCP. A lost message is a call that
//! times out; a call to a voter that is down fails at once (connection refused). Every voter
//! pushes each metadata version it applies to every node (a long poll of every voter).
//!
//! Determinism: openraft's election timeouts are drawn from the world's seed
//! (`seed_election_rng`); the voters' own `select!`s are biased; the transport never reports
//! `Unreachable` (openraft's back-off then polls an unbiased `select!`), only network errors.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use openraft::BasicNode;
use tandem_controller::model::FlushPolicy;
use tandem_controller::network::{ControllerTransport, TransportError};
use tandem_controller::node::QuorumConfig;
use tandem_controller::raft_types::RaftNodeId;
use tandem_controller::{
    ControllerConfig, ControllerNode, ControllerRequest, ControllerResponse, CreateTopicRequest,
    Metadata, TopicConfig, TopicKind,
};
use tandem_replication::NodeId;
use tandem_storage::MemDir;
use tokio::sync::oneshot;

use crate::checks::{self, Violation};
use crate::config::{DurabilityMode, SimConfig};
use crate::net::{Endpoint, Payload};
use crate::node::CrashKind;
use crate::world::{Ev, World};

pub const TOPIC: &str = "sim";
/// Every live voter's runtime is brought up to the world's time at least this often.
const POLL_MS: i64 = 5;
/// The admin client asks for the topic this often until it exists.
const ADMIN_MS: i64 = 200;
/// A call between voters that gets no answer fails after this long (a TCP timeout).
const CALL_TIMEOUT: Duration = Duration::from_millis(1_000);

/// What a voter's tasks hand to the world.
enum Outgoing {
    /// A Raft (or start-up probe) request to another voter; `reply` completes the call.
    Call {
        from: NodeId,
        generation: u64,
        to: NodeId,
        request: Bytes,
        reply: oneshot::Sender<Option<Bytes>>,
    },
    /// An answer: to a node, to the admin client, or to another voter's call.
    Answer {
        from: NodeId,
        generation: u64,
        to: Endpoint,
        to_generation: Option<u64>,
        payload: Payload,
    },
    /// A voter answered a request with an answer of another kind.
    Unexpected { voter: NodeId, detail: String },
}

type Outbox = Arc<Mutex<Vec<Outgoing>>>;

fn post(outbox: &Outbox, message: Outgoing) {
    // A poisoned lock means a voter task panicked while pushing: keep going with the queue.
    let mut queue = outbox.lock().unwrap_or_else(|p| p.into_inner());
    queue.push(message);
}

/// The transport of one voter process: every call goes through the world's network.
struct SimTransport {
    voter: NodeId,
    generation: u64,
    outbox: Outbox,
}

impl ControllerTransport for SimTransport {
    async fn call(
        &self,
        target: RaftNodeId,
        _node: &BasicNode,
        request: ControllerRequest,
    ) -> Result<ControllerResponse, TransportError> {
        let failed = |reason: &str| TransportError::Protocol {
            target,
            reason: reason.to_string(),
        };
        let (reply, answer) = oneshot::channel();
        post(
            &self.outbox,
            Outgoing::Call {
                from: self.voter,
                generation: self.generation,
                to: target as NodeId,
                request: Bytes::from(request.encode()),
                reply,
            },
        );
        match tokio::time::timeout(CALL_TIMEOUT, answer).await {
            Ok(Ok(Some(bytes))) => {
                ControllerResponse::decode(&bytes).map_err(|e| failed(&e.to_string()))
            }
            Ok(Ok(None)) => Err(failed("connection refused")),
            // The world drops a call only with its caller's process.
            Ok(Err(_)) => Err(failed("connection lost")),
            Err(_) => Err(failed("no answer in time")),
        }
    }
}

/// One voter: its disk survives its processes.
pub struct Voter {
    pub id: NodeId,
    log_dir: MemDir,
    checkpoints: MemDir,
    generation: u64,
    /// The voter's clock rate (its node's), parts per thousand.
    rate_permille: i64,
    /// Its disk was wiped: the next process rejoins as a new voter.
    wiped: bool,
    process: Option<VoterProcess>,
}

struct VoterProcess {
    generation: u64,
    runtime: tokio::runtime::Runtime,
    /// The runtime's clock when this process started, at world time `started_at`.
    base: tokio::time::Instant,
    started_at: i64,
    node: Arc<ControllerNode>,
    /// The newest metadata version this voter pushed to the nodes.
    pushed_version: u64,
    /// A `VoterRun` is due at this world time.
    run_at: Option<i64>,
    /// The last Raft state traced (trace mode only).
    raft_summary: Option<String>,
}

/// A call between voters on its way: who waits for its answer.
struct PendingCall {
    voter: NodeId,
    generation: u64,
    reply: oneshot::Sender<Option<Bytes>>,
}

pub struct ControllerSim {
    pub config: ControllerConfig,
    quorum: QuorumConfig,
    /// The newest committed metadata any voter applied, and its version (a Raft log index).
    pub metadata: Arc<Metadata>,
    pub version: u64,
    pub voters: BTreeMap<NodeId, Voter>,
    outbox: Outbox,
    calls: BTreeMap<u64, PendingCall>,
    next_call: u64,
    topic: CreateTopicRequest,
    admin_target: usize,
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
        let addresses = (1..=cfg.voters)
            .map(|v| (v as RaftNodeId, format!("voter-{v}")))
            .collect();
        let mut quorum = QuorumConfig::new(1, addresses);
        quorum.snapshot_after_entries = cfg.raft_snapshot_after_entries;
        quorum.entries_kept_after_snapshot = cfg.raft_snapshot_after_entries / 4;
        // Small segments: purging after snapshots deletes whole segments.
        quorum.log.segment_bytes = 16 << 10;
        ControllerSim {
            config: quorum.controller.clone(),
            quorum,
            metadata: Arc::new(Metadata::default()),
            version: 0,
            voters: BTreeMap::new(),
            outbox: Arc::new(Mutex::new(Vec::new())),
            calls: BTreeMap::new(),
            next_call: 0,
            topic,
            admin_target: 0,
        }
    }

    pub fn voter_ids(&self) -> Vec<NodeId> {
        self.voters.keys().copied().collect()
    }

    pub fn is_voter(&self, node: NodeId) -> bool {
        self.voters.contains_key(&node)
    }

    /// Every voter runs and takes part in the quorum (none is still rejoining after a wipe).
    /// A second voter losing its disk before the first rejoined would leave no quorum that
    /// remembers the committed metadata: no Raft survives that, so the world does not do it.
    pub fn voters_healthy(&self) -> bool {
        // `has_joined` is what an operator replacing voters one at a time waits for ("rejoined
        // the controller quorum"): it must mean the uniform config with this voter committed.
        // (It did not, at first: seed 2297 wiped a voter while a rejoin's joint config still
        // needed it.)
        self.voters
            .values()
            .all(|v| v.process.as_ref().is_some_and(|p| p.node.has_joined()))
    }

    /// The voter that is the active controller now, if any (the first, should two believe so).
    pub fn active(&self) -> Option<NodeId> {
        self.voters.values().find_map(|v| {
            let p = v.process.as_ref()?;
            p.node.is_active().then_some(v.id)
        })
    }
}

impl World {
    /// Creates the voters' disks and starts every voter (with its node, at time 0).
    pub fn controller_init(&mut self) {
        for v in 1..=self.cfg.voters {
            let rate_permille = self.nodes.get(&v).map_or(1000, |n| n.rate_permille());
            self.controller.voters.insert(
                v,
                Voter {
                    id: v,
                    log_dir: MemDir::new(),
                    checkpoints: MemDir::new(),
                    generation: 0,
                    rate_permille,
                    wiped: false,
                    process: None,
                },
            );
        }
        self.schedule(0, Ev::QuorumPoll);
        self.schedule(ADMIN_MS, Ev::AdminTick);
    }

    /// Starts voter `v`'s process (its node restarts).
    pub fn voter_start(&mut self, v: NodeId) {
        let now = self.now;
        let outbox = Arc::clone(&self.controller.outbox);
        let mut config = self.controller.quorum.clone();
        config.node_id = v as RaftNodeId;
        let Some(voter) = self.controller.voters.get_mut(&v) else {
            return;
        };
        if voter.process.is_some() {
            return;
        }
        voter.generation += 1;
        let generation = voter.generation;
        config.rejoin_as_new_voter = voter.wiped;
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                self.fail(Violation::new(
                    "controller-voter",
                    format!("voter {v}: no runtime: {e}"),
                ));
                return;
            }
        };
        let transport = SimTransport {
            voter: v,
            generation,
            outbox,
        };
        let (log_dir, checkpoints) = (voter.log_dir.clone(), voter.checkpoints.clone());
        let started = runtime.block_on(async move {
            let base = tokio::time::Instant::now();
            ControllerNode::start(config, log_dir, checkpoints, transport)
                .await
                .map(|node| (base, node))
        });
        match started {
            Ok((base, node)) => {
                voter.process = Some(VoterProcess {
                    generation,
                    runtime,
                    base,
                    started_at: now,
                    node,
                    pushed_version: 0,
                    run_at: None,
                    raft_summary: None,
                });
                self.trace(|| format!("voter {v} starts (generation {generation})"));
            }
            // Recovery of its own disk failed: a bug in the Raft storage (or the crash model).
            Err(e) => self.fail(Violation::new(
                "controller-voter",
                format!("voter {v} cannot start: {e}"),
            )),
        }
    }

    /// Voter `v`'s process ends with its node's, as `kind` says.
    pub fn voter_crash(&mut self, v: NodeId, kind: CrashKind) {
        let Some(voter) = self.controller.voters.get_mut(&v) else {
            return;
        };
        let Some(process) = voter.process.take() else {
            return;
        };
        if kind == CrashKind::Clean {
            let node = Arc::clone(&process.node);
            process
                .runtime
                .block_on(async move { node.shutdown().await });
        }
        // Dropping the runtime drops every task of the process at once: kill -9.
        drop(process);
        match kind {
            CrashKind::Kill | CrashKind::Clean => {}
            CrashKind::PowerLoss => {
                let r = &mut self.rng;
                for dir in [&voter.log_dir, &voter.checkpoints] {
                    dir.crash(&mut |_, appended| {
                        if r.chance(0.3) {
                            r.range(0, appended as i64) as usize
                        } else {
                            0
                        }
                    });
                }
            }
            CrashKind::Wipe => {
                voter.log_dir = MemDir::new();
                voter.checkpoints = MemDir::new();
                voter.wiped = true;
                checks::raft_votes::forget(&mut self.checks, v);
            }
        }
        // Calls it was waiting for die with it.
        self.controller.calls.retain(|_, c| c.voter != v);
        self.trace(|| format!("voter {v} {kind:?}"));
    }

    pub(crate) fn voter_generation(&self, v: NodeId) -> Option<u64> {
        self.controller
            .voters
            .get(&v)?
            .process
            .as_ref()
            .map(|p| p.generation)
    }

    /// Every live voter catches up with the world's time.
    pub fn quorum_poll(&mut self) {
        self.schedule(self.now + POLL_MS, Ev::QuorumPoll);
        for v in self.controller.voter_ids() {
            self.voter_advance(v);
        }
        // Calls whose caller gave up hold nothing.
        self.controller.calls.retain(|_, c| !c.reply.is_closed());
    }

    pub fn voter_run(&mut self, v: NodeId, generation: u64) {
        if self.voter_generation(v) == Some(generation) {
            if let Some(p) = self.voter_process_mut(v) {
                p.run_at = None;
            }
            self.voter_advance(v);
        }
    }

    fn voter_process_mut(&mut self, v: NodeId) -> Option<&mut VoterProcess> {
        self.controller.voters.get_mut(&v)?.process.as_mut()
    }

    /// Runs voter `v`'s runtime up to the world's time on the voter's clock, then hands what it
    /// sent to the network and looks at its state.
    fn voter_advance(&mut self, v: NodeId) {
        let now = self.now;
        let Some(voter) = self.controller.voters.get_mut(&v) else {
            return;
        };
        let rate = voter.rate_permille;
        let Some(p) = voter.process.as_mut() else {
            return;
        };
        let elapsed_us = ((now - p.started_at).max(0) * rate) as u64;
        let until = p.base + Duration::from_micros(elapsed_us);
        p.runtime
            .block_on(async move { tokio::time::sleep_until(until).await });
        self.drain_outbox();
        self.observe_voter(v);
    }

    /// Makes voter `v` run its ready tasks soon (a request was handed to it).
    fn voter_wake(&mut self, v: NodeId) {
        let at = self.now + 1;
        let Some(p) = self.voter_process_mut(v) else {
            return;
        };
        if p.run_at.is_some_and(|t| t <= at) {
            return;
        }
        p.run_at = Some(at);
        let generation = p.generation;
        self.schedule(
            at,
            Ev::VoterRun {
                voter: v,
                generation,
            },
        );
    }

    fn drain_outbox(&mut self) {
        let sent = {
            let mut queue = self
                .controller
                .outbox
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *queue)
        };
        for message in sent {
            match message {
                Outgoing::Call {
                    from,
                    generation,
                    to,
                    request,
                    reply,
                } => {
                    if self.voter_generation(from) != Some(generation) {
                        continue; // sent by a process that died before the world saw it
                    }
                    self.controller.next_call += 1;
                    let call = self.controller.next_call;
                    self.controller.calls.insert(
                        call,
                        PendingCall {
                            voter: from,
                            generation,
                            reply,
                        },
                    );
                    self.send(
                        Endpoint::Voter(from),
                        Endpoint::Voter(to),
                        None,
                        Payload::VoterCall { call, request },
                    );
                }
                Outgoing::Answer {
                    from,
                    generation,
                    to,
                    to_generation,
                    payload,
                } => {
                    if self.voter_generation(from) == Some(generation) {
                        self.send(Endpoint::Voter(from), to, to_generation, payload);
                    }
                }
                Outgoing::Unexpected { voter, detail } => self.fail(Violation::new(
                    "controller-voter",
                    format!("voter {voter} answered with the wrong kind: {detail}"),
                )),
            }
        }
    }

    /// Checks what voter `v` shows (one Raft leader per term, no fatal error, agreement on
    /// every metadata version) and pushes new metadata to the nodes.
    fn observe_voter(&mut self, v: NodeId) {
        let Some(p) = self
            .controller
            .voters
            .get(&v)
            .and_then(|x| x.process.as_ref())
        else {
            return;
        };
        let node = Arc::clone(&p.node);
        let pushed = p.pushed_version;
        if let Some(raft) = node.running_raft() {
            let (vote, fatal, summary) = {
                let m = raft.metrics();
                let m = m.borrow();
                // For the trace only: the voter's Raft role and membership when they change.
                let summary = self.tracing().then(|| {
                    format!(
                        "{:?} vote {} leader {:?} last log {:?} applied {:?} membership {:?}",
                        m.state,
                        m.vote,
                        m.current_leader,
                        m.last_log_index,
                        m.last_applied.map(|l| l.index),
                        m.membership_config.membership().get_joint_config()
                    )
                });
                (
                    m.vote,
                    m.running_state.as_ref().err().map(|e| e.to_string()),
                    summary,
                )
            };
            if let Some(summary) = summary {
                let changed = self
                    .voter_process_mut(v)
                    .is_some_and(|p| p.raft_summary.as_deref() != Some(summary.as_str()));
                if changed {
                    self.trace(|| format!("voter {v}: {summary}"));
                    if let Some(p) = self.voter_process_mut(v) {
                        p.raft_summary = Some(summary);
                    }
                }
            }
            if let Some(e) = fatal {
                self.fail(Violation::new(
                    "controller-voter",
                    format!("voter {v}'s Raft stopped: {e}"),
                ));
                return;
            }
            self.stats.raft_terms = self.stats.raft_terms.max(vote.leader_id.term);
            if let Err(violation) = checks::raft_votes::check(&mut self.checks, v, vote) {
                self.fail(violation);
                return;
            }
        }
        let (version, metadata) = node.metadata();
        if version <= pushed {
            return;
        }
        if let Some(p) = self.voter_process_mut(v) {
            p.pushed_version = version;
        }
        if let Err(violation) =
            checks::controller_agreement::check(&mut self.checks, v, version, &metadata)
        {
            self.fail(violation);
            return;
        }
        if version > self.controller.version {
            self.commit_seen(v, version, Arc::clone(&metadata));
        } else {
            self.trace(|| format!("voter {v} applied v{version}"));
        }
        for n in self.nodes.keys().copied().collect::<Vec<_>>() {
            let payload = Payload::Metadata {
                version,
                metadata: Arc::clone(&metadata),
            };
            self.send(Endpoint::Voter(v), Endpoint::Node(n), None, payload);
        }
    }

    /// The newest committed metadata so far: the checks and clients use it.
    fn commit_seen(&mut self, v: NodeId, version: u64, next: Arc<Metadata>) {
        if let Err(v) = checks::epochs_monotonic::check_committed(&self.controller.metadata, &next)
        {
            self.fail(v);
        }
        for (_, _, p) in next.partitions() {
            if p.recovering {
                self.fail(Violation::new(
                    "no-unclean-election",
                    format!("unclean election with unclean.leader.election off: {p:?}"),
                ));
            }
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
        self.controller.version = version;
        self.controller.metadata = next;
        let meta = Arc::clone(&self.controller.metadata);
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
                "controller: committed v{version} (first seen on voter {v}): {} | {}",
                parts.join("; "),
                nodes.join(" ")
            )
        });
    }

    /// The admin client creates the topic once every node registered.
    pub fn admin_tick(&mut self) {
        if !self.controller.metadata.topics.is_empty() {
            return;
        }
        self.schedule(self.now + ADMIN_MS, Ev::AdminTick);
        if self.controller.metadata.nodes.len() as i32 != self.cfg.nodes {
            return;
        }
        let voters = self.controller.voter_ids();
        self.controller.admin_target += 1;
        let target = voters[self.controller.admin_target % voters.len()];
        let request = self.controller.topic.clone();
        self.send(
            Endpoint::Clients,
            Endpoint::Voter(target),
            None,
            Payload::CreateTopic(request),
        );
    }

    /// A message for voter `v`: a Raft call from another voter, or a node's request.
    pub fn voter_receive(&mut self, v: NodeId, from: Endpoint, payload: Payload) {
        let Some(p) = self
            .controller
            .voters
            .get(&v)
            .and_then(|x| x.process.as_ref())
        else {
            // Down: a voter's call is refused at once; nodes just get no answer.
            if let (Endpoint::Voter(caller), Payload::VoterCall { call, .. }) = (from, &payload) {
                let reply = Payload::VoterCallReply {
                    call: *call,
                    response: None,
                };
                self.send(Endpoint::Voter(v), Endpoint::Voter(caller), None, reply);
            }
            return;
        };
        let node = Arc::clone(&p.node);
        let generation = p.generation;
        let to_generation = match from {
            Endpoint::Node(n) => self.generation(n),
            Endpoint::Voter(n) => self.voter_generation(n),
            Endpoint::Clients => None,
        };
        let answer = AnswerPath {
            outbox: Arc::clone(&self.controller.outbox),
            from: v,
            generation,
            to: from,
            to_generation,
        };
        // Each request kind: the controller request, and how its answer goes back (`None`:
        // nobody waits for it).
        let (request, reply): (ControllerRequest, Option<Reply>) = match payload {
            Payload::VoterCall { call, request } => {
                let request = match ControllerRequest::decode(&request) {
                    Ok(request) => request,
                    Err(e) => {
                        self.fail(Violation::new(
                            "controller-voter",
                            format!("voter {v} cannot decode a call: {e}"),
                        ));
                        return;
                    }
                };
                let reply: Reply = Box::new(move |response, _| {
                    Ok(Payload::VoterCallReply {
                        call,
                        response: Some(Bytes::from(response.encode())),
                    })
                });
                (request, Some(reply))
            }
            Payload::VoterCallReply { call, response } => {
                let Some(pending) = self.controller.calls.remove(&call) else {
                    return; // a copy, or the caller gave up
                };
                if pending.voter == v && pending.generation == generation {
                    let _ = pending.reply.send(response);
                    self.voter_wake(v);
                }
                return;
            }
            Payload::Register(request) => {
                let reply: Reply = Box::new(|response, _| match response {
                    ControllerResponse::Register(result) => Ok(Payload::RegisterReply(result)),
                    other => Err(format!("{other:?}")),
                });
                (ControllerRequest::Register(request), Some(reply))
            }
            Payload::Heartbeat {
                request,
                sent_local_ms,
                known_version,
            } => {
                let reply: Reply = Box::new(move |response, node| match response {
                    ControllerResponse::Heartbeat(result) => {
                        let (version, metadata) = node.metadata();
                        Ok(Payload::HeartbeatReply {
                            sent_local_ms,
                            result,
                            metadata: (version > known_version).then_some((version, metadata)),
                        })
                    }
                    other => Err(format!("{other:?}")),
                });
                (ControllerRequest::Heartbeat(request), Some(reply))
            }
            Payload::AlterPartition {
                request_id,
                part,
                request,
            } => {
                let reply: Reply = Box::new(move |response, _| match response {
                    ControllerResponse::AlterPartition(result) => {
                        Ok(Payload::AlterPartitionReply {
                            request_id,
                            part,
                            result,
                        })
                    }
                    other => Err(format!("{other:?}")),
                });
                (ControllerRequest::AlterPartition(request), Some(reply))
            }
            Payload::NodeStopped {
                node_id,
                incarnation,
            } => (
                ControllerRequest::NodeStopped {
                    node_id,
                    incarnation,
                },
                None,
            ),
            Payload::CreateTopic(request) => (ControllerRequest::CreateTopic(request), None),
            Payload::MetadataRequest => {
                let (version, metadata) = node.metadata();
                if version > 0 {
                    self.send(
                        Endpoint::Voter(v),
                        from,
                        to_generation,
                        Payload::Metadata { version, metadata },
                    );
                }
                return;
            }
            _ => return,
        };
        let task = async move {
            let response = node.handle(request).await;
            match reply.map(|reply| reply(response, &node)) {
                Some(Ok(payload)) => answer.send(payload),
                Some(Err(other)) => answer.unexpected(other),
                None => {}
            }
        };
        self.voter_spawn(v, task);
    }

    fn voter_spawn(
        &mut self,
        v: NodeId,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        if let Some(p) = self.voter_process_mut(v) {
            drop(p.runtime.spawn(task));
            self.voter_wake(v);
        }
    }
}

/// Turns a voter's answer into the message for whoever asked; `Err` describes an answer of
/// the wrong kind.
type Reply = Box<dyn FnOnce(ControllerResponse, &ControllerNode) -> Result<Payload, String> + Send>;

/// Where a voter's task sends its answer.
struct AnswerPath {
    outbox: Outbox,
    from: NodeId,
    generation: u64,
    to: Endpoint,
    to_generation: Option<u64>,
}

impl AnswerPath {
    fn send(&self, payload: Payload) {
        post(
            &self.outbox,
            Outgoing::Answer {
                from: self.from,
                generation: self.generation,
                to: self.to,
                to_generation: self.to_generation,
                payload,
            },
        );
    }

    /// `ControllerNode::handle` answers variant for variant; anything else is a bug.
    fn unexpected(&self, detail: String) {
        post(
            &self.outbox,
            Outgoing::Unexpected {
                voter: self.from,
                detail,
            },
        );
    }
}

/// A short line for the trace: the kind of a call between voters, without its entries.
pub fn describe_call(request: &Bytes) -> String {
    match ControllerRequest::decode(request) {
        Ok(ControllerRequest::AppendEntries(rpc)) => format!(
            "AppendEntries {} prev {} entries {} commit {}",
            rpc.vote,
            rpc.prev_log_id.map_or("-".into(), |l| l.to_string()),
            rpc.entries.len(),
            rpc.leader_commit.map_or("-".into(), |l| l.to_string()),
        ),
        Ok(ControllerRequest::Vote(rpc)) => format!(
            "Vote {} last {}",
            rpc.vote,
            rpc.last_log_id.map_or("-".into(), |l| l.to_string())
        ),
        Ok(ControllerRequest::InstallSnapshot(rpc)) => format!(
            "InstallSnapshot {} {} offset {} done {}",
            rpc.vote, rpc.meta.snapshot_id, rpc.offset, rpc.done
        ),
        Ok(other) => {
            let text = format!("{other:?}");
            text.chars().take(80).collect()
        }
        Err(e) => format!("undecodable call: {e}"),
    }
}

/// A short line for the trace: a voter's answer to a call.
pub fn describe_reply(response: &Option<Bytes>) -> String {
    let Some(bytes) = response else {
        return "refused (voter down)".into();
    };
    match ControllerResponse::decode(bytes) {
        Ok(ControllerResponse::AppendEntries(r)) => format!("AppendEntries {r:?}"),
        Ok(ControllerResponse::Vote(r)) => format!("Vote {r:?}"),
        Ok(other) => {
            let text = format!("{other:?}");
            text.chars().take(80).collect()
        }
        Err(e) => format!("undecodable answer: {e}"),
    }
}
