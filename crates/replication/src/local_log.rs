//! The core's model of its own log: the offsets, epoch cache and producer table the rules
//! need, kept in step with the real log by the actions the core emits.
//!
//! The core never calls the log. It updates this model when it *issues* a log action, and the
//! driver performs the actions in order, so the model runs ahead of the log by at most the
//! appends in flight: `pending_end_offset` counts them, `log_end_offset` counts only what the
//! driver confirmed ([`crate::Event::Appended`]). Nothing is counted toward the HW, acked,
//! or reported to a leader before it is confirmed (and flushed, where durability asks).
//!
//! Compaction changes none of this: it keeps offsets, the log end, epochs and each producer's
//! last batches (`CompactionConfig::producer_batches_retained`, 5 like the producer table
//! here), so the model needs no news of rewritten segments, only the new compaction horizon
//! ([`crate::Event::Compacted`]).
//!
//! The model mirrors the storage crate's rules exactly (the same [`EpochCache`] code, the same
//! truncation rules); the test kit checks after every step that model and
//! [`tandem_storage::Log`] agree.

use tandem_storage::{BatchHeader, EpochCache, LogOffsets};

use crate::producer::ProducerTable;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalLog {
    pub(crate) log_start_offset: i64,
    /// End of what the driver confirmed appended: the LEO every rule uses.
    pub(crate) log_end_offset: i64,
    /// End of what has been handed to the driver: where the next append goes.
    pub(crate) pending_end_offset: i64,
    /// Everything below is on disk.
    pub(crate) flushed_offset: i64,
    pub(crate) epochs: EpochCache,
    pub(crate) producers: ProducerTable,
    /// Below this offset records may be missing from the log (`Log::compaction_horizon`): a
    /// follower whose log ends in between must copy the log again from the start. May run
    /// past the LEO (a copy under way); to send followers to copy, `min(horizon, LEO)` counts.
    pub(crate) compaction_horizon: i64,
}

impl LocalLog {
    /// A brand-new, empty log.
    pub fn empty() -> LocalLog {
        LocalLog {
            log_start_offset: 0,
            log_end_offset: 0,
            pending_end_offset: 0,
            flushed_offset: 0,
            epochs: EpochCache::new(),
            producers: ProducerTable::new(),
            compaction_horizon: 0,
        }
    }

    /// The model of an existing log (see [`crate::driver::recover`]).
    pub fn new(offsets: LogOffsets, epochs: EpochCache, producers: ProducerTable) -> LocalLog {
        assert!(
            offsets.log_start_offset <= offsets.log_end_offset,
            "log start after LEO"
        );
        LocalLog {
            log_start_offset: offsets.log_start_offset,
            log_end_offset: offsets.log_end_offset,
            pending_end_offset: offsets.log_end_offset,
            flushed_offset: offsets.flushed_offset.min(offsets.log_end_offset),
            epochs,
            producers,
            compaction_horizon: 0,
        }
    }

    /// With the log's compaction horizon (`Log::compaction_horizon`).
    pub fn with_compaction_horizon(mut self, compaction_horizon: i64) -> LocalLog {
        self.compaction_horizon = compaction_horizon.max(0);
        self
    }

    /// Below this offset the log may lack records; at most the LEO (what fetches are checked
    /// against: a fetch from the LEO asks for nothing compaction touched).
    pub fn compaction_horizon(&self) -> i64 {
        self.compaction_horizon.min(self.log_end_offset)
    }

    /// The durable horizon as `Log::compaction_horizon` has it, possibly past the LEO.
    pub fn compaction_horizon_target(&self) -> i64 {
        self.compaction_horizon
    }

    /// Mirrors `Log::raise_compaction_horizon` and a compaction's new horizon.
    pub(crate) fn raise_compaction_horizon(&mut self, offset: i64) {
        self.compaction_horizon = self.compaction_horizon.max(offset);
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }
    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset
    }
    pub fn pending_end_offset(&self) -> i64 {
        self.pending_end_offset
    }
    pub fn flushed_offset(&self) -> i64 {
        self.flushed_offset
    }
    pub fn epochs(&self) -> &EpochCache {
        &self.epochs
    }
    pub fn producers(&self) -> &ProducerTable {
        &self.producers
    }

    /// No append is in flight: the model's LEO is the log's.
    pub(crate) fn is_settled(&self) -> bool {
        self.pending_end_offset == self.log_end_offset
    }

    /// The epoch of the last batch in the log: what a follower sends as its last fetched
    /// epoch. Not the cache's latest entry, which may be an epoch this replica assigned as
    /// leader and never wrote in (Kafka keeps such an entry only until it truncates).
    pub(crate) fn last_batch_epoch(&self) -> Option<i32> {
        if self.log_end_offset <= self.log_start_offset {
            return None;
        }
        self.epochs.epoch_for_offset(self.log_end_offset - 1)
    }

    /// Records batches handed to the driver for appending, in log order, offsets assigned.
    /// The caller has checked that they are contiguous from `pending_end_offset` and that their
    /// epochs do not go backwards, as the log will.
    pub(crate) fn issue_append(&mut self, headers: &[BatchHeader]) {
        for header in headers {
            // Offsets may jump over a gap a leader's compaction left, never go back.
            assert!(
                header.base_offset >= self.pending_end_offset,
                "appends never go back: batch at {} below {}",
                header.base_offset,
                self.pending_end_offset
            );
            if header.leader_epoch >= 0 {
                // Same rule as the log's: the first batch of a newer epoch starts it.
                let newer = self
                    .epochs
                    .latest_epoch()
                    .is_none_or(|e| header.leader_epoch > e);
                if newer {
                    let assigned = self.epochs.assign(header.leader_epoch, header.base_offset);
                    assert!(
                        assigned.is_ok(),
                        "epochs checked before issuing: {assigned:?}"
                    );
                }
            }
            self.producers.record(header);
            self.pending_end_offset = header.next_offset();
        }
    }

    pub(crate) fn confirm_append(&mut self, log_end_offset: i64) {
        // A confirmation never runs past what was issued, nor backwards.
        self.log_end_offset = log_end_offset
            .min(self.pending_end_offset)
            .max(self.log_end_offset);
    }

    pub(crate) fn confirm_flush(&mut self, flushed_offset: i64) {
        self.flushed_offset = self
            .flushed_offset
            .max(flushed_offset.min(self.log_end_offset));
    }

    /// Mirrors `Log::truncate_to`. Only called with no append in flight.
    pub(crate) fn truncate_to(&mut self, offset: i64) {
        assert!(self.is_settled(), "truncation with appends in flight");
        if offset >= self.log_end_offset {
            // Nothing to cut; an epoch entry starting at the end owns no offsets and goes.
            self.epochs.truncate_from_end(self.log_end_offset);
            return;
        }
        if offset < self.log_start_offset {
            self.truncate_fully_and_start_at(offset.max(0));
            return;
        }
        self.log_end_offset = offset;
        self.pending_end_offset = offset;
        self.flushed_offset = self.flushed_offset.min(offset);
        self.epochs.truncate_from_end(offset);
        self.producers.truncate_from(offset);
        // The horizon stays: the prefix left is no more whole than before (Log::truncate_to).
    }

    /// Mirrors `Log::truncate_fully_and_start_at`.
    pub(crate) fn truncate_fully_and_start_at(&mut self, offset: i64) {
        assert!(self.is_settled(), "truncation with appends in flight");
        self.log_start_offset = offset;
        self.log_end_offset = offset;
        self.pending_end_offset = offset;
        self.flushed_offset = offset;
        self.epochs = EpochCache::new();
        self.producers = ProducerTable::new();
    }
}
