//! The follower's rules: pull from the leader (rule 2), truncate by epoch and never to the HW
//! (rule 6, KIP-101 and KIP-279), apply the leader's HW only after truncation (KAFKA-14704).
//!
//! ```text
//!   Ready ──SendFetch──> InFlight ──records──> Appending ──Appended──> Ready (apply HW)
//!     ^                     │ diverging epoch: Truncate, HW untouched ──> Ready (fetch again)
//!     └──── backoff ────────┘ error or no answer
//! ```

use bytes::Bytes;
use tandem_storage::batch::split_batches;

use super::*;
use crate::types::{DivergingEpoch, FetchData};

#[derive(Debug)]
pub(super) struct FollowerState {
    pub(super) leader: Option<NodeId>,
    fetch: FetchState,
    /// The leader waits for flushed offsets up to here (from its last fetch answer).
    pub(super) flush_up_to: i64,
    /// The flushed offset last reported to the leader in this epoch, and when.
    reported_flushed_offset: i64,
    reported_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FetchState {
    /// Fetch once the time comes and no append is in flight (the fetch offset must be on the
    /// log: it counts toward the leader's HW).
    Ready {
        not_before_ms: i64,
    },
    InFlight {
        fetch_id: FetchId,
        sent_at_ms: i64,
    },
    /// Fetched records are being appended; the leader's HW is applied once they are on the log.
    Appending {
        leader_high_watermark: i64,
    },
}

impl Replica {
    pub(super) fn become_follower(&mut self, partition: PartitionState, out: &mut Vec<Action>) {
        self.fail_pending_on_step_down(partition.leader, partition.leader_epoch, out);
        self.role = Role::Follower(FollowerState {
            leader: partition.leader,
            fetch: FetchState::Ready {
                not_before_ms: self.now_ms,
            },
            flush_up_to: 0,
            reported_flushed_offset: -1,
            reported_at_ms: i64::MIN,
        });
        self.partition = Some(partition);
        self.answer_all_parked(out);
        self.maybe_send_fetch(out);
    }

    fn set_fetch_state(&mut self, state: FetchState) {
        if let Role::Follower(f) = &mut self.role {
            f.fetch = state;
        }
    }

    fn backoff(&self) -> FetchState {
        FetchState::Ready {
            not_before_ms: self
                .now_ms
                .saturating_add(self.config.replica_fetch_backoff_ms),
        }
    }

    fn ready_now(&self) -> FetchState {
        FetchState::Ready {
            not_before_ms: self.now_ms,
        }
    }

    pub(super) fn maybe_send_fetch(&mut self, out: &mut Vec<Action>) {
        let Role::Follower(f) = &self.role else {
            return;
        };
        let Some(leader) = f.leader.filter(|l| *l != self.node_id) else {
            return;
        };
        let due =
            matches!(f.fetch, FetchState::Ready { not_before_ms } if self.now_ms >= not_before_ms);
        if !due || !self.log.is_settled() {
            return;
        }
        let fetch_id = self.new_fetch_id();
        let request = FetchRequest {
            replica_id: Some(self.node_id),
            fetch_offset: self.log.log_end_offset,
            last_fetched_epoch: self.log.last_batch_epoch(),
            current_leader_epoch: Some(self.leader_epoch()),
            max_bytes: self.config.replica_fetch_max_bytes,
            max_wait_ms: self.config.replica_fetch_wait_max_ms,
            known_high_watermark: Some(self.high_watermark),
        };
        self.set_fetch_state(FetchState::InFlight {
            fetch_id,
            sent_at_ms: self.now_ms,
        });
        out.push(Action::SendFetch {
            to: leader,
            fetch_id,
            request,
        });
    }

    fn fetch_in_flight(&self, fetch_id: FetchId) -> bool {
        matches!(&self.role, Role::Follower(f)
            if matches!(f.fetch, FetchState::InFlight { fetch_id: id, .. } if id == fetch_id))
    }

    pub(super) fn on_fetch_failed(&mut self, fetch_id: FetchId, out: &mut Vec<Action>) {
        if self.fetch_in_flight(fetch_id) {
            self.set_fetch_state(self.backoff());
            self.maybe_send_fetch(out);
        }
    }

    pub(super) fn on_fetch_response(
        &mut self,
        fetch_id: FetchId,
        response: Result<FetchData<Bytes>, ReadError>,
        out: &mut Vec<Action>,
    ) {
        // An answer to a fetch of an older epoch, or one given up on, is dropped.
        if !self.fetch_in_flight(fetch_id) {
            return;
        }
        match response {
            Err(e) => self.on_fetch_error(e, out),
            Ok(data) => self.on_fetch_data(data, out),
        }
        self.maybe_report_flush(out);
        self.maybe_send_fetch(out);
    }

    /// Fencing (our epoch is older) and NotLeader mean our metadata is stale; UnknownLeaderEpoch
    /// means the leader's is, so we only wait and retry.
    fn on_fetch_error(&mut self, error: ReadError, out: &mut Vec<Action>) {
        match error {
            ReadError::FencedLeaderEpoch { .. } | ReadError::NotLeader { .. } => {
                out.push(Action::RefreshMetadata);
                self.set_fetch_state(self.backoff());
            }
            ReadError::OffsetOutOfRange {
                log_start_offset,
                log_end_offset,
                ..
            } if self.log.log_end_offset < log_start_offset
                || (self.log.log_end_offset > log_start_offset
                    && self.log.log_end_offset <= log_end_offset) =>
            {
                // Too far behind: what we lack is gone from the leader; or our offset is in its
                // log yet refused, because it is below its compaction horizon (serve.rs).
                // Either way, start over at its start and copy the log.
                out.push(Action::TruncateFullyAndStartAt {
                    offset: log_start_offset,
                });
                self.log.truncate_fully_and_start_at(log_start_offset);
                self.high_watermark = log_start_offset;
                self.set_fetch_state(self.ready_now());
            }
            _ => self.set_fetch_state(self.backoff()),
        }
    }

    fn on_fetch_data(&mut self, data: FetchData<Bytes>, out: &mut Vec<Action>) {
        if let Some(diverging) = data.diverging_epoch {
            self.truncate_for_divergence(diverging, out);
            return;
        }
        if let Role::Follower(f) = &mut self.role {
            f.flush_up_to = data.flush_up_to.unwrap_or(0);
        }
        let Some((headers, length)) = self.check_replicated(&data.records) else {
            self.set_fetch_state(self.backoff());
            return;
        };
        if headers.is_empty() {
            self.apply_leader_high_watermark(data.high_watermark, out);
            self.set_fetch_state(self.ready_now());
            return;
        }
        let fetch_offset = self.log.log_end_offset;
        // What arrives from below the leader's compaction horizon is a piece of a log that is
        // whole only up to that horizon: ours rises to it at once, past what arrived, so that
        // the table serves nothing before the copy gets there (sim seed 12: raised only to
        // each chunk's end, a follower's HW stopped inside the compacted region, on a state
        // that never existed). Never further (seed 3: a horizon raised without the leader
        // having compacted sent followers of this replica, once leader, to copy its log).
        let raise_to = data.compaction_horizon;
        let compaction_horizon = (fetch_offset < raise_to
            && raise_to > self.log.compaction_horizon_target())
        .then_some(raise_to);
        self.log.issue_append(&headers);
        if let Some(horizon) = compaction_horizon {
            self.log.raise_compaction_horizon(horizon);
        }
        out.push(Action::Append {
            batches: data.records.slice(..length),
            compaction_horizon,
        });
        self.set_fetch_state(FetchState::Appending {
            leader_high_watermark: data.high_watermark,
        });
    }

    /// Rule 6 on the follower (Kafka's `getOffsetTruncationState`). If we know the leader's
    /// epoch, cut to where it ends on both sides; if not, cut to the end of our largest
    /// smaller epoch and fetch again, which asks about that epoch next (KIP-279). Never to the
    /// HW. Every diverging answer cuts the log strictly, so this ends.
    fn truncate_for_divergence(&mut self, diverging: DivergingEpoch, out: &mut Vec<Action>) {
        if diverging.end_offset < 0 {
            self.set_fetch_state(self.backoff());
            return;
        }
        let log_end_offset = self.log.log_end_offset;
        let offset = match self
            .log
            .epochs
            .end_offset_for(diverging.epoch, log_end_offset)
        {
            Some(ours) if ours.epoch == diverging.epoch => diverging
                .end_offset
                .min(ours.start_offset)
                .min(log_end_offset),
            Some(ours) => ours.start_offset.min(log_end_offset),
            None => diverging.end_offset.min(log_end_offset),
        };
        if offset < log_end_offset {
            out.push(Action::Truncate { offset });
            self.log.truncate_to(offset);
            // Only reachable below the HW after an unclean election; the HW must stay in the log.
            self.high_watermark = self
                .high_watermark
                .min(self.log.log_end_offset)
                .max(self.log.log_start_offset);
        }
        // The leader's HW rides on this answer too, but is not applied: our log may still
        // diverge below it until an answer comes back with records (KAFKA-14704).
        self.set_fetch_state(self.ready_now());
    }

    /// The whole batches of a fetch answer that the log will take: contiguous from our LEO,
    /// epochs not going backwards nor past the current one, within the size limit. `None` if
    /// the answer is unusable.
    fn check_replicated(&self, records: &Bytes) -> Option<(Vec<BatchHeader>, usize)> {
        let mut headers = Vec::new();
        let mut length = 0;
        let mut expected = self.log.log_end_offset;
        let mut latest_epoch = self.log.epochs.latest_epoch();
        let current_epoch = self.leader_epoch();
        for item in split_batches(records) {
            let Ok((header, raw)) = item else {
                break; // keep the whole batches before a torn or bad one
            };
            let epoch_ok = header.leader_epoch <= current_epoch
                && latest_epoch.is_none_or(|latest| header.leader_epoch >= latest);
            // A gap is a leader's compaction; going back is not allowed.
            if header.base_offset < expected
                || header.size() > self.config.max_batch_bytes as i64
                || !epoch_ok
            {
                return None;
            }
            if header.leader_epoch >= 0 {
                latest_epoch = Some(header.leader_epoch);
            }
            expected = header.next_offset();
            length += raw.len();
            headers.push(header);
        }
        if headers.is_empty() && !records.is_empty() {
            return None;
        }
        Some((headers, length))
    }

    /// A follower's HW is min(leader HW, own LEO), taken only after its log agrees with the
    /// leader's (rule 3), and never lowered here.
    fn apply_leader_high_watermark(&mut self, leader_high_watermark: i64, out: &mut Vec<Action>) {
        let high_watermark = leader_high_watermark.min(self.log.log_end_offset);
        if high_watermark > self.high_watermark {
            self.high_watermark = high_watermark;
            out.push(Action::HighWatermarkAdvanced { high_watermark });
            self.wake_parked(out);
        }
    }

    pub(super) fn follower_after_local_progress(&mut self, out: &mut Vec<Action>) {
        if let Role::Follower(f) = &self.role {
            if let FetchState::Appending {
                leader_high_watermark,
            } = f.fetch
            {
                if self.log.is_settled() {
                    self.apply_leader_high_watermark(leader_high_watermark, out);
                    self.set_fetch_state(self.ready_now());
                }
            }
        }
        self.maybe_report_flush(out);
        self.maybe_send_fetch(out);
    }

    /// Tells the leader how far our log is on disk, when it waits for that.
    fn maybe_report_flush(&mut self, out: &mut Vec<Action>) {
        let flushed_offset = self.log.flushed_offset;
        let leader_epoch = self.leader_epoch();
        let always = self.config.flush_after_append;
        let Role::Follower(f) = &mut self.role else {
            return;
        };
        let Some(leader) = f.leader.filter(|l| *l != self.node_id) else {
            return;
        };
        let wanted = always || f.flush_up_to > 0;
        // A report is a one-way message: one that was lost is sent again, at most once per
        // long-poll period, or a leader waiting on it would wait forever on an idle partition
        // (found by the simulator, seed 339).
        let resend =
            self.now_ms.saturating_sub(f.reported_at_ms) >= self.config.replica_fetch_wait_max_ms;
        if wanted && (flushed_offset > f.reported_flushed_offset || resend) {
            f.reported_flushed_offset = flushed_offset;
            f.reported_at_ms = self.now_ms;
            out.push(Action::SendFlushReport {
                to: leader,
                leader_epoch,
                flushed_offset,
            });
        }
    }

    pub(super) fn follower_tick(&mut self, out: &mut Vec<Action>) {
        if let Role::Follower(f) = &self.role {
            if let FetchState::InFlight { sent_at_ms, .. } = f.fetch {
                if self.now_ms.saturating_sub(sent_at_ms) >= self.config.replica_fetch_timeout_ms {
                    // Given up: a late answer carries the old fetch id and is dropped.
                    self.set_fetch_state(self.ready_now());
                }
            }
        }
        self.maybe_send_fetch(out);
    }
}
