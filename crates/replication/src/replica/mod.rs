//! One partition replica as a pure state machine: [`Replica::step`] takes the time and an
//! [`Event`] and returns the [`Action`]s to perform. The leader's rules live in `leader.rs`,
//! the follower's in `follower.rs`; this file holds the state, the dispatch, role changes
//! (DESIGN.md rule 1), flushing, and the read-only queries.
//!
//! ```text
//!                 Metadata(leader = me)                Metadata(leader = other)
//!   Unassigned ─────────────────────────> Leader <──────────────────────────> Follower
//!        └──────────────────────────────────────────────────────────────────────^
//!   every request is checked first: older epoch -> Fenced, newer -> UnknownLeaderEpoch
//! ```

mod follower;
mod leader;
mod serve;

use std::collections::BTreeMap;

use bytes::BytesMut;
use tandem_storage::batch;
use tandem_storage::BatchHeader;

use crate::error::{Fence, ProduceError, ReadError};
use crate::event::{Action, Event};
use crate::local_log::LocalLog;
use crate::types::{
    Acks, Durability, FetchId, FetchRequest, Isolation, NodeId, PartitionState, ReplicaConfig,
    RequestId,
};

/// The role, as seen from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleKind {
    /// No metadata yet: every request is refused with NotLeader.
    Unassigned,
    Leader,
    Follower,
}

/// What a leader knows of one follower ([`Replica::follower_lags`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerLag {
    pub node_id: NodeId,
    /// Its LEO, from its last fetch offset; `None` until it fetched in this epoch.
    pub log_end_offset: Option<i64>,
    /// The leader's LEO minus the follower's.
    pub lag_records: Option<i64>,
    /// Milliseconds since it was last caught up with the leader's LEO (0 if it is now);
    /// `None` if it never was in this epoch.
    pub lag_ms: Option<i64>,
}

/// One replica of one partition. See the crate documentation for the driver's loop.
#[derive(Debug)]
pub struct Replica {
    node_id: NodeId,
    config: ReplicaConfig,
    /// The model of the local log (the driver owns the log itself).
    log: LocalLog,
    /// Offsets below are committed. Only goes up, except that a truncation below it (possible
    /// only after an unclean election) clamps it to the LEO.
    high_watermark: i64,
    /// The partition as last committed by the controller; `None` until the first metadata.
    partition: Option<PartitionState>,
    role: Role,
    /// The driver's clock at the last step; never goes backwards here.
    now_ms: i64,
    /// One flush at a time: the next one covers everything appended meanwhile.
    flush_in_flight: bool,
    /// Fetches waiting for data (long poll), answered on append, HW change or deadline.
    parked: Vec<ParkedFetch>,
    next_fetch_id: u64,
    /// Set when the log failed: the model can no longer be trusted, so nothing is served until
    /// the driver rebuilds the replica from the log.
    failure: Option<String>,
}

#[derive(Debug)]
enum Role {
    Unassigned,
    Leader(leader::LeaderState),
    Follower(follower::FollowerState),
}

#[derive(Debug, Clone)]
struct ParkedFetch {
    id: RequestId,
    request: FetchRequest,
    deadline_ms: i64,
}

/// A produce that is in the log (or on its way) and waits for its acks.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PendingProduce {
    id: RequestId,
    acks: Acks,
    durability: Durability,
    base_offset: i64,
    last_offset: i64,
    deadline_ms: i64,
}

impl Replica {
    /// A replica over a log described by `log`, with the HW from its checkpoint. It serves
    /// nothing until its first [`Event::Metadata`]. A restarted replica starts here too, and
    /// never truncates to that HW: it learns where its log diverges by fetching (rule 6).
    pub fn new(node_id: NodeId, config: ReplicaConfig, log: LocalLog, high_watermark: i64) -> Self {
        let high_watermark = high_watermark
            .clamp(log.log_start_offset, log.log_end_offset)
            .max(0);
        let replica = Replica {
            node_id,
            config,
            log,
            high_watermark,
            partition: None,
            role: Role::Unassigned,
            now_ms: 0,
            flush_in_flight: false,
            parked: Vec::new(),
            next_fetch_id: 0,
            failure: None,
        };
        replica.check_invariants();
        replica
    }

    /// Handles one event at time `now_ms` and returns what to do, in order.
    pub fn step(&mut self, now_ms: i64, event: Event) -> Vec<Action> {
        self.now_ms = self.now_ms.max(now_ms);
        let mut out = Vec::new();
        if self.failure.is_some() {
            self.step_failed(event, &mut out);
            return out;
        }
        match event {
            Event::Tick => self.on_tick(&mut out),
            Event::Metadata(partition) => self.on_metadata(partition, &mut out),
            Event::Produce { id, request } => {
                if let Err(e) = self.on_produce(id, request, &mut out) {
                    // Reported even for acks=0: Kafka closes the connection on those.
                    out.push(Action::CompleteProduce { id, result: Err(e) });
                }
            }
            Event::Fetch { id, request } => self.on_fetch(id, request, &mut out),
            Event::FetchResponse { fetch_id, response } => {
                self.on_fetch_response(fetch_id, response, &mut out)
            }
            Event::FetchFailed { fetch_id } => self.on_fetch_failed(fetch_id, &mut out),
            Event::FlushReport {
                replica_id,
                leader_epoch,
                flushed_offset,
            } => self.on_flush_report(replica_id, leader_epoch, flushed_offset, &mut out),
            Event::IsrChangeResult(result) => self.on_isr_change_result(result, &mut out),
            Event::Appended {
                log_end_offset,
                flushed_offset,
            } => {
                self.log.confirm_append(log_end_offset);
                self.log.confirm_flush(flushed_offset);
                self.after_local_progress(&mut out);
            }
            Event::LogFailed { reason } => self.on_log_failed(reason, &mut out),
            Event::Compacted { compaction_horizon } => {
                // Parked fetches are checked against it again when they are answered.
                self.log.raise_compaction_horizon(compaction_horizon);
            }
            Event::Flushed { flushed_offset } => {
                self.flush_in_flight = false;
                self.log.confirm_flush(flushed_offset);
                self.after_local_progress(&mut out);
            }
        }
        // Any event may make a flush wanted without new local data: a retried flushed produce
        // of a batch already in the log, a leader asking a caught-up follower to flush.
        // Found by the simulator (seed 57): such produces otherwise waited forever.
        if self.failure.is_none() {
            self.maybe_flush(&mut out);
        }
        self.check_invariants();
        out
    }

    // ---- queries ----

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }
    pub fn role(&self) -> RoleKind {
        match self.role {
            Role::Unassigned => RoleKind::Unassigned,
            Role::Leader(_) => RoleKind::Leader,
            Role::Follower(_) => RoleKind::Follower,
        }
    }
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }
    /// The leader's HW counting flushed offsets only (`Durability::Flushed`); `None` off the
    /// leader.
    pub fn flushed_high_watermark(&self) -> Option<i64> {
        match &self.role {
            Role::Leader(l) => Some(l.flushed_high_watermark),
            _ => None,
        }
    }
    pub fn local_log(&self) -> &LocalLog {
        &self.log
    }
    pub fn partition(&self) -> Option<&PartitionState> {
        self.partition.as_ref()
    }
    /// The leader epoch this replica believes in (-1 before any metadata).
    pub fn leader_epoch(&self) -> i32 {
        self.partition.as_ref().map_or(-1, |p| p.leader_epoch)
    }
    /// On the leader, the first offset of its epoch (`None` off the leader).
    pub fn epoch_start_offset(&self) -> Option<i64> {
        match &self.role {
            Role::Leader(l) => Some(l.epoch_start_offset),
            _ => None,
        }
    }
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }
    /// Fetches parked (long poll) right now.
    pub fn parked_fetches(&self) -> usize {
        self.parked.len()
    }

    /// On the leader, what it knows of each follower, for metrics and the admin API (empty off
    /// the leader). Lag is against this leader's LEO; time lag is how long ago the follower
    /// was last caught up (rule 5's clock), measured at the last step.
    pub fn follower_lags(&self) -> Vec<FollowerLag> {
        let Role::Leader(leader) = &self.role else {
            return Vec::new();
        };
        let leader_log_end_offset = self.log.log_end_offset;
        leader
            .followers
            .iter()
            .map(|(&node_id, f)| {
                let caught_up = f.log_end_offset == Some(leader_log_end_offset);
                FollowerLag {
                    node_id,
                    log_end_offset: f.log_end_offset,
                    lag_records: f
                        .log_end_offset
                        .map(|leo| (leader_log_end_offset - leo).max(0)),
                    lag_ms: if caught_up {
                        Some(0)
                    } else if f.last_caught_up_ms == i64::MIN {
                        None
                    } else {
                        Some(self.now_ms.saturating_sub(f.last_caught_up_ms).max(0))
                    },
                }
            })
            .collect()
    }

    /// ListOffsets(latest) on the leader. A new leader answers OffsetNotAvailable until its HW
    /// reaches the start of its epoch: its HW may lag the old leader's, and a client must
    /// never see the latest offset go backwards (rule 3).
    pub fn latest_offset(
        &self,
        current_leader_epoch: Option<i32>,
        isolation: Isolation,
    ) -> Result<i64, ReadError> {
        if let Some(reason) = &self.failure {
            return Err(ReadError::Storage(reason.clone()));
        }
        self.check_fence(current_leader_epoch, true)?;
        let Role::Leader(leader) = &self.role else {
            return Err(self.not_leader().into());
        };
        match isolation {
            Isolation::Uncommitted => Ok(self.log.log_end_offset),
            Isolation::Committed if self.high_watermark < leader.epoch_start_offset => {
                Err(ReadError::OffsetNotAvailable {
                    high_watermark: self.high_watermark,
                    epoch_start_offset: leader.epoch_start_offset,
                })
            }
            Isolation::Committed => Ok(self.high_watermark),
        }
    }

    /// ListOffsets(earliest).
    pub fn earliest_offset(&self, current_leader_epoch: Option<i32>) -> Result<i64, ReadError> {
        self.check_fence(current_leader_epoch, false)?;
        Ok(self.log.log_start_offset)
    }

    /// `log_start ≤ HW ≤ LEO ≤ pending end`, `flushed ≤ LEO`; on the leader also
    /// `flushed HW ≤ HW`. Checked after every step.
    pub fn check_invariants(&self) {
        let log = &self.log;
        assert!(
            log.log_start_offset <= self.high_watermark,
            "log start {} > HW {}",
            log.log_start_offset,
            self.high_watermark
        );
        assert!(
            self.high_watermark <= log.log_end_offset,
            "HW {} > LEO {}",
            self.high_watermark,
            log.log_end_offset
        );
        assert!(
            log.log_end_offset <= log.pending_end_offset,
            "LEO {} > pending end {}",
            log.log_end_offset,
            log.pending_end_offset
        );
        assert!(
            log.flushed_offset <= log.log_end_offset,
            "flushed {} > LEO {}",
            log.flushed_offset,
            log.log_end_offset
        );
        if let Role::Leader(leader) = &self.role {
            assert!(
                leader.flushed_high_watermark <= self.high_watermark,
                "flushed HW {} > HW {}",
                leader.flushed_high_watermark,
                self.high_watermark
            );
        }
    }

    // ---- shared helpers ----

    fn not_leader(&self) -> Fence {
        Fence::NotLeader {
            leader: self.partition.as_ref().and_then(|p| p.leader),
            leader_epoch: self.leader_epoch(),
        }
    }

    /// Rule 1: a request from an older epoch is fenced, one from a newer epoch means this
    /// replica's metadata is behind. The epoch is checked before leadership, as in Kafka, so a
    /// client learns which side is stale.
    fn check_fence(&self, request_epoch: Option<i32>, need_leader: bool) -> Result<(), Fence> {
        let current_epoch = self.leader_epoch();
        if let Some(request_epoch) = request_epoch {
            if request_epoch < current_epoch {
                return Err(Fence::Fenced {
                    request_epoch,
                    current_epoch,
                });
            }
            if request_epoch > current_epoch {
                return Err(Fence::Unknown {
                    request_epoch,
                    current_epoch,
                });
            }
        }
        let allowed = match self.role {
            Role::Leader(_) => true,
            Role::Follower(_) => !need_leader,
            Role::Unassigned => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(self.not_leader())
        }
    }

    fn on_metadata(&mut self, partition: PartitionState, out: &mut Vec<Action>) {
        if let Some(current) = &self.partition {
            let stale = partition.leader_epoch < current.leader_epoch
                || (partition.leader_epoch == current.leader_epoch
                    && partition.partition_epoch <= current.partition_epoch);
            // Mutation (crates/sim): act on metadata of an older epoch (rule 1's fence).
            #[cfg(feature = "mutation-skip-epoch-fencing")]
            let stale = stale && partition.leader_epoch == current.leader_epoch;
            if stale {
                return;
            }
        }
        let same_epoch = self.leader_epoch() == partition.leader_epoch;
        let me = Some(self.node_id);
        match &self.role {
            Role::Leader(_) if same_epoch && partition.leader == me => {
                self.leader_update_partition(partition, out)
            }
            Role::Follower(f) if same_epoch && partition.leader == f.leader => {
                self.partition = Some(partition);
            }
            _ if partition.leader == me => self.become_leader(partition, out),
            _ => self.become_follower(partition, out),
        }
    }

    /// After a role or epoch change, every parked fetch is answered at once against the new
    /// state (most get a fencing error), so none waits on a leadership that is gone.
    fn answer_all_parked(&mut self, out: &mut Vec<Action>) {
        for parked in std::mem::take(&mut self.parked) {
            let result = self.recheck_fetch(&parked.request);
            out.push(Action::RespondFetch {
                id: parked.id,
                result,
            });
        }
    }

    fn on_tick(&mut self, out: &mut Vec<Action>) {
        self.expire_parked(out);
        match self.role {
            Role::Leader(_) => self.leader_tick(out),
            Role::Follower(_) => self.follower_tick(out),
            Role::Unassigned => {}
        }
    }

    /// The local log moved (append or flush confirmed).
    fn after_local_progress(&mut self, out: &mut Vec<Action>) {
        match self.role {
            Role::Leader(_) => self.leader_after_local_progress(out),
            Role::Follower(_) => self.follower_after_local_progress(out),
            Role::Unassigned => {}
        }
        self.maybe_flush(out);
    }

    /// Issues a flush if some offset must reach the disk and none is in flight.
    fn maybe_flush(&mut self, out: &mut Vec<Action>) {
        if self.flush_in_flight {
            return;
        }
        let wanted = if self.config.flush_after_append {
            self.log.log_end_offset
        } else {
            match &self.role {
                Role::Leader(l) => l.flush_wanted_offset(),
                Role::Follower(f) => f.flush_up_to,
                Role::Unassigned => 0,
            }
        }
        .min(self.log.log_end_offset);
        if wanted > self.log.flushed_offset {
            self.flush_in_flight = true;
            out.push(Action::Flush);
        }
    }

    fn on_log_failed(&mut self, reason: String, out: &mut Vec<Action>) {
        if let Role::Leader(leader) = &mut self.role {
            for p in std::mem::take(&mut leader.pending) {
                out.push(Action::CompleteProduce {
                    id: p.id,
                    result: Err(ProduceError::Storage(reason.clone())),
                });
            }
        }
        for parked in std::mem::take(&mut self.parked) {
            out.push(Action::RespondFetch {
                id: parked.id,
                result: Err(ReadError::Storage(reason.clone())),
            });
        }
        self.failure = Some(reason);
    }

    fn step_failed(&mut self, event: Event, out: &mut Vec<Action>) {
        let reason = self.failure.clone().unwrap_or_default();
        match event {
            Event::Produce { id, .. } => out.push(Action::CompleteProduce {
                id,
                result: Err(ProduceError::Storage(reason)),
            }),
            Event::Fetch { id, .. } => out.push(Action::RespondFetch {
                id,
                result: Err(ReadError::Storage(reason)),
            }),
            _ => {}
        }
    }

    fn expire_parked(&mut self, out: &mut Vec<Action>) {
        let now = self.now_ms;
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| p.deadline_ms <= now);
        self.parked = waiting;
        for parked in due {
            let result = self.recheck_fetch(&parked.request);
            out.push(Action::RespondFetch {
                id: parked.id,
                result,
            });
        }
    }

    /// Answers the parked fetches that have something to say now.
    fn wake_parked(&mut self, out: &mut Vec<Action>) {
        let parked = std::mem::take(&mut self.parked);
        for p in parked {
            if self.fetch_has_news(&p.request) {
                let result = self.recheck_fetch(&p.request);
                out.push(Action::RespondFetch { id: p.id, result });
            } else {
                self.parked.push(p);
            }
        }
    }

    fn new_fetch_id(&mut self) -> FetchId {
        self.next_fetch_id += 1;
        FetchId(self.next_fetch_id)
    }
}

/// Checks that `records` is exactly one valid batch a leader may append: Kafka's Produce v3+
/// rule, and every check the log makes, so that no client batch makes the log refuse an append.
fn validate_produced_batch(
    records: &BytesMut,
    max_bytes: usize,
) -> Result<BatchHeader, ProduceError> {
    let header = BatchHeader::parse(records)?;
    if header.magic != batch::MAGIC_V2 {
        return Err(tandem_storage::BatchError::BadMagic(header.magic).into());
    }
    if header.size() > max_bytes as i64 {
        return Err(ProduceError::RecordTooLarge {
            size: header.size().max(0) as usize,
            max: max_bytes,
        });
    }
    let header = batch::validate(records)?;
    if header.size() != records.len() as i64 {
        return Err(ProduceError::InvalidRequest(
            "a produce must hold exactly one record batch",
        ));
    }
    if header.record_count < 1 || header.last_offset_delta != header.record_count - 1 {
        return Err(tandem_storage::BatchError::BadRecordCount {
            count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        }
        .into());
    }
    Ok(header)
}

/// Followers of `partition`: every replica but `me`.
fn follower_ids(partition: &PartitionState, me: NodeId) -> impl Iterator<Item = NodeId> + '_ {
    partition.replicas.iter().copied().filter(move |r| *r != me)
}

/// A sorted, deduplicated ISR.
fn normalized(mut isr: Vec<NodeId>) -> Vec<NodeId> {
    isr.sort_unstable();
    isr.dedup();
    isr
}

type FollowerMap = BTreeMap<NodeId, leader::FollowerProgress>;

#[cfg(test)]
mod tests;
