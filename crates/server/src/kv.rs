//! Tandem's key-value requests (KvWrite, KvRead): from the wire to a table partition and back.

use std::time::Duration;

use bytes::Bytes;
use tandem_protocol::errors::{self, produce_error_code};
use tandem_protocol::{
    ByteString, KvEntry, KvOp, KvQuery, KvToken, ReadConsistency, TandemResponse,
};
use tandem_replication::types::{Acks, Durability};
use tandem_replication::ProduceError;
use tandem_table::read::{Consistency, ReadError, Token};

use crate::node::Node;
use crate::partition::TopicPartition;
use crate::table::{TableQuery, TableReadError, TableWrite, TableWriteError};

/// Most entries one scan answer carries, whatever the client asked.
pub const MAX_SCAN_LIMIT: u32 = 10_000;
/// The page size of a scan that names no limit.
pub const DEFAULT_SCAN_LIMIT: u32 = 1_000;
/// The longest a read may ask to wait for a replica to catch up.
pub const MAX_READ_WAIT_MS: i32 = 30_000;

#[allow(clippy::too_many_arguments)]
pub async fn write(
    node: &Node,
    table: String,
    partition: i32,
    op: KvOp,
    acks: i16,
    durability: tandem_protocol::Durability,
    timeout_ms: i32,
    current_leader_epoch: Option<i32>,
) -> TandemResponse {
    let tp = TopicPartition {
        topic: table,
        partition,
    };
    if let Err(answer) = check_table(node, &tp, write_error) {
        return answer;
    }
    let acks = match acks {
        0 => Acks::None,
        1 => Acks::Leader,
        -1 => Acks::All,
        _ => {
            return write_error(
                errors::INVALID_REQUIRED_ACKS,
                format!("acks {acks} is not 0, 1 or -1"),
            )
        }
    };
    let durability = match durability {
        tandem_protocol::Durability::Replicated => Durability::Replicated,
        tandem_protocol::Durability::Flushed => Durability::Flushed,
    };
    let write = match op {
        KvOp::Put { key, value } => TableWrite {
            key: Bytes::from(key),
            value: Some(Bytes::from(value)),
            expected: None,
        },
        KvOp::Delete { key } => TableWrite {
            key: Bytes::from(key),
            value: None,
            expected: None,
        },
        KvOp::Cas {
            key,
            expected,
            value,
        } => TableWrite {
            key: Bytes::from(key),
            value: value.map(|v| Bytes::from(v.0)),
            expected: Some(expected),
        },
    };
    let result = node
        .table_write(
            &tp,
            write,
            acks,
            durability,
            i64::from(timeout_ms.max(0)),
            current_leader_epoch,
        )
        .await;
    match result {
        Ok(written) => TandemResponse::KvWrite {
            error_code: errors::NONE,
            token: written.token.map(wire_token),
            current_version: None,
            leader_hint: None,
            leader_epoch: None,
            message: String::new(),
        },
        Err(TableWriteError::CasMismatch { current }) => TandemResponse::KvWrite {
            error_code: errors::CAS_MISMATCH,
            token: None,
            current_version: current,
            leader_hint: None,
            leader_epoch: None,
            message: TableWriteError::CasMismatch { current }.to_string(),
        },
        Err(TableWriteError::Produce(e)) => {
            let (leader_hint, leader_epoch) = e.leader_hint();
            // Unlike Kafka's codes, a table write says plainly when it may have happened.
            let error_code = match &e {
                ProduceError::NotLeaderAfterAppend { .. }
                | ProduceError::NotEnoughReplicasAfterAppend { .. }
                | ProduceError::TimedOutAfterAppend { .. } => errors::INDETERMINATE,
                _ => produce_error_code(&e),
            };
            TandemResponse::KvWrite {
                error_code,
                token: None,
                current_version: None,
                leader_hint,
                leader_epoch,
                message: e.to_string(),
            }
        }
    }
}

pub async fn read(
    node: &Node,
    table: String,
    partition: i32,
    query: KvQuery,
    consistency: ReadConsistency,
    wait_ms: i32,
) -> TandemResponse {
    let tp = TopicPartition {
        topic: table,
        partition,
    };
    if let Err(answer) = check_table(node, &tp, read_error) {
        return answer;
    }
    let query = match query {
        KvQuery::Get { key } => TableQuery::Get {
            key: Bytes::from(key),
        },
        KvQuery::Scan {
            prefix,
            from,
            to,
            limit,
        } => TableQuery::Scan {
            prefix: Bytes::from(prefix),
            from: Bytes::from(from),
            to: to.map(|t| Bytes::from(t.0)),
            limit: match limit {
                0 => DEFAULT_SCAN_LIMIT,
                n => n.min(MAX_SCAN_LIMIT),
            } as usize,
        },
    };
    let consistency = match consistency {
        ReadConsistency::Linearizable => Consistency::Linearizable,
        ReadConsistency::Leader => Consistency::Leader,
        ReadConsistency::Follower {
            max_lag_offsets,
            max_lag_ms,
        } => Consistency::Follower {
            max_lag_offsets,
            max_lag_ms,
        },
        ReadConsistency::AtLeast(t) => Consistency::AtLeast(Token {
            offset: t.offset,
            leader_epoch: t.leader_epoch,
        }),
    };
    let wait = Duration::from_millis(wait_ms.clamp(0, MAX_READ_WAIT_MS) as u64);
    match node.table_read(&tp, query, consistency, wait).await {
        Ok(answer) => TandemResponse::KvRead {
            error_code: errors::NONE,
            entries: answer
                .entries
                .into_iter()
                .map(|(key, e)| KvEntry {
                    key: key.to_vec(),
                    value: e.value.to_vec(),
                    version: e.version,
                    leader_epoch: e.leader_epoch,
                })
                .collect(),
            next: answer.next.map(|k| ByteString(k.to_vec())),
            token: answer.token.map(wire_token),
            leader_hint: None,
            leader_epoch: None,
            message: String::new(),
        },
        Err(e) => {
            let code = match &e {
                TableReadError::Read(ReadError::NotLeader | ReadError::LeaseExpired) => {
                    errors::NOT_LEADER_OR_FOLLOWER
                }
                TableReadError::Read(ReadError::NotYetCommitted { .. }) => {
                    errors::OFFSET_NOT_AVAILABLE
                }
                TableReadError::Read(ReadError::TooStale { .. }) => errors::REPLICA_TOO_STALE,
                // A replica copying a compacted log is behind too: the client asks the leader.
                TableReadError::Read(ReadError::Behind { .. } | ReadError::Copying { .. }) => {
                    errors::REPLICA_BEHIND
                }
                TableReadError::Read(ReadError::TokenTruncated { .. }) => errors::TOKEN_TRUNCATED,
                TableReadError::Storage(_) => errors::KAFKA_STORAGE_ERROR,
            };
            let (leader, epoch) = node.leader_of(&tp);
            TandemResponse::KvRead {
                error_code: code,
                entries: Vec::new(),
                next: None,
                token: None,
                leader_hint: leader,
                leader_epoch: Some(epoch),
                message: e.to_string(),
            }
        }
    }
}

fn check_table(
    node: &Node,
    tp: &TopicPartition,
    error: impl Fn(i16, String) -> TandemResponse,
) -> Result<(), TandemResponse> {
    if !node.partition_exists(tp) {
        return Err(error(
            errors::UNKNOWN_TOPIC_OR_PARTITION,
            format!("no partition {tp}"),
        ));
    }
    if !node.is_table(&tp.topic) {
        return Err(error(
            errors::NOT_A_TABLE,
            format!(
                "{} is a log, not a table (create it with tandem.kind=table)",
                tp.topic
            ),
        ));
    }
    Ok(())
}

fn wire_token(t: Token) -> KvToken {
    KvToken {
        offset: t.offset,
        leader_epoch: t.leader_epoch,
    }
}

fn write_error(error_code: i16, message: String) -> TandemResponse {
    TandemResponse::KvWrite {
        error_code,
        token: None,
        current_version: None,
        leader_hint: None,
        leader_epoch: None,
        message,
    }
}

fn read_error(error_code: i16, message: String) -> TandemResponse {
    TandemResponse::KvRead {
        error_code,
        entries: Vec::new(),
        next: None,
        token: None,
        leader_hint: None,
        leader_epoch: None,
        message,
    }
}
