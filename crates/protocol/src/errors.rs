//! The Kafka error codes Tandem uses, and the mapping from the replication core's errors.
//!
//! Codes are Kafka's numbers (checked against kafka-protocol's `ResponseError` in the tests),
//! so Kafka clients react to them as they would to a Kafka broker.

use tandem_replication::{ProduceError, ReadError};
use tandem_storage::BatchError;

pub const UNKNOWN_SERVER_ERROR: i16 = -1;
pub const NONE: i16 = 0;
pub const OFFSET_OUT_OF_RANGE: i16 = 1;
pub const CORRUPT_MESSAGE: i16 = 2;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const LEADER_NOT_AVAILABLE: i16 = 5;
pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
pub const REQUEST_TIMED_OUT: i16 = 7;
pub const BROKER_NOT_AVAILABLE: i16 = 8;
pub const REPLICA_NOT_AVAILABLE: i16 = 9;
pub const MESSAGE_TOO_LARGE: i16 = 10;
pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
pub const RECORD_LIST_TOO_LARGE: i16 = 18;
pub const NOT_ENOUGH_REPLICAS: i16 = 19;
pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
pub const INVALID_REQUIRED_ACKS: i16 = 21;
pub const INVALID_TIMESTAMP: i16 = 32;
pub const UNSUPPORTED_VERSION: i16 = 35;
pub const TOPIC_ALREADY_EXISTS: i16 = 36;
pub const INVALID_PARTITIONS: i16 = 37;
pub const INVALID_REPLICATION_FACTOR: i16 = 38;
pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
pub const INVALID_CONFIG: i16 = 40;
pub const NOT_CONTROLLER: i16 = 41;
pub const INVALID_REQUEST: i16 = 42;
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
pub const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
pub const INVALID_PRODUCER_EPOCH: i16 = 47;
pub const KAFKA_STORAGE_ERROR: i16 = 56;
pub const UNKNOWN_PRODUCER_ID: i16 = 59;
pub const FENCED_LEADER_EPOCH: i16 = 74;
pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
pub const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
pub const STALE_BROKER_EPOCH: i16 = 77;
pub const OFFSET_NOT_AVAILABLE: i16 = 78;
pub const ELIGIBLE_LEADERS_NOT_AVAILABLE: i16 = 83;
pub const INVALID_RECORD: i16 = 87;
pub const PRODUCER_FENCED: i16 = 90;
pub const INVALID_UPDATE_VERSION: i16 = 95;
pub const UNKNOWN_TOPIC_ID: i16 = 100;
pub const INELIGIBLE_REPLICA: i16 = 107;

/// Tandem's own codes, beyond Kafka's, used only in answers under Tandem's API key.
pub const CAS_MISMATCH: i16 = 1001;
/// A read-your-writes token names a write that was truncated (an acks=1 write lost in a
/// failover): the client must not be served a state without it.
pub const TOKEN_TRUNCATED: i16 = 1002;
/// A follower read's lag bound is not met here: ask another replica or the leader.
pub const REPLICA_TOO_STALE: i16 = 1003;
/// This replica has not applied the token's offset within the wait: ask the leader.
pub const REPLICA_BEHIND: i16 = 1004;
/// A key-value request for a topic that is not a table.
pub const NOT_A_TABLE: i16 = 1005;
/// A key-value write reached the log but its outcome is unknown (it may still commit):
/// the leader moved, the ISR shrank below min.insync, or the timeout passed after the append.
pub const INDETERMINATE: i16 = 1006;

/// Tandem's own codes, for documentation.
pub const TANDEM_CODES: &[(&str, i16)] = &[
    ("CAS_MISMATCH", CAS_MISMATCH),
    ("TOKEN_TRUNCATED", TOKEN_TRUNCATED),
    ("REPLICA_TOO_STALE", REPLICA_TOO_STALE),
    ("REPLICA_BEHIND", REPLICA_BEHIND),
    ("NOT_A_TABLE", NOT_A_TABLE),
    ("INDETERMINATE", INDETERMINATE),
];

/// Every named code, for documentation and the consistency test.
pub const ALL: &[(&str, i16)] = &[
    ("UNKNOWN_SERVER_ERROR", UNKNOWN_SERVER_ERROR),
    ("NONE", NONE),
    ("OFFSET_OUT_OF_RANGE", OFFSET_OUT_OF_RANGE),
    ("CORRUPT_MESSAGE", CORRUPT_MESSAGE),
    ("UNKNOWN_TOPIC_OR_PARTITION", UNKNOWN_TOPIC_OR_PARTITION),
    ("LEADER_NOT_AVAILABLE", LEADER_NOT_AVAILABLE),
    ("NOT_LEADER_OR_FOLLOWER", NOT_LEADER_OR_FOLLOWER),
    ("REQUEST_TIMED_OUT", REQUEST_TIMED_OUT),
    ("BROKER_NOT_AVAILABLE", BROKER_NOT_AVAILABLE),
    ("REPLICA_NOT_AVAILABLE", REPLICA_NOT_AVAILABLE),
    ("MESSAGE_TOO_LARGE", MESSAGE_TOO_LARGE),
    ("INVALID_TOPIC_EXCEPTION", INVALID_TOPIC_EXCEPTION),
    ("RECORD_LIST_TOO_LARGE", RECORD_LIST_TOO_LARGE),
    ("NOT_ENOUGH_REPLICAS", NOT_ENOUGH_REPLICAS),
    (
        "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
        NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    ),
    ("INVALID_REQUIRED_ACKS", INVALID_REQUIRED_ACKS),
    ("INVALID_TIMESTAMP", INVALID_TIMESTAMP),
    ("UNSUPPORTED_VERSION", UNSUPPORTED_VERSION),
    ("TOPIC_ALREADY_EXISTS", TOPIC_ALREADY_EXISTS),
    ("INVALID_PARTITIONS", INVALID_PARTITIONS),
    ("INVALID_REPLICATION_FACTOR", INVALID_REPLICATION_FACTOR),
    ("INVALID_REPLICA_ASSIGNMENT", INVALID_REPLICA_ASSIGNMENT),
    ("INVALID_CONFIG", INVALID_CONFIG),
    ("NOT_CONTROLLER", NOT_CONTROLLER),
    ("INVALID_REQUEST", INVALID_REQUEST),
    ("OUT_OF_ORDER_SEQUENCE_NUMBER", OUT_OF_ORDER_SEQUENCE_NUMBER),
    ("DUPLICATE_SEQUENCE_NUMBER", DUPLICATE_SEQUENCE_NUMBER),
    ("INVALID_PRODUCER_EPOCH", INVALID_PRODUCER_EPOCH),
    ("KAFKA_STORAGE_ERROR", KAFKA_STORAGE_ERROR),
    ("UNKNOWN_PRODUCER_ID", UNKNOWN_PRODUCER_ID),
    ("FENCED_LEADER_EPOCH", FENCED_LEADER_EPOCH),
    ("UNKNOWN_LEADER_EPOCH", UNKNOWN_LEADER_EPOCH),
    ("UNSUPPORTED_COMPRESSION_TYPE", UNSUPPORTED_COMPRESSION_TYPE),
    ("STALE_BROKER_EPOCH", STALE_BROKER_EPOCH),
    ("OFFSET_NOT_AVAILABLE", OFFSET_NOT_AVAILABLE),
    (
        "ELIGIBLE_LEADERS_NOT_AVAILABLE",
        ELIGIBLE_LEADERS_NOT_AVAILABLE,
    ),
    ("INVALID_RECORD", INVALID_RECORD),
    ("PRODUCER_FENCED", PRODUCER_FENCED),
    ("INVALID_UPDATE_VERSION", INVALID_UPDATE_VERSION),
    ("UNKNOWN_TOPIC_ID", UNKNOWN_TOPIC_ID),
    ("INELIGIBLE_REPLICA", INELIGIBLE_REPLICA),
];

/// The Kafka code for a failed produce. The three indeterminate outcomes keep Kafka's codes
/// (a Kafka client retries them; an idempotent producer's retry cannot duplicate).
pub fn produce_error_code(e: &ProduceError) -> i16 {
    match e {
        ProduceError::NotLeader { .. } => NOT_LEADER_OR_FOLLOWER,
        ProduceError::FencedLeaderEpoch { .. } => FENCED_LEADER_EPOCH,
        ProduceError::UnknownLeaderEpoch { .. } => UNKNOWN_LEADER_EPOCH,
        ProduceError::NotEnoughReplicas { .. } => NOT_ENOUGH_REPLICAS,
        ProduceError::NotEnoughReplicasAfterAppend { .. } => NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        ProduceError::TimedOutAfterAppend { .. } => REQUEST_TIMED_OUT,
        // Kafka answers a produce whose leader moved while it waited with this code too.
        ProduceError::NotLeaderAfterAppend { .. } => NOT_LEADER_OR_FOLLOWER,
        ProduceError::InvalidRecord(b) => batch_error_code(b),
        ProduceError::RecordTooLarge { .. } => MESSAGE_TOO_LARGE,
        ProduceError::InvalidRequest(_) => INVALID_REQUEST,
        ProduceError::OutOfOrderSequence { .. } => OUT_OF_ORDER_SEQUENCE_NUMBER,
        ProduceError::InvalidProducerEpoch { .. } => INVALID_PRODUCER_EPOCH,
        ProduceError::Storage(_) => KAFKA_STORAGE_ERROR,
    }
}

/// A batch that fails its checksum or framing is CORRUPT_MESSAGE (as in Kafka); one that is
/// well framed but breaks a record rule is INVALID_RECORD.
fn batch_error_code(e: &BatchError) -> i16 {
    match e {
        BatchError::BadRecordCount { .. } | BatchError::MalformedRecord(_) => INVALID_RECORD,
        _ => CORRUPT_MESSAGE,
    }
}

/// The Kafka code for a failed fetch or offset lookup.
pub fn read_error_code(e: &ReadError) -> i16 {
    match e {
        ReadError::NotLeader { .. } => NOT_LEADER_OR_FOLLOWER,
        ReadError::FencedLeaderEpoch { .. } => FENCED_LEADER_EPOCH,
        ReadError::UnknownLeaderEpoch { .. } => UNKNOWN_LEADER_EPOCH,
        ReadError::OffsetOutOfRange { .. } => OFFSET_OUT_OF_RANGE,
        ReadError::OffsetNotAvailable { .. } => OFFSET_NOT_AVAILABLE,
        // Kafka: "this broker is not a replica of the partition" is NOT_LEADER_OR_FOLLOWER.
        ReadError::NotFollower { .. } => NOT_LEADER_OR_FOLLOWER,
        ReadError::Storage(_) => KAFKA_STORAGE_ERROR,
    }
}
