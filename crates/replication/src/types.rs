//! The vocabulary of the core: identities, settings, partition metadata, and the request and
//! response bodies that events and actions carry.

use bytes::{Bytes, BytesMut};

/// A node (broker) id, as in Kafka's protocol.
pub type NodeId = i32;

/// The driver's handle for a request it handed to the core; the core echoes it in the action
/// that answers the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// The core's handle for a fetch it asked the driver to send; the response must carry it back,
/// so that the answer to a fetch from an older epoch or a timed-out fetch is recognised and
/// dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FetchId(pub u64);

/// How many replicas must have a batch before the producer hears back (DESIGN.md rule 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// No reply on success.
    None,
    /// Reply once the leader's own log has the batch.
    Leader,
    /// Reply once the high watermark passes the batch.
    All,
}

/// What "has the batch" means for a replica: appended, or appended and flushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Replicated,
    /// Counts only offsets each replica has fsynced: acks=all then survives every replica
    /// losing its page cache at once.
    Flushed,
}

/// The partition as the controller last committed it: what a metadata change delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// The leader of `leader_epoch`, or none while the partition is offline.
    pub leader: Option<NodeId>,
    pub leader_epoch: i32,
    /// Bumped by every committed change (leader or ISR); an ISR proposal must name it.
    pub partition_epoch: i32,
    /// In-sync replicas, leader included.
    pub isr: Vec<NodeId>,
    /// Every assigned replica.
    pub replicas: Vec<NodeId>,
    pub min_insync_replicas: usize,
}

/// The ISR part of a committed change, as the controller answers an ISR proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrState {
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<NodeId>,
}

/// Per-replica settings; the names and defaults are Kafka's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// A follower that has not caught up to the leader's LEO for this long leaves the ISR.
    pub replica_lag_time_max_ms: i64,
    /// How long a follower's fetch may wait at the leader for data (long poll).
    pub replica_fetch_wait_max_ms: i64,
    pub replica_fetch_max_bytes: usize,
    /// Pause before a follower fetches again after an error.
    pub replica_fetch_backoff_ms: i64,
    /// A fetch with no answer for this long is given up and sent again.
    pub replica_fetch_timeout_ms: i64,
    /// Pause before a refused or lost ISR proposal is retried.
    pub isr_change_backoff_ms: i64,
    /// The largest batch accepted; must equal the log's `max_batch_bytes`, so that no batch
    /// the core accepts is refused by the log.
    pub max_batch_bytes: usize,
    /// Flush after every append (group commit: one flush in flight, the next covers all that
    /// arrived meanwhile). Without it, the leader flushes only for `Durability::Flushed`
    /// produces and asks its followers to, through `FetchData::flush_up_to`.
    pub flush_after_append: bool,
}

impl Default for ReplicaConfig {
    fn default() -> ReplicaConfig {
        ReplicaConfig {
            replica_lag_time_max_ms: 30_000,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_max_bytes: 1 << 20,
            replica_fetch_backoff_ms: 1_000,
            replica_fetch_timeout_ms: 30_000,
            isr_change_backoff_ms: 1_000,
            max_batch_bytes: tandem_storage::config::DEFAULT_MAX_BATCH_BYTES,
            flush_after_append: false,
        }
    }
}

/// A produce to this partition: exactly one record batch, as Kafka's Produce v3+ requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequest {
    pub acks: Acks,
    pub durability: Durability,
    pub timeout_ms: i64,
    /// The leader epoch the client believes in, if it sent one.
    pub current_leader_epoch: Option<i32>,
    /// The batch as the client sent it; the leader stamps offset and epoch in place.
    pub records: BytesMut,
}

/// What a successful produce returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceOk {
    pub base_offset: i64,
    pub log_start_offset: i64,
}

/// A fetch, from a follower (`replica_id` set) or a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    pub replica_id: Option<NodeId>,
    /// For a follower, its LEO.
    pub fetch_offset: i64,
    /// Epoch of the last batch in the follower's log: lets the leader detect divergence.
    pub last_fetched_epoch: Option<i32>,
    pub current_leader_epoch: Option<i32>,
    pub max_bytes: usize,
    pub max_wait_ms: i64,
    /// For a follower, the HW it knows (Tandem's extension of Kafka's Fetch). The leader
    /// answers at once, without parking, while its own HW is above it: whether the follower
    /// learns a new HW then never depends on which earlier answer reached it (an answer to
    /// a long poll its fetcher abandoned is lost). `None` from a follower that does not send
    /// it: the leader then goes by the HW it last answered that follower with.
    pub known_high_watermark: Option<i64>,
}

/// Where a follower's log stops agreeing with the leader's: the largest epoch ≤ the
/// follower's last fetched epoch that the leader knows, and where it ends on the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DivergingEpoch {
    pub epoch: i32,
    pub end_offset: i64,
}

/// What to read for a fetch answer: the batches from `offset`, at most `max_bytes` (the first
/// batch always), none holding an offset at or past `end_offset`. The core names the range;
/// the driver reads it ([`crate::driver::read_range`]), so the core never touches the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRange {
    pub offset: i64,
    pub max_bytes: usize,
    pub end_offset: i64,
    /// For a follower's fetch from inside the log: the durable compaction horizon when the
    /// core checked the offset. A compaction that finished since may have removed records at
    /// or after `offset`; the driver then refuses the read ([`crate::driver::read_range`]).
    pub compaction_horizon: Option<i64>,
}

/// A fetch answer. `R` is a [`ReadRange`] where the core emits it and the read bytes where a
/// follower receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchData<R> {
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    /// Set when the follower's log diverges; `records` is then empty.
    pub diverging_epoch: Option<DivergingEpoch>,
    pub records: R,
    /// The leader waits for flushed offsets up to here (a `Durability::Flushed` produce):
    /// a follower flushes at least this far. Tandem's extension of Kafka's Fetch.
    pub flush_up_to: Option<i64>,
    /// The leader's compaction horizon: batches below it may lack records its compaction
    /// removed, and the log is whole only up to it, so a follower appending them raises its
    /// own horizon to it, however far the copy has got (never further: a replica that never
    /// saw a compacted log keeps horizon 0 and sends nobody to copy).
    pub compaction_horizon: i64,
}

impl FetchData<ReadRange> {
    /// The answer with the records replaced by what the driver read.
    pub fn with_records(self, records: Bytes) -> FetchData<Bytes> {
        FetchData {
            high_watermark: self.high_watermark,
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset,
            diverging_epoch: self.diverging_epoch,
            records,
            flush_up_to: self.flush_up_to,
            compaction_horizon: self.compaction_horizon,
        }
    }
}

/// Which offsets a consumer may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Below the high watermark: the default, and all a consumer ever sees in Kafka.
    Committed,
    /// Up to the LEO, for a request that explicitly asks for uncommitted data.
    Uncommitted,
}
