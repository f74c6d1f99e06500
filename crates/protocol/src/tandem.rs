//! Tandem's own API key: one key (1000), version 0, a postcard-encoded enum as the body.
//!
//! Request frame:  `[api_key i16 = 1000][api_version i16 = 0][correlation_id i32][postcard TandemRequest]`
//! Response frame: `[correlation_id i32][postcard TandemResponse]`
//! (both after the 4-byte length prefix of `frame_codec`).

use std::fmt;
use std::str::FromStr;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::{DecodeError, DecodeErrorKind};

/// The one API key Tandem adds to Kafka's; Kafka's own keys stay below 100.
pub const TANDEM_API_KEY: i16 = 1000;
/// The only version of the Tandem key so far. A new field means a new version.
pub const TANDEM_API_VERSION: i16 = 0;

/// How durable a Tandem produce must be before it is acknowledged (DESIGN.md rule 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Durability {
    /// Acknowledged per `acks` once in memory on the required replicas (Kafka's meaning).
    Replicated,
    /// With `acks=all`: the HW counts only offsets every ISR member has flushed to disk.
    Flushed,
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Durability::Replicated => "replicated",
            Durability::Flushed => "flushed",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown durability {0:?} (expected \"replicated\" or \"flushed\")")]
pub struct ParseDurabilityError(pub String);

impl FromStr for Durability {
    type Err = ParseDurabilityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "replicated" => Ok(Durability::Replicated),
            "flushed" | "fsync" => Ok(Durability::Flushed),
            other => Err(ParseDurabilityError(other.to_string())),
        }
    }
}

/// A request under the Tandem API key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TandemRequest {
    /// A controller RPC (`tandem_controller::ControllerRequest`, postcard-encoded by that crate).
    Controller(#[serde(with = "byte_vec")] Vec<u8>),
    /// A follower tells the leader how far its log is flushed.
    FlushReport {
        topic: String,
        partition: i32,
        replica_id: i32,
        leader_epoch: i32,
        flushed_offset: i64,
    },
    /// Produce with Tandem's durability choice, otherwise like Kafka's Produce for one partition.
    Produce {
        topic: String,
        partition: i32,
        acks: i16,
        durability: Durability,
        timeout_ms: i32,
        current_leader_epoch: Option<i32>,
        #[serde(with = "byte_vec")]
        records: Vec<u8>,
    },
    /// The cluster's state as JSON, for `tandem status`.
    ClusterStatus,
    /// A put, delete or compare-and-set on a table's partition (its leader decides).
    KvWrite {
        table: String,
        partition: i32,
        op: KvOp,
        acks: i16,
        durability: Durability,
        timeout_ms: i32,
        current_leader_epoch: Option<i32>,
    },
    /// A get or scan on a table's partition, at a chosen consistency.
    KvRead {
        table: String,
        partition: i32,
        query: KvQuery,
        consistency: ReadConsistency,
        /// How long a replica may wait to become fresh enough before answering
        /// REPLICA_BEHIND (for `AtLeast`, or a new leader whose HW lags its epoch).
        wait_ms: i32,
    },
}

/// A write to a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOp {
    Put {
        #[serde(with = "byte_vec")]
        key: Vec<u8>,
        #[serde(with = "byte_vec")]
        value: Vec<u8>,
    },
    Delete {
        #[serde(with = "byte_vec")]
        key: Vec<u8>,
    },
    /// Writes `value` (`None`: deletes) only if the key's current version is `expected`
    /// (`None`: the key is absent).
    Cas {
        #[serde(with = "byte_vec")]
        key: Vec<u8>,
        expected: Option<i64>,
        value: Option<ByteString>,
    },
}

impl KvOp {
    pub fn key(&self) -> &[u8] {
        match self {
            KvOp::Put { key, .. } | KvOp::Delete { key } | KvOp::Cas { key, .. } => key,
        }
    }
}

/// A byte string inside an `Option` (postcard: one length-prefixed string).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteString(#[serde(with = "byte_vec")] pub Vec<u8>);

/// A read of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvQuery {
    Get {
        #[serde(with = "byte_vec")]
        key: Vec<u8>,
    },
    /// Keys that start with `prefix`, from `from` (inclusive) to `to` (exclusive, `None`: no
    /// end), at most `limit`, in key order.
    Scan {
        #[serde(with = "byte_vec")]
        prefix: Vec<u8>,
        #[serde(with = "byte_vec")]
        from: Vec<u8>,
        to: Option<ByteString>,
        limit: u32,
    },
}

/// How fresh a read must be (DESIGN.md "Key-value tables").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadConsistency {
    /// The leader, lease checked: sees every write acknowledged before the read.
    Linearizable,
    /// The leader, no lease check.
    Leader,
    /// Any replica, optionally within a lag bound.
    Follower {
        max_lag_offsets: Option<i64>,
        max_lag_ms: Option<i64>,
    },
    /// Any replica that has applied the write this token names.
    AtLeast(KvToken),
}

/// A write's offset and leader epoch: the version plus what detects a truncated write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KvToken {
    pub offset: i64,
    pub leader_epoch: i32,
}

/// One key's value in a read answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    #[serde(with = "byte_vec")]
    pub key: Vec<u8>,
    #[serde(with = "byte_vec")]
    pub value: Vec<u8>,
    pub version: i64,
    pub leader_epoch: i32,
}

/// A response under the Tandem API key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TandemResponse {
    /// A controller RPC reply (`tandem_controller::ControllerResponse`, postcard-encoded).
    Controller(#[serde(with = "byte_vec")] Vec<u8>),
    FlushReport {
        error_code: i16,
    },
    Produce {
        error_code: i16,
        base_offset: i64,
        log_start_offset: i64,
        /// On NOT_LEADER_OR_FOLLOWER / fencing: who leads now, and in which epoch.
        leader_hint: Option<i32>,
        leader_epoch: Option<i32>,
    },
    /// JSON.
    ClusterStatus(String),
    /// The request could not be served at all (e.g. UNSUPPORTED_VERSION, INVALID_REQUEST).
    Error {
        error_code: i16,
        message: String,
    },
    KvWrite {
        error_code: i16,
        /// On success, the write's token: its offset (the new version) and leader epoch.
        token: Option<KvToken>,
        /// On CAS_MISMATCH: the key's current version (`None`: absent).
        current_version: Option<i64>,
        leader_hint: Option<i32>,
        leader_epoch: Option<i32>,
        message: String,
    },
    KvRead {
        error_code: i16,
        entries: Vec<KvEntry>,
        /// A scan cut by its limit continues from this key.
        next: Option<ByteString>,
        /// The last offset the answering replica had applied: later reads that ask for at
        /// least this token never see older state.
        token: Option<KvToken>,
        leader_hint: Option<i32>,
        leader_epoch: Option<i32>,
        message: String,
    },
}

/// Encodes a Tandem request frame body (no length prefix).
pub fn encode_tandem_request(correlation_id: i32, body: &TandemRequest) -> Bytes {
    let mut out = BytesMut::with_capacity(64);
    out.put_i16(TANDEM_API_KEY);
    out.put_i16(TANDEM_API_VERSION);
    out.put_i32(correlation_id);
    postcard_append(out, body)
}

/// Encodes a Tandem response frame body (no length prefix).
pub fn encode_tandem_response(correlation_id: i32, body: &TandemResponse) -> Bytes {
    let mut out = BytesMut::with_capacity(64);
    out.put_i32(correlation_id);
    postcard_append(out, body)
}

fn postcard_append<T: Serialize>(out: BytesMut, body: &T) -> Bytes {
    // Postcard only fails on types it cannot express (maps/seqs of unknown length, which
    // serde derives never produce here) or on a full fixed buffer; a Vec grows.
    match postcard::to_extend(body, Vec::from(out)) {
        Ok(v) => Bytes::from(v),
        Err(e) => unreachable!("postcard cannot fail on Tandem messages: {e}"),
    }
}

/// Decodes the body of a Tandem request frame whose 8-byte header was already read.
pub(crate) fn decode_tandem_body(body: &[u8]) -> Result<TandemRequest, String> {
    postcard_exact(body)
}

/// Decodes a Tandem response frame body (no length prefix).
pub fn decode_tandem_response(frame: Bytes) -> Result<(i32, TandemResponse), DecodeError> {
    let correlation_id = match frame.get(..4) {
        Some(b) => i32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        None => {
            return Err(DecodeError {
                correlation_id: None,
                api_key: Some(TANDEM_API_KEY),
                api_version: Some(TANDEM_API_VERSION),
                kind: DecodeErrorKind::Malformed(format!(
                    "{}-byte frame has no correlation id",
                    frame.len()
                )),
            })
        }
    };
    postcard_exact(&frame[4..])
        .map(|body| (correlation_id, body))
        .map_err(|m| DecodeError {
            correlation_id: Some(correlation_id),
            api_key: Some(TANDEM_API_KEY),
            api_version: Some(TANDEM_API_VERSION),
            kind: DecodeErrorKind::Malformed(m),
        })
}

/// Postcard decode that also refuses trailing bytes (a frame holds exactly one message).
fn postcard_exact<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, String> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(format!(
            "{} trailing bytes after the Tandem message",
            rest.len()
        )),
        Err(e) => Err(format!("bad Tandem message: {e}")),
    }
}

/// Serializes `Vec<u8>` as one byte string (length + bytes) instead of a sequence of u8s:
/// the same bytes on the wire with postcard, but decoded with one copy, not a loop.
mod byte_vec {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(ByteVecVisitor)
    }

    struct ByteVecVisitor;

    impl<'de> Visitor<'de> for ByteVecVisitor {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a byte string")
        }
        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            // Never trust a claimed length for the allocation (the hazard this crate avoids).
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = seq.next_element()? {
                v.push(b);
            }
            Ok(v)
        }
    }
}
