//! Errors a client or a follower can act on, one narrow enum per API. Each maps to a Kafka
//! error code of the same name where Kafka has one.

use tandem_storage::BatchError;

use crate::types::NodeId;

/// Why a produce failed. Variants ending in `AfterAppend` are indeterminate: the batch is in
/// the leader's log and may still commit, so a client must not assume it was lost (an
/// idempotent producer retries it safely).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProduceError {
    #[error("this replica is not the leader; the leader of epoch {leader_epoch} is {leader:?}")]
    NotLeader {
        leader: Option<NodeId>,
        leader_epoch: i32,
    },
    #[error("request names leader epoch {request_epoch}, older than the current {current_epoch}")]
    FencedLeaderEpoch {
        request_epoch: i32,
        current_epoch: i32,
    },
    #[error("request names leader epoch {request_epoch}, newer than the known {current_epoch}: refresh metadata")]
    UnknownLeaderEpoch {
        request_epoch: i32,
        current_epoch: i32,
    },
    #[error("acks=all refused: the ISR has {isr_size} members, min.insync.replicas is {min_insync_replicas}")]
    NotEnoughReplicas {
        isr_size: usize,
        min_insync_replicas: usize,
    },
    #[error("indeterminate: the batch at offset {base_offset} is in the log, but the ISR shrank to {isr_size} (< {min_insync_replicas}) before it committed")]
    NotEnoughReplicasAfterAppend {
        base_offset: i64,
        isr_size: usize,
        min_insync_replicas: usize,
    },
    #[error("indeterminate: the batch at offset {base_offset} did not commit within the timeout")]
    TimedOutAfterAppend { base_offset: i64 },
    #[error("indeterminate: leadership moved (leader {leader:?}, epoch {leader_epoch}) before the batch at offset {base_offset} committed")]
    NotLeaderAfterAppend {
        base_offset: i64,
        leader: Option<NodeId>,
        leader_epoch: i32,
    },
    #[error("invalid record batch: {0}")]
    InvalidRecord(#[from] BatchError),
    #[error("batch of {size} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge { size: usize, max: usize },
    #[error("invalid produce: {0}")]
    InvalidRequest(&'static str),
    #[error("producer {producer_id}: expected sequence {expected_sequence}, got {sequence}")]
    OutOfOrderSequence {
        producer_id: i64,
        expected_sequence: i32,
        sequence: i32,
    },
    #[error("producer {producer_id}: epoch {producer_epoch} is older than the current {current_producer_epoch}")]
    InvalidProducerEpoch {
        producer_id: i64,
        producer_epoch: i16,
        current_producer_epoch: i16,
    },
    #[error("the replica's log failed: {0}")]
    Storage(String),
}

impl ProduceError {
    /// The batch may or may not end up committed.
    pub fn is_indeterminate(&self) -> bool {
        matches!(
            self,
            ProduceError::NotEnoughReplicasAfterAppend { .. }
                | ProduceError::TimedOutAfterAppend { .. }
                | ProduceError::NotLeaderAfterAppend { .. }
        )
    }

    /// Who leads now and in which epoch, when the error names them (for the client's retry).
    pub fn leader_hint(&self) -> (Option<NodeId>, Option<i32>) {
        match self {
            ProduceError::NotLeader {
                leader,
                leader_epoch,
            }
            | ProduceError::NotLeaderAfterAppend {
                leader,
                leader_epoch,
                ..
            } => (*leader, Some(*leader_epoch)),
            _ => (None, None),
        }
    }
}

/// Why a fetch or an offset lookup failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("this replica is not the leader; the leader of epoch {leader_epoch} is {leader:?}")]
    NotLeader {
        leader: Option<NodeId>,
        leader_epoch: i32,
    },
    #[error("request names leader epoch {request_epoch}, older than the current {current_epoch}")]
    FencedLeaderEpoch {
        request_epoch: i32,
        current_epoch: i32,
    },
    #[error("request names leader epoch {request_epoch}, newer than the known {current_epoch}: refresh metadata")]
    UnknownLeaderEpoch {
        request_epoch: i32,
        current_epoch: i32,
    },
    #[error(
        "offset {offset} is out of range: the log holds [{log_start_offset}, {log_end_offset})"
    )]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    #[error("a new leader's HW {high_watermark} has not reached its epoch start {epoch_start_offset} yet")]
    OffsetNotAvailable {
        high_watermark: i64,
        epoch_start_offset: i64,
    },
    #[error("node {replica_id} is not a follower of this partition")]
    NotFollower { replica_id: NodeId },
    #[error("the replica's log failed: {0}")]
    Storage(String),
}

/// Why the controller did not commit an ISR proposal (Kafka's AlterPartition errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsrChangeError {
    #[error("the proposal's leader epoch is stale")]
    FencedLeaderEpoch,
    #[error("the proposal's partition epoch is stale")]
    InvalidUpdateVersion,
    #[error("a proposed member is fenced, shutting down, or of an old incarnation")]
    IneligibleReplica,
    #[error("the controller refused the proposal as invalid")]
    InvalidRequest,
    #[error("no answer from the controller")]
    Unavailable,
}

/// The epoch and leadership check every request passes first (DESIGN.md rule 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fence {
    NotLeader {
        leader: Option<NodeId>,
        leader_epoch: i32,
    },
    Fenced {
        request_epoch: i32,
        current_epoch: i32,
    },
    Unknown {
        request_epoch: i32,
        current_epoch: i32,
    },
}

impl From<Fence> for ProduceError {
    fn from(f: Fence) -> ProduceError {
        match f {
            Fence::NotLeader {
                leader,
                leader_epoch,
            } => ProduceError::NotLeader {
                leader,
                leader_epoch,
            },
            Fence::Fenced {
                request_epoch,
                current_epoch,
            } => ProduceError::FencedLeaderEpoch {
                request_epoch,
                current_epoch,
            },
            Fence::Unknown {
                request_epoch,
                current_epoch,
            } => ProduceError::UnknownLeaderEpoch {
                request_epoch,
                current_epoch,
            },
        }
    }
}

impl From<Fence> for ReadError {
    fn from(f: Fence) -> ReadError {
        match f {
            Fence::NotLeader {
                leader,
                leader_epoch,
            } => ReadError::NotLeader {
                leader,
                leader_epoch,
            },
            Fence::Fenced {
                request_epoch,
                current_epoch,
            } => ReadError::FencedLeaderEpoch {
                request_epoch,
                current_epoch,
            },
            Fence::Unknown {
                request_epoch,
                current_epoch,
            } => ReadError::UnknownLeaderEpoch {
                request_epoch,
                current_epoch,
            },
        }
    }
}
