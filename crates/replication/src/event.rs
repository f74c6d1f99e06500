//! What goes into the core ([`Event`]) and what comes out ([`Action`]).
//!
//! # The driver's contract
//! - Feed events one at a time, each with the current time from a monotonic clock.
//! - Perform the actions of one step **in the order given**. The log actions (`Append`,
//!   `Truncate`, `TruncateFullyAndStartAt`, `Flush`) must reach the log in that
//!   order; an action that sends something must not leave before the log actions listed before
//!   it are done (a fetch's offset is the LEO after the truncation before it).
//! - Report every `Append` with [`Event::Appended`] (or [`Event::LogFailed`]) and every
//!   `Flush` with [`Event::Flushed`], in order. These may come later, in a later step: that is
//!   how the core keeps "issued" apart from "on the log" and "on disk" (STYLE.md point 3).
//! - Truncations are only issued with no append in flight and need no report.

use bytes::Bytes;

use crate::error::{IsrChangeError, ProduceError, ReadError};
use crate::types::{
    FetchData, FetchId, FetchRequest, IsrState, NodeId, PartitionState, ProduceOk, ProduceRequest,
    ReadRange, RequestId,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Time passed; timeouts, ISR shrinks and fetch retries are decided here.
    Tick,
    /// The controller committed a change to the partition: become leader or follower, or
    /// learn a new ISR. Stale changes (older epochs) are ignored.
    Metadata(PartitionState),
    Produce {
        id: RequestId,
        request: ProduceRequest,
    },
    /// A fetch from a follower or a consumer.
    Fetch {
        id: RequestId,
        request: FetchRequest,
    },
    /// The leader's answer to this follower's fetch.
    FetchResponse {
        fetch_id: FetchId,
        response: Result<FetchData<Bytes>, ReadError>,
    },
    /// The fetch got no answer (connection lost, timed out).
    FetchFailed { fetch_id: FetchId },
    /// A follower says how far its log is on disk (Tandem's own request).
    FlushReport {
        replica_id: NodeId,
        leader_epoch: i32,
        flushed_offset: i64,
    },
    /// The controller's answer to [`Action::ProposeIsr`].
    IsrChangeResult(Result<IsrState, IsrChangeError>),
    /// An `Append` is done: the log now ends at `log_end_offset` and is on disk below
    /// `flushed_offset` (a log that flushes on every append reports it here).
    Appended {
        log_end_offset: i64,
        flushed_offset: i64,
    },
    /// A log action failed (append, truncate or flush). The core stops serving (every request
    /// gets a storage error) until the driver rebuilds it from the log ([`crate::driver::recover`]):
    /// the log is the truth, and the model may now be ahead of it.
    LogFailed { reason: String },
    /// A `Flush` is done.
    Flushed { flushed_offset: i64 },
    /// The runtime compacted the log (`Log::compact`, in the background, below the HW); the
    /// log's compaction horizon is now `compaction_horizon`. Followers whose log ends between
    /// the log start and it must copy the log again from the start (see replica/serve.rs).
    Compacted { compaction_horizon: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Append these batches, offsets and epochs already stamped: `Log::append_replicated`,
    /// which refuses anything starting before the log end. Then report `Appended`.
    /// `compaction_horizon`: the batches are a copy of a leader's compacted log that may lack
    /// records below this offset (and may end before it): raise the log's horizon to it first
    /// (`Log::raise_compaction_horizon`), so no crash leaves them uncovered.
    Append {
        batches: Bytes,
        compaction_horizon: Option<i64>,
    },
    /// Cut the log to `offset` (`Log::truncate_to`).
    Truncate { offset: i64 },
    /// Empty the log and restart it at `offset` (`Log::truncate_fully_and_start_at`).
    TruncateFullyAndStartAt { offset: i64 },
    /// Make the log durable (`Log::flush`), then report `Flushed`.
    Flush,
    /// Send this follower's fetch to the leader; answer with `FetchResponse` or `FetchFailed`.
    SendFetch {
        to: NodeId,
        fetch_id: FetchId,
        request: FetchRequest,
    },
    /// Tell the leader how far this follower's log is on disk.
    SendFlushReport {
        to: NodeId,
        leader_epoch: i32,
        flushed_offset: i64,
    },
    /// Answer a fetch. The driver reads the range ([`crate::driver::read_range`]) and sends.
    RespondFetch {
        id: RequestId,
        result: Result<FetchData<ReadRange>, ReadError>,
    },
    /// Answer a produce. acks=0 produces get no `CompleteProduce` on success.
    CompleteProduce {
        id: RequestId,
        result: Result<ProduceOk, ProduceError>,
    },
    /// Ask the controller to commit this ISR; answer with `IsrChangeResult`.
    ProposeIsr {
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<NodeId>,
    },
    /// The HW moved up: offsets below it may be applied (KV tables) and served. The driver
    /// also checkpoints it (`Log::checkpoint_high_watermark`), as often as it likes.
    HighWatermarkAdvanced { high_watermark: i64 },
    /// The leader says this replica's metadata is stale: fetch it again.
    RefreshMetadata,
}
