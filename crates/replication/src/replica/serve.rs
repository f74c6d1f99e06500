//! Answering fetches (rule 2): a follower's fetch is answered by the leader with records up to
//! its LEO, or with the diverging epoch when the follower's log parts from the leader's; a
//! consumer's fetch is answered by any replica with records below its HW. With nothing new,
//! a fetch is parked until an append, a HW change or its max wait.
//!
//! # The compaction horizon
//! Compaction removes a key's superseded records, and its tombstone once it is old enough; the
//! horizon is the first offset at which the log is whole again (docs/tables.md). A follower
//! holding an older record of a key whose tombstone went, fetching from above it, would never
//! see the delete, and its table would keep the key forever (the hazard of Kafka's
//! `delete.retention.ms`); one stopping inside the cleaned region would hold a state that
//! never existed. So a follower fetching from inside the log, below the horizon, gets
//! OffsetOutOfRange unless nothing was removed since it was last answered (it is copying the
//! log from the start, which holds no older record of any removed key); it then empties its
//! log and copies it again from the log start, which is also how a new replica gets the
//! table. The driver checks once more after reading, for a compaction that finished between
//! this check and the read.

use super::*;
use crate::types::{DivergingEpoch, FetchData, ReadRange};

impl Replica {
    pub(super) fn on_fetch(&mut self, id: RequestId, request: FetchRequest, out: &mut Vec<Action>) {
        if let Some(replica_id) = request.replica_id {
            self.answer_superseded(replica_id, out);
        }
        match self.accept_fetch(&request, out) {
            Err(e) => out.push(Action::RespondFetch { id, result: Err(e) }),
            Ok(Some(answer)) => out.push(Action::RespondFetch {
                id,
                result: Ok(answer),
            }),
            Ok(None) => self.parked.push(ParkedFetch {
                id,
                deadline_ms: self.now_ms.saturating_add(request.max_wait_ms),
                request,
            }),
        }
    }

    /// A follower has one fetch outstanding per partition, so a new fetch from it means any
    /// fetch of its still parked here was given up (its fetcher stopped waiting, or timed
    /// out): answer it now, so that at most one fetch per follower is ever parked and the
    /// driver releases what it holds for it. Its answer is checked like any other (the
    /// compaction horizon, the epoch) before anything is noted as answered.
    fn answer_superseded(&mut self, replica_id: NodeId, out: &mut Vec<Action>) {
        #[cfg(feature = "mutation-keep-superseded-fetches")]
        return;
        let (superseded, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| p.request.replica_id == Some(replica_id));
        self.parked = waiting;
        for parked in superseded {
            let result = self.recheck_fetch(&parked.request);
            out.push(Action::RespondFetch {
                id: parked.id,
                result,
            });
        }
    }

    /// Validates a fetch on arrival; a follower's fetch also reports its LEO (once, here).
    /// `Ok(None)` means park it.
    fn accept_fetch(
        &mut self,
        request: &FetchRequest,
        out: &mut Vec<Action>,
    ) -> Result<Option<FetchData<ReadRange>>, ReadError> {
        if let Some(diverging) = self.validate_fetch(request)? {
            return Ok(Some(self.fetch_answer(request, Some(diverging))));
        }
        if let Some(replica_id) = request.replica_id {
            self.record_follower_fetch(replica_id, request.fetch_offset, out);
        }
        if request.max_wait_ms <= 0 || self.fetch_has_news(request) {
            Ok(Some(self.fetch_answer(request, None)))
        } else {
            Ok(None)
        }
    }

    /// Answers a parked fetch now, checking it again: the epoch or role may have moved on.
    pub(super) fn recheck_fetch(
        &mut self,
        request: &FetchRequest,
    ) -> Result<FetchData<ReadRange>, ReadError> {
        let diverging = self.validate_fetch(request)?;
        Ok(self.fetch_answer(request, diverging))
    }

    /// The epoch fence, who may fetch, divergence (followers), then the offset range.
    fn validate_fetch(&self, request: &FetchRequest) -> Result<Option<DivergingEpoch>, ReadError> {
        let Some(replica_id) = request.replica_id else {
            self.check_fence(request.current_leader_epoch, false)?;
            self.check_fetch_range(request.fetch_offset)?;
            return Ok(None);
        };
        self.check_fence(request.current_leader_epoch, true)?;
        if !self.is_follower_of_mine(replica_id) {
            return Err(ReadError::NotFollower { replica_id });
        }
        if let Some(diverging) = self.divergence(request) {
            return Ok(Some(diverging));
        }
        self.check_fetch_range(request.fetch_offset)?;
        self.check_compaction_horizon(replica_id, request.fetch_offset)?;
        Ok(None)
    }

    /// A follower's fetch from inside the log and below the compaction horizon is refused
    /// (out of range, so that it copies the log from the start) unless the horizon has not
    /// moved since it was last answered. See the module header.
    fn check_compaction_horizon(&self, replica_id: NodeId, offset: i64) -> Result<(), ReadError> {
        let horizon = self.log.compaction_horizon();
        if offset <= self.log.log_start_offset || offset >= horizon {
            return Ok(());
        }
        #[cfg_attr(
            feature = "mutation-ignore-compaction-horizon",
            allow(unused_variables)
        )]
        let answered_at = match &self.role {
            Role::Leader(leader) => leader
                .followers
                .get(&replica_id)
                .and_then(|f| f.answered_at_horizon),
            _ => None,
        };
        // Mutation (tests/scenarios.rs): serve a follower behind the horizon from its offset.
        #[cfg(feature = "mutation-ignore-compaction-horizon")]
        let answered_at = Some((horizon, offset));
        // Going on with a copy: nothing removed since, and its log did not go back since (a
        // restart that lost a tail, a truncation; sim seed 899: a follower whose recovery cut
        // its log below the horizon was served from there and kept a key whose delete was
        // gone).
        if answered_at.is_some_and(|(h, from)| h >= horizon && offset >= from) {
            return Ok(());
        }
        Err(ReadError::OffsetOutOfRange {
            offset,
            log_start_offset: self.log.log_start_offset,
            log_end_offset: self.log.log_end_offset,
        })
    }

    fn check_fetch_range(&self, offset: i64) -> Result<(), ReadError> {
        if offset < self.log.log_start_offset || offset > self.log.log_end_offset {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log.log_start_offset,
                log_end_offset: self.log.log_end_offset,
            });
        }
        Ok(())
    }

    /// Rule 6 on the leader (KAFKA-10554): the follower's log diverges if the leader does not
    /// have its last fetched epoch, or that epoch ends here before the follower's fetch offset.
    /// The answer names the largest epoch ≤ the follower's that the leader has, and where it
    /// ends here; the follower truncates there and fetches again.
    fn divergence(&self, request: &FetchRequest) -> Option<DivergingEpoch> {
        let last_fetched_epoch = request.last_fetched_epoch?;
        let end = self.leader_end_offset_for(last_fetched_epoch)?;
        if end.epoch < last_fetched_epoch || end.start_offset < request.fetch_offset {
            Some(DivergingEpoch {
                epoch: end.epoch,
                end_offset: end.start_offset,
            })
        } else {
            None
        }
    }

    /// Whether a fetch has something to be told now (else it parks): new records for a
    /// follower, or a HW above the one it knows; newly committed records for a consumer.
    ///
    /// The follower's own word on its HW (`known_high_watermark`) decides, not what this
    /// leader last answered it: an answer can be lost after the core emitted it (the
    /// follower's fetcher gave up on a long poll because another partition answered first,
    /// a connection dropped), and a leader that counted it as told would park the next fetch
    /// until the HW moved again, leaving the follower's reads stale meanwhile.
    pub(super) fn fetch_has_news(&self, request: &FetchRequest) -> bool {
        let Some(replica_id) = request.replica_id else {
            return request.fetch_offset < self.high_watermark;
        };
        if request.fetch_offset < self.log.log_end_offset {
            return true;
        }
        // Mutation (tests.rs): trust what this leader last sent, as before the HW tag.
        #[cfg(feature = "mutation-trust-sent-high-watermark")]
        let known = self.last_sent_high_watermark(replica_id);
        #[cfg(not(feature = "mutation-trust-sent-high-watermark"))]
        let known = match request.known_high_watermark {
            Some(known) => Some(known),
            // A follower that does not say: the HW this leader last answered it with.
            None => self.last_sent_high_watermark(replica_id),
        };
        known.is_none_or(|known| known < self.high_watermark)
    }

    fn fetch_answer(
        &mut self,
        request: &FetchRequest,
        diverging_epoch: Option<DivergingEpoch>,
    ) -> FetchData<ReadRange> {
        // Followers replicate the whole log; consumers see committed records only.
        let end_offset = match (diverging_epoch, request.replica_id) {
            (Some(_), _) => request.fetch_offset,
            (None, Some(_)) => self.log.log_end_offset,
            (None, None) => self.high_watermark,
        };
        // A diverging answer's HW is not applied by the follower (KAFKA-14704): not "sent".
        let compaction_horizon = self.log.compaction_horizon();
        if let (Some(replica_id), None) = (request.replica_id, diverging_epoch) {
            self.note_high_watermark_sent(replica_id);
            if let Role::Leader(leader) = &mut self.role {
                if let Some(f) = leader.followers.get_mut(&replica_id) {
                    f.answered_at_horizon = Some((compaction_horizon, request.fetch_offset));
                }
            }
        }
        let checked_horizon = (request.replica_id.is_some()
            && diverging_epoch.is_none()
            && request.fetch_offset > self.log.log_start_offset)
            .then_some(self.log.compaction_horizon_target());
        FetchData {
            high_watermark: self.high_watermark,
            log_start_offset: self.log.log_start_offset,
            log_end_offset: self.log.log_end_offset,
            diverging_epoch,
            records: ReadRange {
                offset: request.fetch_offset,
                max_bytes: request.max_bytes,
                end_offset: end_offset.max(request.fetch_offset),
                compaction_horizon: checked_horizon,
            },
            flush_up_to: self.flush_up_to(),
            compaction_horizon,
        }
    }
}
