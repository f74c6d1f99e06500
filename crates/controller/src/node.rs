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
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ServerState, SnapshotPolicy};
use tandem_storage::Directory;
use tracing::{info, warn};

use crate::controller::{ActiveController, ControllerConfig, ControllerError, Decision, Report};
use crate::counters::{ChangeCounts, ControllerCounters};
use crate::log_store::{OpenError, RaftLogConfig, RaftLogStore};
use crate::model::{Metadata, MetadataBatch};
use crate::network::{ControllerTransport, RaftNetworkAdapter};
use crate::raft_types::{ApplyOutcome, Raft, RaftNodeId};
use crate::rpc::{ControllerRequest, ControllerResponse, MetadataView};
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
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("bad configuration: {0}")]
    Config(String),
    #[error("opening the controller storage: {0}")]
    Open(#[from] OpenError),
    #[error("starting Raft: {0}")]
    Raft(String),
}

struct Active {
    /// The Raft term this soft state belongs to.
    term: Option<u64>,
    core: ActiveController,
}

/// One controller voter.
pub struct ControllerNode {
    id: RaftNodeId,
    raft: Raft,
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
}

impl ControllerNode {
    /// Opens the voter's storage (`log_dir` for the Raft log, `checkpoints` for vote and
    /// snapshot), starts Raft, and initializes the cluster if it never was.
    pub async fn start<D: Directory, T: ControllerTransport>(
        config: QuorumConfig,
        log_dir: D,
        checkpoints: D,
        transport: T,
    ) -> Result<Arc<ControllerNode>, StartError> {
        config.controller.validate().map_err(StartError::Config)?;
        if !config.voters.contains_key(&config.node_id) {
            return Err(StartError::Config(format!(
                "node {} is not among the voters {:?}",
                config.node_id,
                config.voters.keys()
            )));
        }
        let checkpoints = Arc::new(checkpoints);
        let log_store = RaftLogStore::open(log_dir, checkpoints.clone(), &config.log)?;
        let state_machine = MetadataStateMachine::open(checkpoints)?;
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
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            RaftNetworkAdapter::new(transport),
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let members: BTreeMap<RaftNodeId, BasicNode> = config
            .voters
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect();
        // Every voter initializes with the same membership; all but the first find a log and
        // are refused, which is fine.
        match raft.initialize(members).await {
            Ok(()) => info!(node = config.node_id, "initialized the controller quorum"),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(e) => return Err(StartError::Raft(e.to_string())),
        }
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let node = Arc::new(ControllerNode {
            id: config.node_id,
            raft,
            metadata,
            active: tokio::sync::Mutex::new(Active {
                term: None,
                core: ActiveController::new(config.controller.clone()),
            }),
            config,
            started: Instant::now(),
            stop,
            counters: ControllerCounters::default(),
        });
        tokio::spawn(drive(Arc::downgrade(&node), stop_rx));
        Ok(node)
    }

    pub fn id(&self) -> RaftNodeId {
        self.id
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The committed metadata this voter has applied, with its version.
    pub fn metadata(&self) -> (u64, Arc<Metadata>) {
        self.metadata.get()
    }

    /// The voter this one believes leads the quorum.
    pub fn current_leader(&self) -> Option<RaftNodeId> {
        self.raft.metrics().borrow().current_leader
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
        if let Err(e) = self.raft.shutdown().await {
            warn!(node = self.id, error = %e, "Raft did not shut down cleanly");
        }
    }

    /// Answers one request.
    pub async fn handle(&self, request: ControllerRequest) -> ControllerResponse {
        match request {
            ControllerRequest::AppendEntries(rpc) => {
                ControllerResponse::AppendEntries(self.raft.append_entries(rpc).await)
            }
            ControllerRequest::Vote(rpc) => ControllerResponse::Vote(self.raft.vote(rpc).await),
            ControllerRequest::InstallSnapshot(rpc) => {
                ControllerResponse::InstallSnapshot(self.raft.install_snapshot(rpc).await)
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

    /// Ok if this voter is the active controller: Raft leader, with an entry of its own term
    /// applied, so that its metadata holds everything committed before it.
    fn readiness(&self) -> Result<u64, ControllerError> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.state != ServerState::Leader || metrics.current_leader != Some(self.id) {
            return Err(ControllerError::NotController {
                leader_hint: metrics.current_leader.filter(|l| *l != self.id),
            });
        }
        let applied_term = metrics.last_applied.map(|l| l.leader_id.term);
        if applied_term != Some(metrics.current_term) {
            return Err(ControllerError::Unavailable(
                "the new active controller is catching up".into(),
            ));
        }
        Ok(metrics.current_term)
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
            tokio::time::timeout(bound, self.raft.client_write(MetadataBatch { records })).await
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
        if self.readiness().is_err() {
            return;
        }
        let started_at_ms = self.now_ms();
        let bound = Duration::from_millis(self.config.controller.lease_ms as u64);
        let confirmed = matches!(
            tokio::time::timeout(bound, self.raft.ensure_linearizable()).await,
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
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let Some(node) = node.upgrade() else { return };
        node.drive_once().await;
    }
}
