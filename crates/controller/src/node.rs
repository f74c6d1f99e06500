//! The controller voter of one node: openraft plus the thin runtime that drives the pure
//! [`ActiveController`] when this voter is the Raft leader.
//!
//! ```text
//!  ControllerRequest ──> ControllerNode::handle
//!     Raft messages ───────────────> openraft (log on tandem-storage, metadata state machine)
//!     node requests ──> active? ──> ActiveController decides ──> client_write(records)
//!                                   (one decision at a time)      └─> reply once applied
//!  driver task, every tick_interval_ms, while leader:
//!     confirm leadership with a quorum (ensure_linearizable) ──> leases may be granted
//!     ActiveController::tick ──> fence expired sessions, elect, rebalance
//! ```
//!
//! The active controller is this voter while it is the Raft leader *and* has applied an entry
//! of its own term (so it decides on all committed metadata). Its soft state (sessions) starts
//! afresh at every new term.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

// tokio's clock, not std's: the same in a server, and virtual in the simulator (paused time).
use tokio::time::Instant;

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::storage::RaftLogStorage;
use openraft::{BasicNode, ChangeMembers, ServerState, SnapshotPolicy};
use tandem_storage::Directory;
use tracing::{error, info, warn};

use crate::controller::{ActiveController, ControllerConfig, ControllerError, Decision, Report};
use crate::counters::{ChangeCounts, ControllerCounters};
use crate::log_store::{OpenError, RaftLogConfig, RaftLogStore};
use crate::model::{Metadata, MetadataBatch};
use crate::network::{ControllerTransport, RaftNetworkAdapter, TransportError};
use crate::raft_types::{ApplyOutcome, Raft, RaftNodeId};
use crate::rpc::{ControllerRequest, ControllerResponse, MetadataView, VoterState};
use crate::state_machine::{MetadataStateMachine, SharedMetadata};

/// Settings of one controller voter. Defaults aim at fast failover on loopback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumConfig {
    pub node_id: RaftNodeId,
    /// The static voter set: id -> address. 1, 3 or 5 voters.
    pub voters: BTreeMap<RaftNodeId, String>,
    pub cluster_name: String,
    /// Raft leader heartbeats to followers.
    pub raft_heartbeat_interval_ms: u64,
    /// A follower that hears no leader for a random time in this range stands for election.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// A snapshot is taken after this many entries; the log before it is then purged.
    pub snapshot_after_entries: u64,
    /// Entries kept in the log behind the last snapshot, for followers slightly behind.
    pub entries_kept_after_snapshot: u64,
    /// How often the active controller expires sessions and confirms its leadership.
    pub tick_interval_ms: u64,
    /// How long a decision waits for its commit before answering Unavailable. The records may
    /// still commit later: every record is conditional, so a retry is refused or repeats
    /// harmlessly.
    pub commit_timeout_ms: u64,
    pub log: RaftLogConfig,
    pub controller: ControllerConfig,
    /// This voter lost its Raft state (wiped data directory) and is to be replaced: have the
    /// active controller remove it from the membership and add it back as a new member,
    /// instead of refusing to start (docs/operations.md, "Replacing a controller voter").
    /// Ignored by a voter that has Raft state.
    pub rejoin_as_new_voter: bool,
}

impl QuorumConfig {
    pub fn new(node_id: RaftNodeId, voters: BTreeMap<RaftNodeId, String>) -> QuorumConfig {
        QuorumConfig {
            node_id,
            voters,
            cluster_name: "tandem".into(),
            raft_heartbeat_interval_ms: 50,
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            snapshot_after_entries: 1000,
            entries_kept_after_snapshot: 100,
            tick_interval_ms: 50,
            commit_timeout_ms: 2000,
            log: RaftLogConfig::default(),
            controller: ControllerConfig::default(),
            rejoin_as_new_voter: false,
        }
    }

    /// Checks the relations correctness depends on (rule 8 leases; Raft's timers).
    pub fn validate(&self) -> Result<(), StartError> {
        self.controller.validate().map_err(StartError::Config)?;
        if !self.voters.contains_key(&self.node_id) {
            return Err(StartError::Config(format!(
                "node {} is not among the voters {:?}",
                self.node_id,
                self.voters.keys()
            )));
        }
        if self.raft_heartbeat_interval_ms == 0
            || self.raft_heartbeat_interval_ms >= self.election_timeout_min_ms
        {
            return Err(StartError::Config(format!(
                "raft_heartbeat_interval_ms {} must be positive and below election_timeout_min_ms {}, or followers stand for election while the leader is alive",
                self.raft_heartbeat_interval_ms, self.election_timeout_min_ms
            )));
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return Err(StartError::Config(format!(
                "election_timeout_max_ms {} must exceed election_timeout_min_ms {} (a random timeout in between breaks split votes)",
                self.election_timeout_max_ms, self.election_timeout_min_ms
            )));
        }
        if self.tick_interval_ms == 0 || self.tick_interval_ms as i64 >= self.controller.lease_ms {
            return Err(StartError::Config(format!(
                "tick_interval_ms {} must be positive and below lease_ms {}: leases are granted from the last quorum confirmation, made every tick",
                self.tick_interval_ms, self.controller.lease_ms
            )));
        }
        Ok(())
    }
}

/// What creating Raft needs, kept while a voter without state finds out whether it may.
struct RaftStarter<D: Directory, T> {
    /// Vote, snapshot, disk id and `formed_with` live here.
    checkpoints: Arc<D>,
    raft_config: Arc<openraft::Config>,
    transport: Arc<T>,
    log_store: RaftLogStore<D>,
    state_machine: MetadataStateMachine<D>,
}

/// Where a voter keeps its disk id, beside its vote and snapshot.
const DISK_ID_FILE: &str = "voter-disk-id";
/// Where a voter that formed (or joined) a new quorum keeps the disk ids of the voters that
/// answered "no state" in that round (`formed_with`): they may join it later, also after this
/// voter restarted.
const FORMED_WITH_FILE: &str = "voter-formed-with";

/// The id of this voter's data directory, sent with its [`ControllerRequest::VoterState`]
/// probes: created (fsynced) the first time the directory is used, so that every process of the
/// voter over the same disk presents the same id and a wiped disk a new one. A voter that joined
/// a forming quorum and crashed before it held any Raft state is let in again on restart; a
/// voter whose disk was wiped is not (it may have voted or acknowledged entries before). Drawn
/// like the election timeouts: from the OS in a server, from the seed in the simulator.
fn disk_id<D: Directory>(checkpoints: &D) -> Result<u64, OpenError> {
    use openraft::AsyncRuntime;
    use rand::RngCore;
    if let Some(id) = crate::log_store::read_checkpoint::<D, u64>(checkpoints, DISK_ID_FILE)? {
        return Ok(id);
    }
    let id = crate::raft_runtime::ControllerRuntime::thread_rng().next_u64();
    let bytes = postcard::to_allocvec(&id).map_err(|e| OpenError::Corrupt {
        file: DISK_ID_FILE.into(),
        reason: e.to_string(),
    })?;
    checkpoints
        .write_atomic(DISK_ID_FILE, &bytes)
        .map_err(|source| OpenError::Io {
            file: DISK_ID_FILE.into(),
            source,
        })?;
    Ok(id)
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("bad configuration: {0}")]
    Config(String),
    #[error("opening the controller storage: {0}")]
    Open(#[from] OpenError),
    #[error("starting Raft: {0}")]
    Raft(String),
    #[error("{0}")]
    Refused(String),
}

struct Active {
    /// The Raft term this soft state belongs to.
    term: Option<u64>,
    core: ActiveController,
}

/// One controller voter.
pub struct ControllerNode {
    id: RaftNodeId,
    /// Set once Raft runs: at start for a voter with Raft state, after the other voters were
    /// asked for one without (`start`).
    raft: OnceLock<Raft>,
    metadata: Arc<SharedMetadata>,
    /// Held across a decision and its commit: decisions are made one at a time, each on the
    /// metadata the previous one left.
    active: tokio::sync::Mutex<Active>,
    config: QuorumConfig,
    /// The origin of `now_ms`: a monotonic clock.
    started: Instant,
    stop: tokio::sync::watch::Sender<bool>,
    /// What this voter did while active, for metrics.
    counters: ControllerCounters,
    /// Names this voter's disk in its start-up probes of the other voters (`disk_id`).
    probe_id: u64,
    /// The voters (with their disk ids) that answered "no state" in the round after which
    /// this voter formed a new quorum: voters over those very disks may join it.
    formed_with: parking_lot::Mutex<BTreeMap<RaftNodeId, u64>>,
    /// `None` while a voter without state finds out whether it may run Raft; then Ok, or the
    /// reason it may not.
    joined: tokio::sync::watch::Sender<Option<Result<(), String>>>,
    /// The Raft term in which this process, as leader, committed and applied an entry it
    /// proposed itself (a barrier): from then on its metadata holds everything committed
    /// before its leadership. See `readiness`.
    caught_up_term: parking_lot::Mutex<Option<u64>>,
}

impl ControllerNode {
    /// Opens the voter's storage (`log_dir` for the Raft log, `checkpoints` for vote and
    /// snapshot) and starts Raft.
    ///
    /// A voter with Raft state (a vote, a log or a snapshot) starts Raft at once. A voter
    /// without any (a brand-new data directory, or a wiped one) must not simply take part: if
    /// the quorum already exists, the leader remembers what this voter had acknowledged and
    /// panics on finding its log gone ("follower log reversion"), and the voter's lost vote and
    /// log could let a quorum form without a committed entry. So it first asks every other
    /// voter ([`ControllerRequest::VoterState`]) in the background, answering Raft with
    /// [`ControllerResponse::VoterStarting`] meanwhile:
    ///
    /// - every voter answered and none has state: a brand-new quorum, it initializes;
    /// - the only voters with state formed the quorum from a round in which this very process
    ///   answered that it had none (a simultaneous start): it joins them;
    /// - any other voter has state: the quorum exists; unless `rejoin_as_new_voter`, it refuses
    ///   to run ([`ControllerNode::joined`] returns the error). With it, it has the active
    ///   controller remove it from the membership, starts Raft empty, and is added back.
    /// - some voter did not answer: it asks again.
    pub async fn start<D: Directory, T: ControllerTransport>(
        config: QuorumConfig,
        log_dir: D,
        checkpoints: D,
        transport: T,
    ) -> Result<Arc<ControllerNode>, StartError> {
        config.validate()?;
        let checkpoints = Arc::new(checkpoints);
        let mut log_store = RaftLogStore::open(log_dir, checkpoints.clone(), &config.log)?;
        let probe_id = disk_id(&*checkpoints)?;
        let formed_with: BTreeMap<RaftNodeId, u64> =
            crate::log_store::read_checkpoint(&*checkpoints, FORMED_WITH_FILE)?.unwrap_or_default();
        let state_machine = MetadataStateMachine::open(Arc::clone(&checkpoints))?;
        let log_state = log_store
            .get_log_state()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let vote = log_store
            .read_vote()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let has_state = vote.is_some()
            || log_state.last_log_id.is_some()
            || log_state.last_purged_log_id.is_some()
            || state_machine.last_applied().is_some();
        let metadata = state_machine.shared();
        let raft_config = openraft::Config {
            cluster_name: config.cluster_name.clone(),
            heartbeat_interval: config.raft_heartbeat_interval_ms,
            election_timeout_min: config.election_timeout_min_ms,
            election_timeout_max: config.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_after_entries),
            max_in_snapshot_log_to_keep: config.entries_kept_after_snapshot,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Config(e.to_string()))?;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let (joined, _) = tokio::sync::watch::channel(None);
        let node = Arc::new(ControllerNode {
            id: config.node_id,
            raft: OnceLock::new(),
            metadata,
            active: tokio::sync::Mutex::new(Active {
                term: None,
                core: ActiveController::new(config.controller.clone()),
            }),
            config,
            started: Instant::now(),
            stop,
            counters: ControllerCounters::default(),
            probe_id,
            formed_with: parking_lot::Mutex::new(formed_with),
            joined,
            caught_up_term: parking_lot::Mutex::new(None),
        });
        let starter = RaftStarter {
            checkpoints,
            raft_config: Arc::new(raft_config),
            transport: Arc::new(transport),
            log_store,
            state_machine,
        };
        if has_state {
            node.start_raft(starter, false).await?;
            node.joined.send_replace(Some(Ok(())));
        } else {
            info!(
                node = node.id,
                "no Raft state: asking the other voters whether the controller quorum exists"
            );
            tokio::spawn(join(Arc::clone(&node), starter));
        }
        tokio::spawn(drive(Arc::downgrade(&node), stop_rx));
        Ok(node)
    }

    /// Waits until this voter runs Raft (Ok), or was refused because it lost its Raft state
    /// while the quorum exists (the error says how to recover).
    pub async fn joined(&self) -> Result<(), StartError> {
        let mut joined = self.joined.subscribe();
        let outcome = joined.wait_for(|j| j.is_some()).await;
        match outcome.as_deref() {
            Ok(Some(Ok(()))) => Ok(()),
            Ok(Some(Err(message))) => Err(StartError::Refused(message.clone())),
            _ => Err(StartError::Raft("the voter stopped while starting".into())),
        }
    }

    /// Creates Raft over the storage; `initialize` a brand-new quorum with the configured
    /// voters.
    async fn start_raft<D: Directory, T: ControllerTransport>(
        &self,
        starter: RaftStarter<D, T>,
        initialize: bool,
    ) -> Result<(), StartError> {
        let raft = Raft::new(
            self.id,
            starter.raft_config,
            RaftNetworkAdapter::shared(starter.transport),
            starter.log_store,
            starter.state_machine,
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        if initialize {
            let members: BTreeMap<RaftNodeId, BasicNode> = self
                .config
                .voters
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr)))
                .collect();
            // Voters that start together may each initialize with the same membership: the
            // same first entry; those that find a log are refused, which is fine.
            match raft.initialize(members).await {
                Ok(()) => info!(node = self.id, "initialized a new controller quorum"),
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(StartError::Raft(e.to_string())),
            }
        }
        if self.raft.set(raft).is_err() {
            unreachable!("Raft is started once");
        }
        Ok(())
    }

    pub fn id(&self) -> RaftNodeId {
        self.id
    }

    /// This voter's Raft. Panics before it runs (see [`ControllerNode::joined`]).
    pub fn raft(&self) -> &Raft {
        self.raft.get().expect("this voter does not run Raft yet")
    }

    /// Has this voter joined the quorum (see [`ControllerNode::joined`]), without waiting?
    pub fn has_joined(&self) -> bool {
        matches!(*self.joined.borrow(), Some(Ok(())))
    }

    /// This voter's Raft, once it runs (see [`ControllerNode::joined`]).
    pub fn running_raft(&self) -> Option<&Raft> {
        self.raft.get()
    }

    /// The committed metadata this voter has applied, with its version.
    pub fn metadata(&self) -> (u64, Arc<Metadata>) {
        self.metadata.get()
    }

    /// The voter this one believes leads the quorum.
    pub fn current_leader(&self) -> Option<RaftNodeId> {
        self.raft.get()?.metrics().borrow().current_leader
    }

    /// What this voter decided while it was the active controller (committed changes only).
    pub fn counters(&self) -> &ControllerCounters {
        &self.counters
    }

    /// Is this voter the active controller now?
    pub fn is_active(&self) -> bool {
        self.readiness().is_ok()
    }

    fn now_ms(&self) -> i64 {
        self.started.elapsed().as_millis() as i64
    }

    /// Stops the driver and Raft. The storage stays as it is on disk.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let Some(raft) = self.raft.get() else { return };
        if let Err(e) = raft.shutdown().await {
            warn!(node = self.id, error = %e, "Raft did not shut down cleanly");
        }
    }

    /// Answers one request.
    pub async fn handle(&self, request: ControllerRequest) -> ControllerResponse {
        let raft = self.raft.get();
        match request {
            // Until it runs Raft, a voter takes no part in it (see `start`).
            ControllerRequest::AppendEntries(_)
            | ControllerRequest::Vote(_)
            | ControllerRequest::InstallSnapshot(_)
                if raft.is_none() =>
            {
                ControllerResponse::VoterStarting
            }
            ControllerRequest::AppendEntries(rpc) => {
                ControllerResponse::AppendEntries(self.raft().append_entries(rpc).await)
            }
            ControllerRequest::Vote(rpc) => ControllerResponse::Vote(self.raft().vote(rpc).await),
            ControllerRequest::InstallSnapshot(rpc) => {
                ControllerResponse::InstallSnapshot(self.raft().install_snapshot(rpc).await)
            }
            ControllerRequest::VoterState { from, probe_id } => {
                ControllerResponse::VoterState(match raft {
                    None => VoterState::Empty {
                        probe_id: self.probe_id,
                    },
                    Some(_) => VoterState::HasState {
                        formed_with_you: self.formed_with.lock().get(&from) == Some(&probe_id),
                    },
                })
            }
            ControllerRequest::RemoveVoter { voter_id } => {
                ControllerResponse::RemoveVoter(self.remove_voter(voter_id).await)
            }
            ControllerRequest::AddVoter { voter_id } => {
                ControllerResponse::AddVoter(self.add_voter(voter_id).await)
            }
            ControllerRequest::Register(req) => ControllerResponse::Register(
                self.decide(|core, meta, now| core.register(meta, now, &req))
                    .await,
            ),
            ControllerRequest::Heartbeat(req) => {
                let result = self
                    .decide(|core, meta, now| core.heartbeat(meta, now, &req))
                    .await;
                ControllerResponse::Heartbeat(result.map(|mut reply| {
                    reply.metadata_version = self.metadata.version();
                    reply
                }))
            }
            ControllerRequest::AlterPartition(req) => ControllerResponse::AlterPartition(
                self.decide(|core, meta, _| core.alter_partition(meta, &req))
                    .await,
            ),
            ControllerRequest::CreateTopic(req) => ControllerResponse::CreateTopic(
                self.decide(|core, meta, _| core.create_topic(meta, &req))
                    .await,
            ),
            ControllerRequest::DeleteTopic { name } => ControllerResponse::DeleteTopic(
                self.decide(|core, meta, _| core.delete_topic(meta, &name))
                    .await,
            ),
            ControllerRequest::NodeStopped {
                node_id,
                incarnation,
            } => ControllerResponse::NodeStopped(
                self.decide(|core, meta, _| Ok(core.node_stopped(meta, node_id, incarnation)))
                    .await,
            ),
            ControllerRequest::FetchMetadata {
                since_version,
                max_wait_ms,
            } => ControllerResponse::FetchMetadata(Ok(self
                .fetch_metadata(since_version, max_wait_ms)
                .await)),
        }
    }

    /// Committed metadata newer than `since_version`, waiting up to `max_wait_ms` for it.
    pub async fn fetch_metadata(&self, since_version: u64, max_wait_ms: u32) -> MetadataView {
        let mut versions = self.metadata.subscribe();
        let wait = versions.wait_for(|v| *v > since_version);
        // A timeout or a closed channel both mean: nothing newer now.
        let _ = tokio::time::timeout(Duration::from_millis(max_wait_ms as u64), wait).await;
        let (version, metadata) = self.metadata.get();
        MetadataView {
            version,
            metadata: (version > since_version).then(|| (*metadata).clone()),
        }
    }

    /// Ok if this voter is the active controller: Raft leader, and caught up (`catch_up`), so
    /// that its metadata holds everything committed before its leadership.
    ///
    /// "An entry of its own term applied" is not enough: openraft restarts a voter that was
    /// leader as leader of the same term, with its own older entries in its log but a commit
    /// index that may lag what the quorum committed before the crash; it would decide on stale
    /// metadata (the simulator found it, seed 26 of the first runs with openraft inside: a
    /// registration decided on a view from before a leader change kept a replaced process
    /// as leader).
    fn readiness(&self) -> Result<u64, ControllerError> {
        let Some(raft) = self.raft.get() else {
            return Err(ControllerError::NotController { leader_hint: None });
        };
        let metrics = raft.metrics().borrow().clone();
        if metrics.state != ServerState::Leader || metrics.current_leader != Some(self.id) {
            return Err(ControllerError::NotController {
                leader_hint: metrics.current_leader.filter(|l| *l != self.id),
            });
        }
        #[cfg(not(feature = "mutation-decide-before-barrier"))]
        let caught_up = *self.caught_up_term.lock() == Some(metrics.current_term);
        // The bug this replaced: an entry of its own term applied counts as caught up.
        #[cfg(feature = "mutation-decide-before-barrier")]
        let caught_up =
            metrics.last_applied.map(|l| l.leader_id.term) == Some(metrics.current_term);
        if !caught_up {
            return Err(ControllerError::Unavailable(
                "the new active controller is catching up".into(),
            ));
        }
        Ok(metrics.current_term)
    }

    /// A leader that has not caught up in its current term commits an empty entry of its own:
    /// once applied, every entry committed before it is applied too.
    async fn catch_up(&self) {
        let Some(raft) = self.raft.get() else { return };
        let term = {
            let metrics = raft.metrics();
            let metrics = metrics.borrow();
            if metrics.state != ServerState::Leader || metrics.current_leader != Some(self.id) {
                return;
            }
            metrics.current_term
        };
        if *self.caught_up_term.lock() == Some(term) {
            return;
        }
        let bound = Duration::from_millis(self.config.commit_timeout_ms);
        let barrier = raft.client_write(MetadataBatch {
            records: Vec::new(),
        });
        if let Ok(Ok(written)) = tokio::time::timeout(bound, barrier).await {
            // Written by this leadership: nothing committed before it is missing here.
            if written.log_id.leader_id.term == term {
                *self.caught_up_term.lock() = Some(term);
            }
        }
    }

    fn activate<'a>(
        &self,
        active: &'a mut Active,
    ) -> Result<&'a mut ActiveController, ControllerError> {
        let term = self.readiness()?;
        if active.term != Some(term) {
            info!(node = self.id, term, "became the active controller");
            active.term = Some(term);
            self.counters
                .became_active
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            active.core = ActiveController::new(self.config.controller.clone());
        }
        Ok(&mut active.core)
    }

    /// Runs one decision and commits its records; retried when it met newer metadata.
    async fn decide<R>(
        &self,
        mut decide: impl FnMut(
            &mut ActiveController,
            &Metadata,
            i64,
        ) -> Result<Decision<R>, ControllerError>,
    ) -> Result<R, ControllerError> {
        let mut active = self.active.lock().await;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let core = self.activate(&mut active)?;
            let (_, metadata) = self.metadata.get();
            let decision = decide(core, &metadata, self.now_ms())?;
            match self.commit(decision.records, &decision.reports).await {
                Ok(()) => return Ok(decision.reply),
                Err(ControllerError::Conflict(reason)) if attempts < 3 => {
                    info!(node = self.id, %reason, "decision met newer metadata, deciding again");
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn commit(
        &self,
        records: Vec<crate::model::MetadataRecord>,
        reports: &[Report],
    ) -> Result<(), ControllerError> {
        if records.is_empty() {
            log_reports(reports);
            return Ok(());
        }
        let counts = ChangeCounts::of(&self.metadata.get().1, &records, reports);
        let bound = Duration::from_millis(self.config.commit_timeout_ms);
        let Ok(written) =
            tokio::time::timeout(bound, self.raft().client_write(MetadataBatch { records })).await
        else {
            return Err(ControllerError::Unavailable(format!(
                "no commit within {} ms",
                self.config.commit_timeout_ms
            )));
        };
        match written {
            Ok(response) => match response.data {
                ApplyOutcome::Applied => {
                    self.counters.add(&counts);
                    log_reports(reports);
                    Ok(())
                }
                ApplyOutcome::Refused(e) => Err(ControllerError::Conflict(e.to_string())),
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(ControllerError::NotController {
                    leader_hint: forward.leader_id,
                })
            }
            Err(e) => Err(ControllerError::Unavailable(e.to_string())),
        }
    }

    /// One round of the driver: confirm leadership, then expire sessions and elect.
    async fn drive_once(&self) {
        self.catch_up().await;
        if self.readiness().is_err() {
            return;
        }
        let started_at_ms = self.now_ms();
        let bound = Duration::from_millis(self.config.controller.lease_ms as u64);
        let confirmed = matches!(
            tokio::time::timeout(bound, self.raft().ensure_linearizable()).await,
            Ok(Ok(_))
        );
        // Without a quorum's confirmation this voter may be deposed: it fences no one (and
        // could not commit it anyway).
        if !confirmed {
            return;
        }
        {
            let mut active = self.active.lock().await;
            if let Ok(core) = self.activate(&mut active) {
                core.leadership_confirmed(started_at_ms);
            }
        }
        let result = self
            .decide(|core, meta, now| Ok(core.tick(meta, now)))
            .await;
        if let Err(e) = result {
            info!(node = self.id, error = %e, "controller tick did not commit");
        }
    }
}

impl ControllerNode {
    /// Active controller: removes `voter_id` (which lost its Raft state) from the Raft
    /// membership, as voter and learner. Answers once the new membership is committed.
    async fn remove_voter(&self, voter_id: RaftNodeId) -> Result<(), ControllerError> {
        self.readiness()?;
        if voter_id == self.id {
            return Err(ControllerError::InvalidRequest(
                "the active controller cannot remove itself".into(),
            ));
        }
        let raft = self.raft();
        let membership = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone();
        let change = if membership.voter_ids().any(|id| id == voter_id) {
            ChangeMembers::RemoveVoters([voter_id].into())
        } else if membership.learner_ids().any(|id| id == voter_id) {
            ChangeMembers::RemoveNodes([voter_id].into())
        } else {
            return Ok(());
        };
        let bound = Duration::from_millis(self.config.commit_timeout_ms);
        self.change_membership(change, false, bound, |m| {
            !m.voter_ids().any(|id| id == voter_id) && !m.learner_ids().any(|id| id == voter_id)
        })
        .await?;
        warn!(
            node = self.id,
            voter = voter_id,
            "removed controller voter {voter_id} from the quorum (it lost its Raft state); it will be added back as a new member"
        );
        Ok(())
    }

    /// Changes the Raft membership and answers once the new membership is committed as a
    /// uniform config that `done` accepts. openraft's `change_membership` may return while the
    /// cluster is still in the joint config (the simulator found a voter's rejoin answered
    /// while the joint config {1,3} & {1,2,3} still needed voter 1, which was wiped next: the
    /// quorum never recovered); the caller must not take the change as done before then.
    async fn change_membership(
        &self,
        change: ChangeMembers<RaftNodeId, BasicNode>,
        retain: bool,
        bound: Duration,
        done: impl Fn(&openraft::Membership<RaftNodeId, BasicNode>) -> bool,
    ) -> Result<(), ControllerError> {
        let deadline = Instant::now() + bound;
        let not_in_time = || {
            ControllerError::Unavailable(format!(
                "membership change not committed within {} ms",
                bound.as_millis()
            ))
        };
        let raft = self.raft();
        match tokio::time::timeout_at(deadline, raft.change_membership(change, retain)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(membership_error(e)),
            Err(_) => return Err(not_in_time()),
        }
        let mut metrics = raft.metrics();
        loop {
            {
                let m = metrics.borrow_and_update();
                let stored = &m.membership_config;
                let committed = stored.log_id() <= &m.last_applied;
                let membership = stored.membership();
                if committed && membership.get_joint_config().len() == 1 && done(membership) {
                    return Ok(());
                }
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(ControllerError::Unavailable("the voter stopped".into()));
                }
                Err(_) => return Err(not_in_time()),
            }
        }
    }

    /// Active controller: adds `voter_id` (removed before, now running Raft with an empty
    /// log) back: as a learner, answering once it has copied the log, then as a voter.
    async fn add_voter(&self, voter_id: RaftNodeId) -> Result<(), ControllerError> {
        self.readiness()?;
        let Some(address) = self.config.voters.get(&voter_id) else {
            return Err(ControllerError::InvalidRequest(format!(
                "{voter_id} is not among the configured voters"
            )));
        };
        let raft = self.raft();
        let membership = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone();
        let is_voter = membership.voter_ids().any(|id| id == voter_id);
        // Done only in a uniform config: a joint one (a change cut short by a leader change,
        // or a retried request) is completed by proposing the change again below.
        if is_voter && membership.get_joint_config().len() == 1 {
            return Ok(());
        }
        // Copying the whole log may take a while; the caller retries on a timeout.
        let bound = Duration::from_millis(self.config.commit_timeout_ms.max(1) * 15);
        if !is_voter {
            let added = tokio::time::timeout(
                bound,
                raft.add_learner(voter_id, BasicNode::new(address), true),
            )
            .await;
            match added {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(membership_error(e)),
                Err(_) => {
                    return Err(ControllerError::Unavailable(format!(
                        "voter {voter_id} did not catch up within {} ms",
                        bound.as_millis()
                    )))
                }
            }
        }
        let promote = ChangeMembers::AddVoterIds([voter_id].into());
        self.change_membership(promote, true, bound, |m| {
            m.voter_ids().any(|id| id == voter_id)
        })
        .await?;
        info!(
            node = self.id,
            voter = voter_id,
            "controller voter {voter_id} is a voter again"
        );
        Ok(())
    }
}

fn membership_error(
    e: RaftError<RaftNodeId, ClientWriteError<RaftNodeId, BasicNode>>,
) -> ControllerError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
            ControllerError::NotController {
                leader_hint: forward.leader_id,
            }
        }
        e => ControllerError::Unavailable(e.to_string()),
    }
}

/// How long one start-up probe of another voter may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause between rounds of start-up probes and of calls to the active controller.
const PROBE_PAUSE: Duration = Duration::from_millis(100);

/// A voter without Raft state: finds out whether it may run Raft (see `ControllerNode::start`)
/// and does, or records why not.
async fn join<D: Directory, T: ControllerTransport>(
    node: Arc<ControllerNode>,
    starter: RaftStarter<D, T>,
) {
    let outcome = decide_and_start(&node, starter).await;
    match &outcome {
        Ok(()) => {}
        Err(message) => error!(node = node.id, "{message}"),
    }
    node.joined.send_replace(Some(outcome));
}

async fn decide_and_start<D: Directory, T: ControllerTransport>(
    node: &Arc<ControllerNode>,
    starter: RaftStarter<D, T>,
) -> Result<(), String> {
    let others: BTreeMap<RaftNodeId, String> = node
        .config
        .voters
        .iter()
        .filter(|(id, _)| **id != node.id)
        .map(|(id, address)| (*id, address.clone()))
        .collect();
    let mut last_report: Option<Instant> = None;
    loop {
        if *node.stop.borrow() {
            return Err("the voter stopped while starting".into());
        }
        let mut probes = tokio::task::JoinSet::new();
        for (id, address) in &others {
            let transport = Arc::clone(&starter.transport);
            let request = ControllerRequest::VoterState {
                from: node.id,
                probe_id: node.probe_id,
            };
            let (id, target) = (*id, BasicNode::new(address));
            probes.spawn(async move {
                let answer =
                    tokio::time::timeout(PROBE_TIMEOUT, transport.call(id, &target, request)).await;
                (id, answer)
            });
        }
        let mut empty = BTreeMap::new();
        let mut formed_with_me = Vec::new();
        let mut existing = Vec::new();
        while let Some(probe) = probes.join_next().await {
            let Ok((id, answer)) = probe else { continue };
            match answer {
                Ok(Ok(ControllerResponse::VoterState(VoterState::Empty { probe_id }))) => {
                    empty.insert(id, probe_id);
                }
                Ok(Ok(ControllerResponse::VoterState(VoterState::HasState {
                    formed_with_you: true,
                }))) => formed_with_me.push(id),
                Ok(Ok(ControllerResponse::VoterState(VoterState::HasState {
                    formed_with_you: false,
                }))) => existing.push(id),
                _ => {}
            }
        }
        existing.sort_unstable();
        if !existing.is_empty() {
            if node.config.rejoin_as_new_voter {
                return rejoin(node, starter, &existing).await;
            }
            return Err(format!(
                "controller voter {} has no Raft state (a new or wiped data directory) but the controller quorum already exists (voters {existing:?} have state): it will not rejoin as the same voter, which could lose committed metadata; to replace it, start it again with --rejoin-as-new-voter (docs/operations.md, \"Replacing a controller voter\")",
                node.id
            ));
        }
        let answered = empty.len() + formed_with_me.len();
        if answered == others.len() {
            let initialize = formed_with_me.is_empty();
            // Kept on disk before Raft starts: after a restart of this voter, a voter of this
            // round that crashed before it held any state must still be let in (the simulator
            // found a quorum that never formed while this lived in memory only).
            let bytes = postcard::to_allocvec(&empty).map_err(|e| e.to_string())?;
            starter
                .checkpoints
                .write_atomic(FORMED_WITH_FILE, &bytes)
                .map_err(|e| format!("writing {FORMED_WITH_FILE}: {e}"))?;
            *node.formed_with.lock() = empty;
            node.start_raft(starter, initialize)
                .await
                .map_err(|e| e.to_string())?;
            if !initialize {
                info!(
                    node = node.id,
                    "joined the controller quorum that voters {formed_with_me:?} are forming"
                );
            }
            return Ok(());
        }
        if last_report.is_none_or(|at| at.elapsed() >= Duration::from_secs(5)) {
            last_report = Some(Instant::now());
            let silent: Vec<RaftNodeId> = others
                .keys()
                .filter(|id| !empty.contains_key(id) && !formed_with_me.contains(id))
                .copied()
                .collect();
            info!(
                node = node.id,
                "no Raft state: waiting for voters {silent:?} to answer before forming or joining the controller quorum"
            );
        }
        tokio::time::sleep(PROBE_PAUSE).await;
    }
}

/// `--rejoin-as-new-voter`: the active controller removes this voter from the membership,
/// this voter starts Raft with an empty log, and the active controller adds it back (learner,
/// then voter). Its lost vote and log no longer count: it is a new member.
async fn rejoin<D: Directory, T: ControllerTransport>(
    node: &Arc<ControllerNode>,
    starter: RaftStarter<D, T>,
    existing: &[RaftNodeId],
) -> Result<(), String> {
    warn!(
        node = node.id,
        "no Raft state while the controller quorum exists (voters {existing:?}): rejoining as a new voter (removed from the membership, then added back)"
    );
    let transport = Arc::clone(&starter.transport);
    call_active(
        node,
        &*transport,
        ControllerRequest::RemoveVoter { voter_id: node.id },
    )
    .await?;
    node.start_raft(starter, false)
        .await
        .map_err(|e| e.to_string())?;
    info!(
        node = node.id,
        "removed from the controller membership; catching up as a learner"
    );
    call_active(
        node,
        &*transport,
        ControllerRequest::AddVoter { voter_id: node.id },
    )
    .await?;
    info!(
        node = node.id,
        "rejoined the controller quorum as a new voter"
    );
    Ok(())
}

/// Sends a membership request to the active controller (following leader hints) until it
/// succeeds, or the voter stops.
async fn call_active<T: ControllerTransport>(
    node: &ControllerNode,
    transport: &T,
    request: ControllerRequest,
) -> Result<(), String> {
    let others: Vec<RaftNodeId> = node
        .config
        .voters
        .keys()
        .filter(|id| **id != node.id)
        .copied()
        .collect();
    if others.is_empty() {
        return Err("no other voter to ask".into());
    }
    let mut target: Option<RaftNodeId> = None;
    let mut last_report: Option<Instant> = None;
    let mut round = 0usize;
    loop {
        if *node.stop.borrow() {
            return Err("the voter stopped while rejoining".into());
        }
        let id = target.take().unwrap_or_else(|| {
            round += 1;
            others[round % others.len()]
        });
        let address = BasicNode::new(&node.config.voters[&id]);
        let answer = tokio::time::timeout(
            Duration::from_millis(node.config.commit_timeout_ms.max(1) * 20),
            transport.call(id, &address, request.clone()),
        )
        .await;
        let error = match answer {
            Ok(Ok(
                ControllerResponse::RemoveVoter(Ok(())) | ControllerResponse::AddVoter(Ok(())),
            )) => return Ok(()),
            Ok(Ok(
                ControllerResponse::RemoveVoter(Err(e)) | ControllerResponse::AddVoter(Err(e)),
            )) => {
                if let ControllerError::NotController {
                    leader_hint: Some(hint),
                } = &e
                {
                    target = Some(*hint).filter(|h| *h != node.id);
                }
                e.to_string()
            }
            Ok(Ok(other)) => format!("unexpected answer {other:?}"),
            Ok(Err(
                TransportError::Unreachable { reason, .. }
                | TransportError::Protocol { reason, .. },
            )) => reason,
            Err(_) => "no answer in time".into(),
        };
        if target.is_none() && last_report.is_none_or(|at| at.elapsed() >= Duration::from_secs(5)) {
            last_report = Some(Instant::now());
            info!(node = node.id, ?request, %error, "rejoining: the active controller did not do it yet; retrying");
        }
        // A leader hint is followed at once (almost: stale hints must not spin).
        let pause = if target.is_some() {
            Duration::from_millis(10)
        } else {
            PROBE_PAUSE
        };
        tokio::time::sleep(pause).await;
    }
}

fn log_reports(reports: &[Report]) {
    for report in reports {
        match report {
            Report::UncleanElection { .. } => {
                warn!(
                    ?report,
                    "unclean leader election: committed data may be lost"
                )
            }
            Report::PartitionOffline { .. } => warn!(?report, "partition offline"),
            Report::NodeFenced { .. } => info!(?report, "node fenced"),
        }
    }
}

async fn drive(node: Weak<ControllerNode>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let interval = match node.upgrade() {
            Some(node) => Duration::from_millis(node.config.tick_interval_ms),
            None => return,
        };
        tokio::select! {
            // Biased: the simulator replays a seed only if no choice here is random.
            biased;
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let Some(node) = node.upgrade() else { return };
        node.drive_once().await;
    }
}
