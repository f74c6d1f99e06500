//! The leader's rules: produce and acks (rule 4), the HW (rule 3), ISR changes through the
//! controller (rule 5), idempotent producers (rule 9).

use super::*;
use crate::error::IsrChangeError;
use crate::producer::SequenceCheck;
use crate::types::{IsrState, ProduceOk, ProduceRequest};

#[derive(Debug)]
pub(super) struct LeaderState {
    /// The LEO when this replica became leader: the first offset of its epoch. A follower
    /// rejoins the ISR only once past it (KAFKA-7128), and ListOffsets(latest) waits for the HW
    /// to reach it.
    pub(super) epoch_start_offset: i64,
    pub(super) followers: FollowerMap,
    pub(super) pending: Vec<PendingProduce>,
    /// The ISR proposal in flight (at most one per partition).
    pub(super) proposal: Option<Vec<NodeId>>,
    /// The proposal went unanswered (it may still commit): send it again at this time.
    pub(super) resend_proposal_at_ms: Option<i64>,
    /// No new proposal before this time; `i64::MAX` waits for new metadata (the controller
    /// said our epochs are stale).
    pub(super) propose_not_before_ms: i64,
    /// Like the HW, but over flushed offsets: what `Durability::Flushed` produces wait for.
    pub(super) flushed_high_watermark: i64,
}

/// What the leader knows of one follower (Kafka's `ReplicaState`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FollowerProgress {
    /// Its LEO, from its last fetch offset; unknown until it fetches in this epoch.
    pub(super) log_end_offset: Option<i64>,
    /// From its flush reports, never above its known LEO.
    pub(super) flushed_offset: Option<i64>,
    /// When it was last fully caught up with the leader's LEO (rule 5's lag clock).
    pub(super) last_caught_up_ms: i64,
    pub(super) last_fetch_ms: i64,
    /// The leader's LEO at its previous fetch: fetching up to it means it was caught up then.
    pub(super) last_fetch_leader_log_end_offset: i64,
    /// The HW it was last told: a parked fetch is woken when the HW moves past it.
    pub(super) last_sent_high_watermark: Option<i64>,
    /// The compaction horizon when it was last answered with records, and the offset it
    /// fetched from then: if the horizon moved since, records it has not fetched yet may be
    /// gone; if it fetches from further back, its log lost what it had (replica/serve.rs).
    pub(super) answered_at_horizon: Option<(i64, i64)>,
}

impl FollowerProgress {
    fn new(in_sync: bool, now_ms: i64) -> FollowerProgress {
        FollowerProgress {
            log_end_offset: None,
            flushed_offset: None,
            // An ISR member gets a full lag period from the leader change to show up.
            last_caught_up_ms: if in_sync { now_ms } else { i64::MIN },
            last_fetch_ms: i64::MIN,
            last_fetch_leader_log_end_offset: -1,
            answered_at_horizon: None,
            last_sent_high_watermark: None,
        }
    }
}

impl LeaderState {
    /// The highest offset a pending produce needs on disk.
    pub(super) fn flush_wanted_offset(&self) -> i64 {
        self.pending
            .iter()
            .filter(|p| p.durability == Durability::Flushed)
            .map(|p| p.last_offset + 1)
            .max()
            .unwrap_or(0)
    }

    /// The committed ISR plus any proposed addition: who the HW waits for. A proposed removal
    /// does not count until committed, so a cut-off leader cannot shrink the ISR to itself and
    /// acknowledge alone (rule 5).
    fn maximal_isr(&self, partition: &PartitionState) -> Vec<NodeId> {
        // Mutation (crates/sim): count a proposed removal before it commits.
        #[cfg(feature = "mutation-early-isr-removal")]
        if let Some(proposal) = &self.proposal {
            return normalized(proposal.clone());
        }
        let mut isr = partition.isr.clone();
        if let Some(proposal) = &self.proposal {
            isr.extend(proposal.iter().copied());
        }
        normalized(isr)
    }
}

impl Replica {
    pub(super) fn become_leader(&mut self, partition: PartitionState, out: &mut Vec<Action>) {
        let now = self.now_ms;
        // A leader re-elected in a newer epoch keeps its waiting produces: their batches are in
        // its log and commit when the HW passes them.
        let (pending, flushed_high_watermark) =
            match std::mem::replace(&mut self.role, Role::Unassigned) {
                Role::Leader(old) => (old.pending, old.flushed_high_watermark),
                _ => (Vec::new(), self.log.log_start_offset),
            };
        // The epoch's first offset. Unlike Kafka, the epoch is not written into the epoch
        // cache now but by its first batch, so the cache never holds an epoch that owns no
        // offsets (one that a later follower would have to clean away before taking the new
        // leader's older-epoch batches). Fetch answers count the epoch from here anyway
        // (`leader_end_offset_for`), and ListOffsets uses this offset.
        let epoch_start_offset = self
            .log
            .epochs
            .start_offset_of(partition.leader_epoch)
            .unwrap_or(self.log.pending_end_offset);
        let followers = follower_ids(&partition, self.node_id)
            .map(|r| (r, FollowerProgress::new(partition.isr.contains(&r), now)))
            .collect();
        self.role = Role::Leader(LeaderState {
            epoch_start_offset,
            followers,
            pending,
            proposal: None,
            resend_proposal_at_ms: None,
            propose_not_before_ms: now,
            flushed_high_watermark: flushed_high_watermark.min(self.high_watermark),
        });
        self.partition = Some(partition);
        self.answer_all_parked(out);
        self.after_isr_commit(out);
    }

    /// Same epoch, newer partition epoch: an ISR change committed (ours or not).
    pub(super) fn leader_update_partition(
        &mut self,
        partition: PartitionState,
        out: &mut Vec<Action>,
    ) {
        let now = self.now_ms;
        let me = self.node_id;
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        // The committed change supersedes whatever proposal was in flight.
        leader.proposal = None;
        leader.resend_proposal_at_ms = None;
        leader.propose_not_before_ms = now;
        leader
            .followers
            .retain(|r, _| partition.replicas.contains(r));
        for r in follower_ids(&partition, me) {
            leader
                .followers
                .entry(r)
                .or_insert_with(|| FollowerProgress::new(false, now));
        }
        self.partition = Some(partition);
        self.after_isr_commit(out);
    }

    pub(super) fn on_produce(
        &mut self,
        id: RequestId,
        request: ProduceRequest,
        out: &mut Vec<Action>,
    ) -> Result<(), ProduceError> {
        self.check_fence(request.current_leader_epoch, true)?;
        let ProduceRequest {
            acks,
            durability,
            timeout_ms,
            mut records,
            ..
        } = request;
        let header = validate_produced_batch(&records, self.config.max_batch_bytes)?;
        let (Some(partition), Role::Leader(leader)) = (&self.partition, &mut self.role) else {
            return Err(self.not_leader().into());
        };
        if acks == Acks::All && partition.isr.len() < partition.min_insync_replicas {
            return Err(ProduceError::NotEnoughReplicas {
                isr_size: partition.isr.len(),
                min_insync_replicas: partition.min_insync_replicas,
            });
        }
        let deadline_ms = self.now_ms.saturating_add(timeout_ms.max(0));
        let waiting = |base_offset, last_offset| PendingProduce {
            id,
            acks,
            durability,
            base_offset,
            last_offset,
            deadline_ms,
        };
        match self.log.producers.check(&header)? {
            SequenceCheck::Duplicate(original) => {
                // A retry: answer with the original offsets, once they are as durable as this
                // request asks (they may not be yet).
                if acks != Acks::None {
                    leader
                        .pending
                        .push(waiting(original.first_offset, original.last_offset));
                }
                self.leader_progress(out);
                return Ok(());
            }
            SequenceCheck::Append => {}
        }
        let leader_epoch = partition.leader_epoch;
        let base_offset = self.log.pending_end_offset;
        batch::set_base_offset(&mut records, base_offset);
        batch::set_leader_epoch(&mut records, leader_epoch);
        let header = BatchHeader {
            base_offset,
            leader_epoch,
            ..header
        };
        self.log.issue_append(&[header]);
        out.push(Action::Append {
            batches: records.freeze(),
            compaction_horizon: None,
        });
        if acks != Acks::None {
            leader
                .pending
                .push(waiting(base_offset, header.last_offset()));
        }
        Ok(())
    }

    /// A follower fetched at `fetch_offset` (its LEO) with no divergence: Kafka's
    /// `updateFollowerFetchState`, then ISR expansion and the HW.
    pub(super) fn record_follower_fetch(
        &mut self,
        replica_id: NodeId,
        fetch_offset: i64,
        out: &mut Vec<Action>,
    ) {
        let now = self.now_ms;
        let leader_log_end_offset = self.log.log_end_offset;
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        let Some(f) = leader.followers.get_mut(&replica_id) else {
            return;
        };
        if fetch_offset >= leader_log_end_offset {
            f.last_caught_up_ms = f.last_caught_up_ms.max(now);
        } else if fetch_offset >= f.last_fetch_leader_log_end_offset {
            // It reached what the leader had at its previous fetch: caught up as of then.
            f.last_caught_up_ms = f.last_caught_up_ms.max(f.last_fetch_ms);
        }
        f.last_fetch_leader_log_end_offset = leader_log_end_offset;
        f.last_fetch_ms = now;
        f.log_end_offset = Some(fetch_offset);
        // A fetch offset below an earlier flush report means the follower truncated.
        f.flushed_offset = f.flushed_offset.map(|x| x.min(fetch_offset));
        self.maybe_expand_isr(replica_id, out);
        self.leader_progress(out);
    }

    pub(super) fn on_flush_report(
        &mut self,
        replica_id: NodeId,
        leader_epoch: i32,
        flushed_offset: i64,
        out: &mut Vec<Action>,
    ) {
        if leader_epoch != self.leader_epoch() {
            return;
        }
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        let Some(f) = leader.followers.get_mut(&replica_id) else {
            return;
        };
        // Reports only go up: a duplicated or late report must not lower it (the follower
        // reports only increases, so a lowered value would stall flushed produces for good).
        // A truncating follower lowers it through its fetch offset instead.
        f.flushed_offset = Some(
            f.flushed_offset
                .map_or(flushed_offset, |x| x.max(flushed_offset)),
        );
        self.leader_progress(out);
    }

    pub(super) fn on_isr_change_result(
        &mut self,
        result: Result<IsrState, IsrChangeError>,
        out: &mut Vec<Action>,
    ) {
        let now = self.now_ms;
        let backoff = self.config.isr_change_backoff_ms;
        let (Some(partition), Role::Leader(leader)) = (&mut self.partition, &mut self.role) else {
            return;
        };
        let Some(proposal) = leader.proposal.take() else {
            return; // an answer to a proposal that metadata already superseded
        };
        leader.resend_proposal_at_ms = None;
        match result {
            Ok(state) => {
                if state.leader_epoch != partition.leader_epoch
                    || state.partition_epoch <= partition.partition_epoch
                {
                    return; // metadata will tell
                }
                partition.isr = normalized(state.isr);
                partition.partition_epoch = state.partition_epoch;
                leader.propose_not_before_ms = now;
                self.after_isr_commit(out);
            }
            Err(IsrChangeError::FencedLeaderEpoch | IsrChangeError::InvalidUpdateVersion) => {
                // Our view is stale: propose nothing until new metadata arrives. The proposal
                // may itself be what made it stale (an earlier copy of it committed), so its
                // additions keep counting toward the HW until then (found by the simulator,
                // seed 239: the HW passed a member the controller had just added).
                leader.proposal = Some(proposal);
                leader.propose_not_before_ms = i64::MAX;
            }
            Err(IsrChangeError::Unavailable) => {
                // No answer is no refusal: the proposal may still commit (found by the
                // simulator, seed 847: it committed after the leader gave up on it, and the HW
                // had meanwhile passed the added member's LEO). As Kafka keeps its pending ISR,
                // it stays in flight, its additions counting, and is sent again.
                leader.proposal = Some(proposal);
                leader.resend_proposal_at_ms = Some(now.saturating_add(backoff));
            }
            Err(_) => leader.propose_not_before_ms = now.saturating_add(backoff),
        }
    }

    /// Sends an unanswered proposal again once its back-off is over.
    fn maybe_resend_proposal(&mut self, out: &mut Vec<Action>) {
        let now = self.now_ms;
        let (Some(partition), Role::Leader(leader)) = (&self.partition, &mut self.role) else {
            return;
        };
        let (Some(at), Some(isr)) = (leader.resend_proposal_at_ms, &leader.proposal) else {
            return;
        };
        if now < at {
            return;
        }
        leader.resend_proposal_at_ms = None;
        out.push(Action::ProposeIsr {
            leader_epoch: partition.leader_epoch,
            partition_epoch: partition.partition_epoch,
            isr: isr.clone(),
        });
    }

    pub(super) fn leader_tick(&mut self, out: &mut Vec<Action>) {
        let now = self.now_ms;
        if let Role::Leader(leader) = &mut self.role {
            let (expired, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut leader.pending)
                .into_iter()
                .partition(|p| p.deadline_ms <= now);
            leader.pending = waiting;
            for p in expired {
                out.push(Action::CompleteProduce {
                    id: p.id,
                    result: Err(ProduceError::TimedOutAfterAppend {
                        base_offset: p.base_offset,
                    }),
                });
            }
        }
        self.maybe_resend_proposal(out);
        self.maybe_shrink_isr(out);
    }

    pub(super) fn leader_after_local_progress(&mut self, out: &mut Vec<Action>) {
        self.leader_progress(out);
    }

    /// After anything that may move the HW: move it, answer produces, wake fetches.
    fn leader_progress(&mut self, out: &mut Vec<Action>) {
        self.maybe_advance_high_watermark(out);
        // New local data wakes follower fetches even when the HW stays.
        self.wake_parked(out);
        self.complete_ready_produces(out);
    }

    /// Rule 3: HW = min LEO over the maximal ISR, frozen while the committed ISR is smaller
    /// than min.insync.replicas (KIP-966), never backwards. Returns whether it moved.
    fn maybe_advance_high_watermark(&mut self, out: &mut Vec<Action>) -> bool {
        let (Some(partition), Role::Leader(leader)) = (&self.partition, &mut self.role) else {
            return false;
        };
        if partition.isr.len() < partition.min_insync_replicas {
            return false;
        }
        let mut high_watermark = self.log.log_end_offset;
        let mut flushed = self.log.flushed_offset;
        for member in leader.maximal_isr(partition) {
            if member == self.node_id {
                continue;
            }
            let Some(f) = leader.followers.get(&member) else {
                return false; // an ISR member that is not a replica: wait for metadata
            };
            let Some(leo) = f.log_end_offset else {
                return false; // it has not fetched in this epoch yet
            };
            high_watermark = high_watermark.min(leo);
            flushed = flushed.min(f.flushed_offset.map_or(i64::MIN, |x| x.min(leo)));
        }
        let mut moved = false;
        if high_watermark > self.high_watermark {
            self.high_watermark = high_watermark;
            out.push(Action::HighWatermarkAdvanced { high_watermark });
            moved = true;
        }
        // Durable commit implies commit: the flushed HW never passes the HW.
        let flushed = flushed.min(self.high_watermark);
        if flushed > leader.flushed_high_watermark {
            leader.flushed_high_watermark = flushed;
        }
        moved
    }

    fn complete_ready_produces(&mut self, out: &mut Vec<Action>) {
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        let log_start_offset = self.log.log_start_offset;
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut leader.pending)
            .into_iter()
            .partition(|p| {
                let reached = match (p.acks, p.durability) {
                    // Mutation (crates/sim): acknowledge acks=all once the leader has it.
                    #[cfg(feature = "mutation-ack-before-hw")]
                    (Acks::All, Durability::Replicated) => self.log.log_end_offset,
                    #[cfg(not(feature = "mutation-ack-before-hw"))]
                    (Acks::All, Durability::Replicated) => self.high_watermark,
                    (Acks::All, Durability::Flushed) => leader.flushed_high_watermark,
                    (_, Durability::Replicated) => self.log.log_end_offset,
                    (_, Durability::Flushed) => self.log.flushed_offset,
                };
                reached > p.last_offset
            });
        leader.pending = waiting;
        for p in done {
            out.push(Action::CompleteProduce {
                id: p.id,
                result: Ok(ProduceOk {
                    base_offset: p.base_offset,
                    log_start_offset,
                }),
            });
        }
    }

    /// After the committed ISR changed: the HW may move (a removal can unblock it), and if the
    /// ISR is now below min.insync.replicas, acks=all produces still waiting will not commit
    /// while it stays so: tell them their outcome is indeterminate (rule 4).
    fn after_isr_commit(&mut self, out: &mut Vec<Action>) {
        self.leader_progress(out);
        let (Some(partition), Role::Leader(leader)) = (&self.partition, &mut self.role) else {
            return;
        };
        if partition.isr.len() >= partition.min_insync_replicas {
            return;
        }
        let (failed, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut leader.pending)
            .into_iter()
            .partition(|p| p.acks == Acks::All);
        leader.pending = waiting;
        for p in failed {
            out.push(Action::CompleteProduce {
                id: p.id,
                result: Err(ProduceError::NotEnoughReplicasAfterAppend {
                    base_offset: p.base_offset,
                    isr_size: partition.isr.len(),
                    min_insync_replicas: partition.min_insync_replicas,
                }),
            });
        }
    }

    /// Rule 5 (and KAFKA-7128): a follower rejoins once its LEO ≥ HW and ≥ the start of this
    /// leader's epoch. Whether its node is live and of the current incarnation is the
    /// controller's check.
    fn maybe_expand_isr(&mut self, replica_id: NodeId, out: &mut Vec<Action>) {
        let (Some(partition), Role::Leader(leader)) = (&self.partition, &mut self.role) else {
            return;
        };
        if leader.proposal.is_some() || self.now_ms < leader.propose_not_before_ms {
            return;
        }
        if leader.maximal_isr(partition).contains(&replica_id) {
            return;
        }
        let Some(leo) = leader
            .followers
            .get(&replica_id)
            .and_then(|f| f.log_end_offset)
        else {
            return;
        };
        #[cfg(not(feature = "mutation-rejoin-without-epoch-start"))]
        if leo < self.high_watermark || leo < leader.epoch_start_offset {
            return;
        }
        // Mutation (crates/sim): KAFKA-7128, rejoin below the start of the leader's epoch.
        #[cfg(feature = "mutation-rejoin-without-epoch-start")]
        if leo < self.high_watermark {
            return;
        }
        let mut isr = partition.isr.clone();
        isr.push(replica_id);
        let isr = normalized(isr);
        leader.proposal = Some(isr.clone());
        out.push(Action::ProposeIsr {
            leader_epoch: partition.leader_epoch,
            partition_epoch: partition.partition_epoch,
            isr,
        });
    }

    /// Rule 5: a follower that has not caught up to the leader's LEO within
    /// replica.lag.time.max leaves the ISR (once the controller commits it).
    fn maybe_shrink_isr(&mut self, out: &mut Vec<Action>) {
        let now = self.now_ms;
        let lag_max_ms = self.config.replica_lag_time_max_ms;
        let leader_log_end_offset = self.log.log_end_offset;
        let (Some(partition), Role::Leader(leader)) = (&self.partition, &mut self.role) else {
            return;
        };
        if leader.proposal.is_some() || now < leader.propose_not_before_ms {
            return;
        }
        let lagging = |r: &NodeId| {
            if *r == self.node_id {
                return false;
            }
            match leader.followers.get(r) {
                None => true,
                Some(f) => {
                    f.log_end_offset != Some(leader_log_end_offset)
                        && now.saturating_sub(f.last_caught_up_ms) > lag_max_ms
                }
            }
        };
        if !partition.isr.iter().any(lagging) {
            return;
        }
        let isr: Vec<NodeId> = partition
            .isr
            .iter()
            .copied()
            .filter(|r| !lagging(r))
            .collect();
        leader.proposal = Some(isr.clone());
        out.push(Action::ProposeIsr {
            leader_epoch: partition.leader_epoch,
            partition_epoch: partition.partition_epoch,
            isr,
        });
    }

    /// Kafka's `endOffsetFor` on the leader, counting its current epoch as starting at
    /// `epoch_start_offset` even before its first batch wrote it into the cache.
    pub(super) fn leader_end_offset_for(&self, epoch: i32) -> Option<tandem_storage::EpochEntry> {
        let Role::Leader(leader) = &self.role else {
            return None;
        };
        let current = self.leader_epoch();
        let log_end_offset = self.log.log_end_offset;
        if epoch >= current {
            return Some(tandem_storage::EpochEntry {
                epoch: current,
                start_offset: log_end_offset,
            });
        }
        if self.log.epochs.latest_epoch() == Some(current) {
            return self.log.epochs.end_offset_for(epoch, log_end_offset);
        }
        let mut with_current = self.log.epochs.clone();
        if with_current
            .assign(current, leader.epoch_start_offset)
            .is_err()
        {
            return self.log.epochs.end_offset_for(epoch, log_end_offset);
        }
        with_current.end_offset_for(epoch, log_end_offset)
    }

    /// The flush target a fetch answer passes on to followers.
    pub(super) fn flush_up_to(&self) -> Option<i64> {
        match &self.role {
            Role::Leader(l) if !self.config.flush_after_append => {
                Some(l.flush_wanted_offset()).filter(|o| *o > 0)
            }
            _ => None,
        }
    }

    pub(super) fn note_high_watermark_sent(&mut self, replica_id: NodeId) {
        let high_watermark = self.high_watermark;
        if let Role::Leader(leader) = &mut self.role {
            if let Some(f) = leader.followers.get_mut(&replica_id) {
                f.last_sent_high_watermark = Some(high_watermark);
            }
        }
    }

    pub(super) fn last_sent_high_watermark(&self, replica_id: NodeId) -> Option<i64> {
        match &self.role {
            Role::Leader(leader) => leader
                .followers
                .get(&replica_id)
                .and_then(|f| f.last_sent_high_watermark),
            _ => None,
        }
    }

    pub(super) fn is_follower_of_mine(&self, replica_id: NodeId) -> bool {
        match &self.role {
            Role::Leader(leader) => leader.followers.contains_key(&replica_id),
            _ => false,
        }
    }

    /// For tests and metrics: what the leader knows of a follower's LEO.
    pub fn follower_log_end_offset(&self, replica_id: NodeId) -> Option<i64> {
        match &self.role {
            Role::Leader(leader) => leader.followers.get(&replica_id)?.log_end_offset,
            _ => None,
        }
    }

    /// The ISR proposal in flight, if any.
    pub fn isr_proposal(&self) -> Option<&[NodeId]> {
        match &self.role {
            Role::Leader(leader) => leader.proposal.as_deref(),
            _ => None,
        }
    }

    /// Pending produces that wait for acks (leader only).
    pub fn pending_produces(&self) -> usize {
        match &self.role {
            Role::Leader(leader) => leader.pending.len(),
            _ => 0,
        }
    }

    /// Fails the produces of a leadership that is over: their batches are in the log and may
    /// still commit under the new leader, so the outcome is indeterminate.
    pub(super) fn fail_pending_on_step_down(
        &mut self,
        leader_hint: Option<NodeId>,
        leader_epoch: i32,
        out: &mut Vec<Action>,
    ) {
        if let Role::Leader(leader) = &mut self.role {
            for p in std::mem::take(&mut leader.pending) {
                out.push(Action::CompleteProduce {
                    id: p.id,
                    result: Err(ProduceError::NotLeaderAfterAppend {
                        base_offset: p.base_offset,
                        leader: leader_hint,
                        leader_epoch,
                    }),
                });
            }
        }
    }
}
