//! The consumer: reads assigned partitions from a starting offset with long-polled Fetch
//! requests, one per node per poll. Only committed records (below the high watermark) are
//! returned. Reads go to the leader, or with [`ReadFrom::Follower`] to an in-sync follower
//! (Tandem serves consumer fetches on any replica, as Kafka's KIP-392: a follower's HW may lag
//! the leader's a little, so it can return the newest records slightly later).

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tandem_protocol::errors;
use tandem_protocol::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use tandem_protocol::kafka_protocol::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsTopic,
};
use tandem_protocol::kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, TopicName,
};
use tandem_protocol::kafka_protocol::protocol::StrBytes;
use tandem_protocol::{ApiKey, RequestKind, ResponseKind};
use tandem_storage::batch::{decode_records, split_batches, Compression};

use crate::error::{reaction, Error, Reaction, Result};
use crate::Client;

/// Where a partition starts being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    /// The oldest record still in the log.
    Earliest,
    /// The end of the committed log: only records written from now on.
    Latest,
    /// This offset.
    At(i64),
}

impl FromStr for StartOffset {
    type Err = Error;
    fn from_str(s: &str) -> Result<StartOffset> {
        match s {
            "earliest" | "beginning" => Ok(StartOffset::Earliest),
            "latest" | "end" => Ok(StartOffset::Latest),
            n => match n.parse::<i64>() {
                Ok(n) if n >= 0 => Ok(StartOffset::At(n)),
                _ => Err(Error::InvalidArgument(format!(
                    "start offset {s:?}: expected earliest, latest or a non-negative number"
                ))),
            },
        }
    }
}

/// Which replica serves the reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    Leader,
    /// An in-sync follower when there is one (else the leader).
    Follower,
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub read_from: ReadFrom,
    /// Long poll: a fetch with nothing new waits up to this long on the server.
    pub max_wait: Duration,
    pub min_bytes: i32,
    pub max_bytes: i32,
    pub partition_max_bytes: i32,
}

impl Default for ConsumerConfig {
    fn default() -> ConsumerConfig {
        ConsumerConfig {
            read_from: ReadFrom::Leader,
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            max_bytes: 16 * 1024 * 1024,
            partition_max_bytes: 4 * 1024 * 1024,
        }
    }
}

/// One record read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

#[derive(Debug, Clone)]
struct Position {
    next_offset: i64,
    /// Epoch of the last batch read (-1 before any).
    last_epoch: i32,
    /// Don't fetch before this (backoff after an error).
    not_before: Option<Instant>,
    failures: u32,
}

/// Reads assigned partitions. Not shared between tasks: positions are its own state.
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    positions: BTreeMap<(String, u32), Position>,
}

impl Consumer {
    pub fn new(client: Client, config: ConsumerConfig) -> Consumer {
        Consumer {
            client,
            config,
            positions: BTreeMap::new(),
        }
    }

    /// Reads `partitions` of `topic` (all of them if `None`) from `from`.
    pub async fn assign(
        &mut self,
        topic: &str,
        partitions: Option<&[u32]>,
        from: StartOffset,
    ) -> Result<()> {
        let count = self.client.partition_count(topic).await?;
        let list: Vec<u32> = match partitions {
            Some(list) => list.to_vec(),
            None => (0..count).collect(),
        };
        for &p in &list {
            if p >= count {
                return Err(Error::UnknownPartition {
                    topic: topic.to_string(),
                    partition: p,
                });
            }
            let offset = match from {
                StartOffset::At(n) => n,
                StartOffset::Earliest => self.list_offset(topic, p, -2).await?,
                StartOffset::Latest => self.list_offset(topic, p, -1).await?,
            };
            self.seek(topic, p, offset);
        }
        Ok(())
    }

    /// Next read of `topic`-`partition` starts at `offset`.
    pub fn seek(&mut self, topic: &str, partition: u32, offset: i64) {
        self.positions.insert(
            (topic.to_string(), partition),
            Position {
                next_offset: offset,
                last_epoch: -1,
                not_before: None,
                failures: 0,
            },
        );
    }

    /// The next offset to be read, if assigned.
    pub fn position(&self, topic: &str, partition: u32) -> Option<i64> {
        self.positions
            .get(&(topic.to_string(), partition))
            .map(|p| p.next_offset)
    }

    /// The earliest (-2) or latest committed (-1) offset, from the leader, retried through
    /// elections and a new leader's OFFSET_NOT_AVAILABLE.
    pub async fn list_offset(&self, topic: &str, partition: u32, timestamp: i64) -> Result<i64> {
        let client = self.client.clone();
        client
            .retrying("list offsets", || async {
                let (_, address, epoch) = client
                    .with_metadata(|m| {
                        m.leader(topic, partition)
                            .map(|(id, a, e)| (id, a.to_string(), e))
                    })
                    .ok_or_else(|| {
                        Error::server(
                            format!("list offsets of {topic}-{partition}"),
                            errors::LEADER_NOT_AVAILABLE,
                            None,
                        )
                    })?;
                let request = ListOffsetsRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_isolation_level(1)
                    .with_topics(vec![ListOffsetsTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                        .with_partitions(vec![ListOffsetsPartition::default()
                            .with_partition_index(partition as i32)
                            .with_current_leader_epoch(epoch)
                            .with_timestamp(timestamp)])]);
                let connection = client.connection(&address).await?;
                let response = connection
                    .call(
                        ApiKey::ListOffsets,
                        RequestKind::ListOffsets(request),
                        client.config().request_timeout,
                    )
                    .await?;
                let ResponseKind::ListOffsets(response) = response else {
                    return Err(Error::Other("ListOffsets answered with another api".into()));
                };
                let p = response
                    .topics
                    .iter()
                    .flat_map(|t| t.partitions.iter())
                    .find(|p| p.partition_index == partition as i32)
                    .ok_or_else(|| Error::Protocol {
                        address: address.clone(),
                        reason: "ListOffsets answer lacks the partition".into(),
                    })?;
                if p.error_code != errors::NONE {
                    return Err(Error::server(
                        format!("list offsets of {topic}-{partition}"),
                        p.error_code,
                        None,
                    ));
                }
                Ok(p.offset)
            })
            .await
    }

    /// One round: a long-polled fetch to every node serving an assigned partition, at once.
    /// Returns the records that arrived (possibly none, after `max_wait`). Transient errors
    /// (a moved leader, a dead node) are retried on later polls after a metadata refresh;
    /// OFFSET_OUT_OF_RANGE and corrupt data are returned as errors.
    pub async fn poll(&mut self) -> Result<Vec<ConsumerRecord>> {
        let now = Instant::now();
        type Wanted = Vec<(String, u32, i64, i32, i32)>;
        let mut by_node: HashMap<String, Wanted> = HashMap::new();
        let mut missing_leader = false;
        for ((topic, partition), position) in &self.positions {
            if position.not_before.is_some_and(|t| t > now) {
                continue;
            }
            let target = self.client.with_metadata(|m| {
                let r = match self.config.read_from {
                    ReadFrom::Leader => m.leader(topic, *partition),
                    ReadFrom::Follower => m.read_replica(topic, *partition),
                };
                r.map(|(_, a, e)| (a.to_string(), e))
            });
            match target {
                Some((address, epoch)) => by_node.entry(address).or_default().push((
                    topic.clone(),
                    *partition,
                    position.next_offset,
                    position.last_epoch,
                    epoch,
                )),
                None => missing_leader = true,
            }
        }
        if missing_leader {
            let _ = self.client.refresh_metadata().await;
        }
        if by_node.is_empty() {
            // Everything is backing off or leaderless: wait a little, as a poll would.
            let wait = self
                .positions
                .values()
                .filter_map(|p| p.not_before)
                .min()
                .map_or(self.client.config().retry_backoff, |t| {
                    t.saturating_duration_since(now)
                })
                .min(self.config.max_wait);
            tokio::time::sleep(wait).await;
            return Ok(Vec::new());
        }
        let calls = by_node.into_iter().map(|(address, partitions)| {
            let client = self.client.clone();
            let config = self.config.clone();
            async move {
                let mut topics: Vec<FetchTopic> = Vec::new();
                for (topic, partition, offset, last_epoch, epoch) in &partitions {
                    let fp = FetchPartition::default()
                        .with_partition(*partition as i32)
                        .with_fetch_offset(*offset)
                        .with_current_leader_epoch(*epoch)
                        .with_last_fetched_epoch(*last_epoch)
                        .with_log_start_offset(-1)
                        .with_partition_max_bytes(config.partition_max_bytes);
                    match topics.iter_mut().find(|t| t.topic.0.as_str() == topic) {
                        Some(t) => t.partitions.push(fp),
                        None => topics.push(
                            FetchTopic::default()
                                .with_topic(TopicName(StrBytes::from_string(topic.clone())))
                                .with_partitions(vec![fp]),
                        ),
                    }
                }
                let request = FetchRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_max_wait_ms(config.max_wait.as_millis() as i32)
                    .with_min_bytes(config.min_bytes)
                    .with_max_bytes(config.max_bytes)
                    .with_isolation_level(1)
                    .with_session_id(0)
                    .with_session_epoch(-1)
                    .with_topics(topics);
                let timeout = client.config().request_timeout + config.max_wait;
                let result = async {
                    let connection = client.connection(&address).await?;
                    match connection
                        .call(ApiKey::Fetch, RequestKind::Fetch(request), timeout)
                        .await?
                    {
                        ResponseKind::Fetch(r) => Ok(r),
                        _ => Err(Error::Other("Fetch answered with another api".into())),
                    }
                }
                .await;
                (partitions, result)
            }
        });
        let calls: Vec<_> = calls.collect();
        let answers = futures_util::future::join_all(calls).await;
        let mut records = Vec::new();
        let mut refresh = false;
        let mut first_error = None;
        for (partitions, result) in answers {
            let partitions: Wanted = partitions;
            match result {
                Ok(response) => {
                    for (topic, partition, ..) in partitions {
                        match self.take_partition(&response, &topic, partition, &mut records) {
                            Ok(()) => {}
                            Err(e) if e.is_retriable() => {
                                refresh = true;
                                self.back_off(&topic, partition);
                            }
                            Err(e) => {
                                first_error.get_or_insert(e);
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "fetch failed; will retry");
                    refresh = true;
                    for (topic, partition, ..) in partitions {
                        self.back_off(&topic, partition);
                    }
                }
            }
        }
        if refresh {
            let _ = self.client.refresh_metadata().await;
        }
        match first_error {
            Some(e) if records.is_empty() => Err(e),
            _ => Ok(records),
        }
    }

    fn back_off(&mut self, topic: &str, partition: u32) {
        if let Some(p) = self.positions.get_mut(&(topic.to_string(), partition)) {
            p.failures += 1;
            p.not_before = Some(Instant::now() + self.client.backoff(p.failures));
        }
    }

    fn take_partition(
        &mut self,
        response: &FetchResponse,
        topic: &str,
        partition: u32,
        out: &mut Vec<ConsumerRecord>,
    ) -> Result<()> {
        if response.error_code != errors::NONE {
            return Err(Error::server("fetch", response.error_code, None));
        }
        let data = response
            .responses
            .iter()
            .filter(|t| t.topic.0.as_str() == topic)
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == partition as i32);
        let Some(data) = data else {
            return Err(Error::server(
                format!("fetch {topic}-{partition}"),
                errors::UNKNOWN_TOPIC_OR_PARTITION,
                Some("missing from the answer".into()),
            ));
        };
        let key = (topic.to_string(), partition);
        let Some(position) = self.positions.get_mut(&key) else {
            return Ok(());
        };
        match reaction(data.error_code) {
            Reaction::Success => {}
            _ if data.error_code == errors::OFFSET_OUT_OF_RANGE => {
                return Err(Error::OffsetOutOfRange {
                    topic: topic.to_string(),
                    partition,
                    offset: position.next_offset,
                })
            }
            _ => {
                return Err(Error::server(
                    format!("fetch {topic}-{partition}"),
                    data.error_code,
                    None,
                ))
            }
        }
        position.failures = 0;
        position.not_before = None;
        let bytes = data.records.clone().unwrap_or_default();
        let corrupt = |reason: String| Error::CorruptRecords {
            topic: topic.to_string(),
            partition,
            reason,
        };
        // A partial batch at the end (cut by max bytes) is simply read next time.
        for (header, raw) in split_batches(&bytes).map_while(|r| r.ok()) {
            if header.next_offset() <= position.next_offset {
                continue;
            }
            if header.is_control() {
                position.next_offset = header.next_offset();
                continue;
            }
            if header.compression() != Compression::None {
                return Err(corrupt(format!(
                    "batch at {} is compressed ({:?}); this client reads uncompressed batches",
                    header.base_offset,
                    header.compression()
                )));
            }
            let decoded =
                decode_records(&bytes.slice_ref(raw)).map_err(|e| corrupt(e.to_string()))?;
            for record in decoded {
                let offset = header.base_offset + record.offset_delta as i64;
                if offset < position.next_offset {
                    continue;
                }
                out.push(ConsumerRecord {
                    topic: topic.to_string(),
                    partition,
                    offset,
                    timestamp_ms: header.base_timestamp + record.timestamp_delta,
                    key: record.key,
                    value: record.value,
                    headers: record
                        .headers
                        .into_iter()
                        .map(|h| (h.key, h.value))
                        .collect(),
                });
            }
            position.next_offset = header.next_offset();
            position.last_epoch = header.leader_epoch;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_offsets_parse() {
        assert_eq!(
            "earliest".parse::<StartOffset>().unwrap(),
            StartOffset::Earliest
        );
        assert_eq!(
            "latest".parse::<StartOffset>().unwrap(),
            StartOffset::Latest
        );
        assert_eq!("42".parse::<StartOffset>().unwrap(), StartOffset::At(42));
        assert!("-3".parse::<StartOffset>().is_err());
        assert!("soon".parse::<StartOffset>().is_err());
    }
}
