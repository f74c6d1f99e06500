//! The replication core of one partition replica: leader and follower as a pure, synchronous
//! state machine (DESIGN.md rules 1–6 and 9). No sockets, no tokio, no clock reads, no
//! randomness, no file I/O: the server runtime and the simulator drive the same code.
//!
//! ```text
//!            Event (with now_ms)                          Action, in order
//!  driver ──────────────────────────> Replica::step ──────────────────────────> driver
//!   ^  Tick, Metadata, Produce,        │ LocalLog:  model of its log       Append, Truncate, Flush
//!   │  Fetch, FetchResponse,           │  (LEO, log start, flushed,        SendFetch, RespondFetch,
//!   │  FlushReport, IsrChangeResult,   │   epoch cache, producers)         CompleteProduce,
//!   │  Appended, Flushed, LogFailed    │ role: Leader | Follower           ProposeIsr, SendFlushReport,
//!   │                                  v                                   HighWatermarkAdvanced
//!   └──── Appended / Flushed <──── the driver performs log actions on its Log (driver::perform)
//! ```
//!
//! # Who touches the log
//! The core never reads or writes the log. It keeps a small model of it ([`LocalLog`]) and
//! emits log actions; the driver performs them in order and reports completions
//! ([`Event::Appended`], [`Event::Flushed`]). The model counts an append as "issued" at once
//! (so the next produce gets the next offset) but as part of the LEO only once confirmed, and
//! as durable only once flushed: nothing is acknowledged, counted toward the HW or reported
//! to a leader before it is on the log, or on disk where the durability level asks
//! (STYLE.md point 3). Fetch answers name a [`ReadRange`]; the driver reads the bytes
//! ([`driver::read_range`]). The leader stamps offsets and its epoch into a client's batch
//! in place (outside the CRC), so every append is `Log::append_replicated`, which refuses
//! anything not contiguous with the log end: model and log cannot silently drift.
//!
//! # What the server must carry beyond Kafka's Fetch
//! - [`FetchData::flush_up_to`]: the leader asks followers to flush that far (a
//!   `Durability::Flushed` produce is waiting), unless every replica flushes after each append
//!   ([`ReplicaConfig::flush_after_append`]).
//! - [`FetchRequest::known_high_watermark`]: the HW the follower knows; the leader answers
//!   at once while its HW is above it, so that a lost answer never leaves a follower's HW stale.
//! - [`Action::SendFlushReport`] / [`Event::FlushReport`]: a follower's flushed offset, sent
//!   once it is on disk; Tandem's own request (DESIGN.md, "flushed-offset reports").
//!
//! # Where each rule lives
//! - Rule 1, fencing: `Replica::check_fence` (replica/mod.rs); every request passes it.
//! - Rules 2–5 on the leader: replica/leader.rs (produce, acks, HW, ISR) and replica/serve.rs
//!   (fetch answers, long poll, diverging epoch).
//! - Rules 2, 3, 6 on the follower: replica/follower.rs (fetch loop, truncation by epoch).
//! - Rule 9: [`producer`].
//!
//! [`testkit`] wires leaders and followers together over the storage crate's `MemLog`, for
//! the scenario tests in tests/scenarios.rs and for the simulator.

pub mod driver;
pub mod error;
pub mod event;
pub mod local_log;
pub mod producer;
pub mod replica;
pub mod testkit;
pub mod types;

pub use error::{IsrChangeError, ProduceError, ReadError};
pub use event::{Action, Event};
pub use local_log::LocalLog;
pub use replica::{FollowerLag, Replica, RoleKind};
pub use types::{
    Acks, DivergingEpoch, Durability, FetchData, FetchId, FetchRequest, Isolation, IsrState,
    NodeId, PartitionState, ProduceOk, ProduceRequest, ReadRange, ReplicaConfig, RequestId,
};
