//! Key-value tables: put, delete, compare-and-set, get and scan, with a read consistency per
//! request and a session that gives read-your-writes and monotonic reads on followers.
//!
//! ```no_run
//! use tandem_client::{Client, ClientConfig, NewTopic};
//! use tandem_client::table::{ReadMode, Table, TableConfig};
//!
//! # async fn run() -> Result<(), tandem_client::Error> {
//! let client = Client::connect(ClientConfig::new(["127.0.0.1:9092"])).await?;
//! client
//!     .create_topic(NewTopic::new("users", 3).config("tandem.kind", "table"))
//!     .await?;
//! let users = Table::new(client, "users", TableConfig::default());
//! let v1 = users.put("alice", "admin").await?;
//! // Session reads go to any replica, but never show less than this session wrote or read.
//! let got = users.get("alice", ReadMode::Session).await?;
//! assert_eq!(got.map(|e| e.version), Some(v1.offset));
//! // Compare-and-set on the version just read.
//! users.cas("alice", Some(v1.offset), Some("owner")).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Writes are retried only while nothing can have been written (no leader, not enough
//! replicas, a connection that could not be opened). Once a write may have reached the log,
//! a failure is [`Error::Indeterminate`]-like: the write may or may not be applied, and the
//! caller decides (a blind retry of a put could apply it twice, with two versions).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use tandem_protocol::errors;
use tandem_protocol::{
    ByteString, Durability, KvOp, KvQuery, KvToken, ReadConsistency, TandemRequest, TandemResponse,
};

use crate::error::{Error, Result};
use crate::partitioner::partition_for_key;
use crate::producer::Acks;
use crate::Client;

/// A write's place in its partition's log: the offset is the key's new version.
pub type Token = KvToken;

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// The leader, lease checked: every write acknowledged before the read is seen.
    Linearizable,
    /// The leader, without the lease check.
    Leader,
    /// Any in-sync replica, optionally within a lag bound (may be stale).
    Follower {
        max_lag_offsets: Option<i64>,
        max_lag_ms: Option<i64>,
    },
    /// Any replica, but at least as fresh as everything this [`Table`] handle wrote or read
    /// before (read-your-writes and monotonic reads).
    Session,
    /// Any replica that has applied this token's write.
    AtLeast(Token),
}

/// Settings of a [`Table`] handle.
#[derive(Debug, Clone)]
pub struct TableConfig {
    pub acks: Acks,
    pub durability: Durability,
    /// How long the leader may wait for a write to commit before answering "indeterminate".
    pub write_timeout: std::time::Duration,
    /// How long a replica may wait to catch up with a session token before the read is sent
    /// to the leader instead.
    pub read_wait: std::time::Duration,
}

impl Default for TableConfig {
    fn default() -> TableConfig {
        TableConfig {
            acks: Acks::All,
            durability: Durability::Replicated,
            write_timeout: std::time::Duration::from_secs(10),
            read_wait: std::time::Duration::from_millis(200),
        }
    }
}

/// A key's value and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: Bytes,
    pub value: Bytes,
    /// The offset of the write that set it.
    pub version: i64,
    pub leader_epoch: i32,
}

/// The outcome of a compare-and-set that reached the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasOutcome {
    Written(Token),
    /// The key's version was not the expected one: this is the current one (`None`: absent).
    Mismatch {
        current: Option<i64>,
    },
}

/// Which keys a scan covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanRange {
    pub prefix: Bytes,
    /// Inclusive; empty: from the first key.
    pub from: Bytes,
    /// Exclusive; `None`: no end.
    pub to: Option<Bytes>,
}

/// One page of a scan over every partition, merged in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPage {
    pub entries: Vec<Entry>,
    /// Pass as `from` (same prefix and `to`) for the next page; `None` when done.
    pub next: Option<Bytes>,
}

/// A handle on one table. Clone it to share its session.
#[derive(Clone)]
pub struct Table {
    client: Client,
    name: String,
    config: TableConfig,
    /// The freshest token seen per partition, by this handle's writes and reads.
    session: Arc<Mutex<BTreeMap<u32, Token>>>,
}

impl Table {
    pub fn new(client: Client, name: impl Into<String>, config: TableConfig) -> Table {
        Table {
            client,
            name: name.into(),
            config,
            session: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The session's token for `partition`.
    pub fn session_token(&self, partition: u32) -> Option<Token> {
        self.session.lock().get(&partition).copied()
    }

    /// The partition a key lives in (Kafka's murmur2, like keyed records).
    pub async fn partition_of(&self, key: &[u8]) -> Result<u32> {
        let partitions = self.client.partition_count(&self.name).await?;
        Ok(partition_for_key(key, partitions))
    }

    /// Writes `value` under `key`; returns the new version's token.
    pub async fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<Token> {
        let key = key.into();
        let op = KvOp::Put {
            key: key.to_vec(),
            value: value.into().to_vec(),
        };
        match self.write(&key, op).await? {
            CasOutcome::Written(token) => Ok(token),
            CasOutcome::Mismatch { .. } => Err(Error::Other("a put answered CAS_MISMATCH".into())),
        }
    }

    /// Deletes `key` (a tombstone; deleting an absent key is fine).
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<Token> {
        let key = key.into();
        let op = KvOp::Delete { key: key.to_vec() };
        match self.write(&key, op).await? {
            CasOutcome::Written(token) => Ok(token),
            CasOutcome::Mismatch { .. } => {
                Err(Error::Other("a delete answered CAS_MISMATCH".into()))
            }
        }
    }

    /// Writes `value` (`None`: deletes) only if the key's version is `expected` (`None`: the
    /// key must be absent).
    pub async fn cas(
        &self,
        key: impl Into<Bytes>,
        expected: Option<i64>,
        value: Option<impl Into<Bytes>>,
    ) -> Result<CasOutcome> {
        let key = key.into();
        let op = KvOp::Cas {
            key: key.to_vec(),
            expected,
            value: value.map(|v| ByteString(v.into().to_vec())),
        };
        self.write(&key, op).await
    }

    async fn write(&self, key: &[u8], op: KvOp) -> Result<CasOutcome> {
        let partition = self.partition_of(key).await?;
        let deadline = Instant::now() + self.client.config().operation_timeout;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = self.write_once(partition, &op).await;
            match outcome {
                Err(e) if definitely_not_written(&e) && Instant::now() < deadline => {
                    tracing::debug!(table = %self.name, partition, attempt, error = %e, "retrying a write");
                    tokio::time::sleep(self.client.backoff(attempt)).await;
                    let _ = self.client.refresh_metadata().await;
                }
                Ok(CasOutcome::Written(token)) => {
                    self.observe(partition, token);
                    return Ok(CasOutcome::Written(token));
                }
                other => return other,
            }
        }
    }

    async fn write_once(&self, partition: u32, op: &KvOp) -> Result<CasOutcome> {
        let context = || format!("write to {}-{partition}", self.name);
        let Some((_, address, epoch)) = self.client.with_metadata(|m| {
            m.leader(&self.name, partition)
                .map(|(i, a, e)| (i, a.to_string(), e))
        }) else {
            return Err(Error::server(context(), errors::LEADER_NOT_AVAILABLE, None));
        };
        let request = TandemRequest::KvWrite {
            table: self.name.clone(),
            partition: partition as i32,
            op: op.clone(),
            acks: self.config.acks.wire(),
            durability: self.config.durability,
            timeout_ms: self.config.write_timeout.as_millis() as i32,
            current_leader_epoch: Some(epoch),
        };
        let timeout = self.config.write_timeout + self.client.config().request_timeout;
        let connection = self.client.connection(&address).await?;
        match connection.call_tandem(&request, timeout).await? {
            TandemResponse::KvWrite {
                error_code,
                token,
                current_version,
                leader_hint,
                leader_epoch,
                message,
            } => match error_code {
                errors::NONE => Ok(CasOutcome::Written(token.unwrap_or(KvToken {
                    offset: -1,
                    leader_epoch: -1,
                }))),
                errors::CAS_MISMATCH => Ok(CasOutcome::Mismatch {
                    current: current_version,
                }),
                code => {
                    if let (Some(leader), Some(epoch)) = (leader_hint, leader_epoch) {
                        self.client.update_metadata(|m| {
                            m.apply_leader_hint(&self.name, partition, leader, epoch)
                        });
                    }
                    Err(Error::server(context(), code, Some(message)))
                }
            },
            TandemResponse::Error {
                error_code,
                message,
            } => Err(Error::server(context(), error_code, Some(message))),
            _ => Err(Error::Protocol {
                address,
                reason: "KvWrite answered with another message".into(),
            }),
        }
    }

    /// The key's value, at the chosen consistency.
    pub async fn get(&self, key: impl Into<Bytes>, mode: ReadMode) -> Result<Option<Entry>> {
        let key = key.into();
        let partition = self.partition_of(&key).await?;
        let query = KvQuery::Get { key: key.to_vec() };
        let (entries, _) = self.read(partition, &query, mode).await?;
        Ok(entries.into_iter().next())
    }

    /// Up to `limit` entries in `range`, from every partition, merged in key order.
    pub async fn scan(&self, range: &ScanRange, limit: u32, mode: ReadMode) -> Result<ScanPage> {
        let partitions = self.client.partition_count(&self.name).await?;
        let query = KvQuery::Scan {
            prefix: range.prefix.to_vec(),
            from: range.from.to_vec(),
            to: range.to.as_ref().map(|t| ByteString(t.to_vec())),
            limit,
        };
        let pages =
            futures_util::future::join_all((0..partitions).map(|p| self.read(p, &query, mode)))
                .await;
        let mut merged = Vec::new();
        // The first key some partition could not return: nothing at or past it is complete.
        let mut cut: Option<Bytes> = None;
        for page in pages {
            let (entries, next) = page?;
            merged.extend(entries);
            if let Some(next) = next {
                cut = Some(cut.map_or(next.clone(), |c| c.min(next)));
            }
        }
        merged.sort_by(|a, b| a.key.cmp(&b.key));
        if let Some(cut) = &cut {
            merged.retain(|e| e.key < *cut);
        }
        let limit = if limit == 0 {
            usize::MAX
        } else {
            limit as usize
        };
        let next = if merged.len() > limit {
            let next = merged[limit].key.clone();
            merged.truncate(limit);
            Some(next)
        } else {
            cut
        };
        Ok(ScanPage {
            entries: merged,
            next,
        })
    }

    /// One page of what node `node`'s replica of `partition` holds (any staleness): for
    /// operators and tests comparing replicas.
    pub async fn scan_replica(
        &self,
        node: i32,
        partition: u32,
        range: &ScanRange,
        limit: u32,
    ) -> Result<ScanPage> {
        let address = self
            .client
            .with_metadata(|m| m.brokers.get(&node).cloned())
            .ok_or_else(|| Error::InvalidArgument(format!("no node {node} in the metadata")))?;
        let query = KvQuery::Scan {
            prefix: range.prefix.to_vec(),
            from: range.from.to_vec(),
            to: range.to.as_ref().map(|t| ByteString(t.to_vec())),
            limit,
        };
        let consistency = ReadConsistency::Follower {
            max_lag_offsets: None,
            max_lag_ms: None,
        };
        let (entries, next, _) = self
            .read_at(&address, partition, &query, consistency)
            .await?;
        Ok(ScanPage { entries, next })
    }

    async fn read(
        &self,
        partition: u32,
        query: &KvQuery,
        mode: ReadMode,
    ) -> Result<(Vec<Entry>, Option<Bytes>)> {
        let deadline = Instant::now() + self.client.config().operation_timeout;
        let mut attempt = 0;
        // After a replica says it is behind or too stale, ask the leader.
        let mut leader_only = matches!(mode, ReadMode::Linearizable | ReadMode::Leader);
        loop {
            attempt += 1;
            match self.read_once(partition, query, mode, leader_only).await {
                Ok((entries, next, token)) => {
                    if let Some(token) = token {
                        self.observe(partition, token);
                    }
                    return Ok((entries, next));
                }
                Err(e) => {
                    let code = e.code();
                    if matches!(
                        code,
                        Some(errors::REPLICA_BEHIND | errors::REPLICA_TOO_STALE)
                    ) && !leader_only
                    {
                        leader_only = true;
                        continue;
                    }
                    if !(e.is_retriable() && Instant::now() < deadline) {
                        return Err(e);
                    }
                    tracing::debug!(table = %self.name, partition, attempt, error = %e, "retrying a read");
                    tokio::time::sleep(self.client.backoff(attempt)).await;
                    let _ = self.client.refresh_metadata().await;
                }
            }
        }
    }

    async fn read_once(
        &self,
        partition: u32,
        query: &KvQuery,
        mode: ReadMode,
        leader_only: bool,
    ) -> Result<(Vec<Entry>, Option<Bytes>, Option<Token>)> {
        let context = || format!("read from {}-{partition}", self.name);
        let consistency = match mode {
            ReadMode::Linearizable => ReadConsistency::Linearizable,
            ReadMode::Leader => ReadConsistency::Leader,
            ReadMode::Follower {
                max_lag_offsets,
                max_lag_ms,
            } => ReadConsistency::Follower {
                max_lag_offsets,
                max_lag_ms,
            },
            ReadMode::AtLeast(token) => ReadConsistency::AtLeast(token),
            ReadMode::Session => match self.session_token(partition) {
                Some(token) => ReadConsistency::AtLeast(token),
                None => ReadConsistency::Follower {
                    max_lag_offsets: None,
                    max_lag_ms: None,
                },
            },
        };
        let seed = self.client.next_seed();
        let target = self.client.with_metadata(|m| {
            if leader_only {
                m.leader(&self.name, partition)
                    .map(|(_, a, _)| a.to_string())
            } else {
                m.any_replica(&self.name, partition, seed)
                    .map(|(_, a)| a.to_string())
            }
        });
        let Some(address) = target else {
            return Err(Error::server(context(), errors::LEADER_NOT_AVAILABLE, None));
        };
        self.read_at(&address, partition, query, consistency).await
    }

    async fn read_at(
        &self,
        address: &str,
        partition: u32,
        query: &KvQuery,
        consistency: ReadConsistency,
    ) -> Result<(Vec<Entry>, Option<Bytes>, Option<Token>)> {
        let context = || format!("read from {}-{partition}", self.name);
        let request = TandemRequest::KvRead {
            table: self.name.clone(),
            partition: partition as i32,
            query: query.clone(),
            consistency,
            wait_ms: self.config.read_wait.as_millis() as i32,
        };
        let timeout = self.config.read_wait + self.client.config().request_timeout;
        let connection = self.client.connection(address).await?;
        match connection.call_tandem(&request, timeout).await? {
            TandemResponse::KvRead {
                error_code: errors::NONE,
                entries,
                next,
                token,
                ..
            } => Ok((
                entries
                    .into_iter()
                    .map(|e| Entry {
                        key: Bytes::from(e.key),
                        value: Bytes::from(e.value),
                        version: e.version,
                        leader_epoch: e.leader_epoch,
                    })
                    .collect(),
                next.map(|n| Bytes::from(n.0)),
                token,
            )),
            TandemResponse::KvRead {
                error_code,
                leader_hint,
                leader_epoch,
                message,
                ..
            } => {
                if let (Some(leader), Some(epoch)) = (leader_hint, leader_epoch) {
                    self.client.update_metadata(|m| {
                        m.apply_leader_hint(&self.name, partition, leader, epoch)
                    });
                }
                Err(Error::server(context(), error_code, Some(message)))
            }
            TandemResponse::Error {
                error_code,
                message,
            } => Err(Error::server(context(), error_code, Some(message))),
            _ => Err(Error::Protocol {
                address: address.to_string(),
                reason: "KvRead answered with another message".into(),
            }),
        }
    }

    fn observe(&self, partition: u32, token: Token) {
        if token.offset < 0 {
            return;
        }
        let mut session = self.session.lock();
        let slot = session.entry(partition).or_insert(token);
        if token.offset > slot.offset {
            *slot = token;
        }
    }
}

/// Nothing of the write can be in the log: safe to send again.
fn definitely_not_written(e: &Error) -> bool {
    match e {
        Error::Unreachable { .. } => true,
        Error::Server { code, .. } => matches!(
            *code,
            errors::NOT_LEADER_OR_FOLLOWER
                | errors::LEADER_NOT_AVAILABLE
                | errors::FENCED_LEADER_EPOCH
                | errors::UNKNOWN_LEADER_EPOCH
                | errors::NOT_ENOUGH_REPLICAS
                | errors::UNKNOWN_TOPIC_OR_PARTITION
        ),
        _ => false,
    }
}
