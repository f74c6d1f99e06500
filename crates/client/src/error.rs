//! The client's errors, and which server error codes are worth a retry.

use tandem_protocol::errors;

/// Everything the client can fail with. Server answers keep Kafka's error code
/// ([`Error::code`]), so callers can act on them the way a Kafka client would.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("no bootstrap address given")]
    NoBootstrap,
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("cannot reach {address}: {reason}")]
    Unreachable { address: String, reason: String },
    #[error("connection to {address} closed before the answer came")]
    ConnectionClosed { address: String },
    #[error("no answer from {address} within {after_ms} ms")]
    Timeout { address: String, after_ms: u64 },
    #[error("bad answer from {address}: {reason}")]
    Protocol { address: String, reason: String },
    #[error("{address} serves {api} versions {server_min}..={server_max}; this client needs {min}..={max}")]
    UnsupportedVersion {
        address: String,
        api: String,
        min: i16,
        max: i16,
        server_min: i16,
        server_max: i16,
    },
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition { topic: String, partition: u32 },
    #[error("topic {0:?} already exists")]
    TopicAlreadyExists(String),
    /// The server answered with a Kafka error code.
    #[error("{context}: {} ({code}){}", code_name(*.code), message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Server {
        context: String,
        code: i16,
        message: Option<String>,
    },
    #[error("offset {offset} is out of range for {topic}-{partition}")]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        offset: i64,
    },
    #[error("record of about {size} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge { size: usize, max: usize },
    /// A record could not be delivered within the delivery timeout. If `indeterminate`, an
    /// attempt may have been written (it then appears exactly once: the idempotent producer's
    /// retries cannot duplicate it); otherwise it was not written.
    #[error("delivery failed after {attempts} attempts in {elapsed_ms} ms ({}): {last_error}", if *.indeterminate { "outcome indeterminate" } else { "not written" })]
    DeliveryFailed {
        attempts: u32,
        elapsed_ms: u64,
        indeterminate: bool,
        last_error: Box<Error>,
    },
    #[error("the producer is closed")]
    ProducerClosed,
    #[error("corrupt or unreadable records from {topic}-{partition}: {reason}")]
    CorruptRecords {
        topic: String,
        partition: u32,
        reason: String,
    },
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The name of a Kafka error code, for messages.
pub fn code_name(code: i16) -> &'static str {
    errors::ALL
        .iter()
        .chain(errors::TANDEM_CODES)
        .find(|(_, c)| *c == code)
        .map_or("UNKNOWN_ERROR_CODE", |(n, _)| n)
}

/// How to react to a server error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    Success,
    /// Transient: refresh metadata (the leader may have moved), back off, send again.
    Retry,
    /// Retrying cannot help.
    Fatal,
}

/// What a produce, fetch or offset lookup answered with `code` calls for.
pub fn reaction(code: i16) -> Reaction {
    match code {
        errors::NONE => Reaction::Success,
        errors::NOT_LEADER_OR_FOLLOWER
        | errors::LEADER_NOT_AVAILABLE
        | errors::FENCED_LEADER_EPOCH
        | errors::UNKNOWN_LEADER_EPOCH
        | errors::UNKNOWN_TOPIC_OR_PARTITION
        | errors::REQUEST_TIMED_OUT
        | errors::NOT_ENOUGH_REPLICAS
        | errors::NOT_ENOUGH_REPLICAS_AFTER_APPEND
        | errors::BROKER_NOT_AVAILABLE
        | errors::REPLICA_NOT_AVAILABLE
        | errors::KAFKA_STORAGE_ERROR
        | errors::OFFSET_NOT_AVAILABLE
        | errors::NOT_CONTROLLER => Reaction::Retry,
        _ => Reaction::Fatal,
    }
}

/// Whether a produce that failed with `code` may nevertheless have been appended (and may
/// still commit): the request reached a leader that appended it before the answer went wrong.
pub fn produce_outcome_indeterminate(code: i16) -> bool {
    matches!(
        code,
        errors::REQUEST_TIMED_OUT
            | errors::NOT_ENOUGH_REPLICAS_AFTER_APPEND
            | errors::NOT_LEADER_OR_FOLLOWER
            | errors::UNKNOWN_SERVER_ERROR
    )
}

impl Error {
    /// The Kafka error code, when the server answered with one.
    pub fn code(&self) -> Option<i16> {
        match self {
            Error::Server { code, .. } => Some(*code),
            Error::DeliveryFailed { last_error, .. } => last_error.code(),
            Error::OffsetOutOfRange { .. } => Some(errors::OFFSET_OUT_OF_RANGE),
            Error::UnknownTopic(_) | Error::UnknownPartition { .. } => {
                Some(errors::UNKNOWN_TOPIC_OR_PARTITION)
            }
            Error::TopicAlreadyExists(_) => Some(errors::TOPIC_ALREADY_EXISTS),
            _ => None,
        }
    }

    /// Transient: the network, a moved leader, a busy or recovering cluster.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::ConnectionClosed { .. } | Error::Timeout { .. } => {
                true
            }
            Error::Server { code, .. } => reaction(*code) == Reaction::Retry,
            _ => false,
        }
    }

    /// For a network failure after the request was sent: it may have been acted on.
    pub(crate) fn is_network(&self) -> bool {
        matches!(
            self,
            Error::Unreachable { .. } | Error::ConnectionClosed { .. } | Error::Timeout { .. }
        )
    }

    pub(crate) fn server(context: impl Into<String>, code: i16, message: Option<String>) -> Error {
        Error::Server {
            context: context.into(),
            code,
            message,
        }
    }
}

/// Exponential backoff with a cap: `base * 2^(attempt-1)`, at most `max`, plus up to 25 %
/// jitter from `jitter_seed` so that many clients do not retry in lockstep.
pub fn backoff(
    attempt: u32,
    base: std::time::Duration,
    max: std::time::Duration,
    jitter_seed: u64,
) -> std::time::Duration {
    let exp = attempt.saturating_sub(1).min(16);
    let plain = base.saturating_mul(1u32 << exp).min(max);
    let quarter = plain.as_micros() as u64 / 4;
    let jitter = if quarter == 0 {
        0
    } else {
        // splitmix64 of the seed: cheap, deterministic per seed.
        let mut z = jitter_seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % quarter
    };
    plain + std::time::Duration::from_micros(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn leader_moves_and_timeouts_are_retried_bad_records_are_not() {
        for code in [6, 5, 74, 75, 7, 19, 20, 3] {
            assert_eq!(reaction(code), Reaction::Retry, "{}", code_name(code));
        }
        for code in [10, 2, 87, 42, 45, 47, 21, 1] {
            assert_eq!(reaction(code), Reaction::Fatal, "{}", code_name(code));
        }
        assert_eq!(reaction(0), Reaction::Success);
    }

    #[test]
    fn indeterminate_codes_are_the_ones_after_an_append() {
        assert!(produce_outcome_indeterminate(errors::REQUEST_TIMED_OUT));
        assert!(produce_outcome_indeterminate(
            errors::NOT_ENOUGH_REPLICAS_AFTER_APPEND
        ));
        assert!(!produce_outcome_indeterminate(errors::NOT_ENOUGH_REPLICAS));
        assert!(!produce_outcome_indeterminate(errors::MESSAGE_TOO_LARGE));
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered_within_a_quarter() {
        let base = Duration::from_millis(50);
        let max = Duration::from_secs(1);
        for seed in 0..50 {
            let first = backoff(1, base, max, seed);
            assert!(first >= base && first <= base * 5 / 4, "{first:?}");
            let third = backoff(3, base, max, seed);
            assert!(third >= base * 4 && third <= base * 5, "{third:?}");
            let late = backoff(40, base, max, seed);
            assert!(late >= max && late <= max * 5 / 4, "{late:?}");
        }
    }

    #[test]
    fn messages_name_the_code() {
        let e = Error::server("produce to t-0", 19, None);
        assert_eq!(e.to_string(), "produce to t-0: NOT_ENOUGH_REPLICAS (19)");
        assert!(e.is_retriable());
        assert_eq!(e.code(), Some(19));
        let wrapped = Error::DeliveryFailed {
            attempts: 3,
            elapsed_ms: 10,
            indeterminate: true,
            last_error: Box::new(e),
        };
        assert_eq!(wrapped.code(), Some(19));
        assert!(wrapped.to_string().contains("indeterminate"));
    }
}
