//! [`Peers`] and the controller's transport over TCP, with Tandem's API key.

use std::sync::Arc;

use openraft::BasicNode;
use tandem_controller::network::{ControllerTransport, TransportError};
use tandem_controller::{ControllerRequest, ControllerResponse};
use tandem_protocol::errors;
use tandem_protocol::{TandemRequest, TandemResponse};
use tandem_replication::types::{DivergingEpoch, FetchData, FetchRequest, NodeId};
use tandem_replication::ReadError;

use crate::fetcher::PartitionAnswer;
use crate::node::{BoxFuture, FetchFailure, Peers, Unreachable};
use crate::partition::TopicPartition;
use crate::peer_client::PeerClient;

/// Calls to other nodes over one pooled client.
pub struct TcpPeers {
    client: Arc<PeerClient>,
    /// Sent with replica fetches, so a leader can refuse an old incarnation (rule 5).
    node_id: NodeId,
}

impl TcpPeers {
    pub fn new(client: Arc<PeerClient>, node_id: NodeId) -> TcpPeers {
        TcpPeers { client, node_id }
    }
}

/// What the follower core should make of a leader's refusal. For OFFSET_OUT_OF_RANGE the
/// leader's log start and end come along: a follower behind the compaction horizon copies the
/// log again from the start.
fn read_error(code: i16, log_start_offset: i64, log_end_offset: i64) -> ReadError {
    match code {
        errors::NOT_LEADER_OR_FOLLOWER => ReadError::NotLeader {
            leader: None,
            leader_epoch: -1,
        },
        errors::FENCED_LEADER_EPOCH => ReadError::FencedLeaderEpoch {
            request_epoch: -1,
            current_epoch: -1,
        },
        errors::UNKNOWN_LEADER_EPOCH => ReadError::UnknownLeaderEpoch {
            request_epoch: -1,
            current_epoch: -1,
        },
        errors::OFFSET_OUT_OF_RANGE => ReadError::OffsetOutOfRange {
            offset: -1,
            log_start_offset,
            log_end_offset,
        },
        other => ReadError::Storage(format!("leader answered error code {other}")),
    }
}

async fn controller_call(
    client: &PeerClient,
    address: &str,
    request: ControllerRequest,
) -> Result<ControllerResponse, Unreachable> {
    let bad = |reason: String| Unreachable {
        address: address.to_string(),
        reason,
    };
    match client
        .call(address, TandemRequest::Controller(request.encode()))
        .await?
    {
        TandemResponse::Controller(bytes) => {
            ControllerResponse::decode(&bytes).map_err(|e| bad(e.to_string()))
        }
        TandemResponse::Error { message, .. } => Err(bad(message)),
        other => Err(bad(format!("unexpected answer {other:?}"))),
    }
}

/// A follower's Kafka Fetch (replica id set, v12: tagged fields) of these partitions; each
/// says which HW the follower knows (`fetch_tags::KNOWN_HIGH_WATERMARK`).
pub fn replica_fetch_request(
    replica_id: NodeId,
    partitions: &[(TopicPartition, FetchRequest)],
) -> kafka_protocol::messages::FetchRequest {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{BrokerId, TopicName};
    use tandem_protocol::fetch_tags;
    let mut topics: Vec<FetchTopic> = Vec::new();
    for (tp, request) in partitions {
        let mut partition = FetchPartition::default()
            .with_partition(tp.partition)
            .with_fetch_offset(request.fetch_offset)
            .with_last_fetched_epoch(request.last_fetched_epoch.unwrap_or(-1))
            .with_current_leader_epoch(request.current_leader_epoch.unwrap_or(-1))
            .with_log_start_offset(-1)
            .with_partition_max_bytes(request.max_bytes.min(i32::MAX as usize) as i32);
        if let Some(known) = request.known_high_watermark {
            partition.unknown_tagged_fields.insert(
                fetch_tags::KNOWN_HIGH_WATERMARK,
                fetch_tags::encode_i64(known),
            );
        }
        match topics.iter_mut().find(|t| t.topic.0.as_str() == tp.topic) {
            Some(topic) => topic.partitions.push(partition),
            None => topics.push(
                FetchTopic::default()
                    .with_topic(TopicName(kafka_protocol::protocol::StrBytes::from_string(
                        tp.topic.clone(),
                    )))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    let max_wait_ms = partitions
        .iter()
        .map(|(_, r)| r.max_wait_ms)
        .max()
        .unwrap_or(0);
    let max_bytes: usize = partitions.iter().map(|(_, r)| r.max_bytes).sum();
    kafka_protocol::messages::FetchRequest::default()
        .with_replica_id(BrokerId(replica_id))
        .with_max_wait_ms(max_wait_ms.clamp(0, i32::MAX as i64) as i32)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes.min(i32::MAX as usize) as i32)
        .with_topics(topics)
}

/// Each partition's answer in a leader's Fetch response, in the order of `partitions`. A
/// partition the answer leaves out counts as unanswered (its core backs off and asks again).
pub fn replica_fetch_answers(
    response: kafka_protocol::messages::FetchResponse,
    partitions: &[(TopicPartition, FetchRequest)],
    address: &str,
) -> Vec<PartitionAnswer> {
    use tandem_protocol::fetch_tags;
    if response.error_code != errors::NONE {
        let error = read_error(response.error_code, -1, -1);
        return vec![Err(FetchFailure::Refused(error)); partitions.len()];
    }
    let mut by_partition = std::collections::HashMap::new();
    for topic in response.responses {
        let name = topic.topic.0.to_string();
        for p in topic.partitions {
            by_partition.insert((name.clone(), p.partition_index), p);
        }
    }
    partitions
        .iter()
        .map(|(tp, _)| {
            let Some(p) = by_partition.remove(&(tp.topic.clone(), tp.partition)) else {
                return Err(FetchFailure::Unreachable(Unreachable {
                    address: address.to_string(),
                    reason: format!("no answer for {tp}"),
                }));
            };
            let tag = |t: i32| {
                p.unknown_tagged_fields
                    .get(&t)
                    .and_then(|b| fetch_tags::decode_i64(b))
            };
            if p.error_code != errors::NONE {
                let log_end_offset = tag(fetch_tags::LOG_END_OFFSET).unwrap_or(-1);
                return Err(FetchFailure::Refused(read_error(
                    p.error_code,
                    p.log_start_offset,
                    log_end_offset,
                )));
            }
            let diverging = (p.diverging_epoch.epoch >= 0).then_some(DivergingEpoch {
                epoch: p.diverging_epoch.epoch,
                end_offset: p.diverging_epoch.end_offset,
            });
            Ok(FetchData {
                high_watermark: p.high_watermark,
                log_start_offset: p.log_start_offset,
                log_end_offset: tag(fetch_tags::LOG_END_OFFSET).unwrap_or(p.high_watermark),
                diverging_epoch: diverging,
                records: p.records.clone().unwrap_or_default(),
                flush_up_to: tag(fetch_tags::FLUSH_UP_TO),
                compaction_horizon: tag(fetch_tags::COMPACTION_HORIZON).unwrap_or(0),
            })
        })
        .collect()
}

impl Peers for TcpPeers {
    fn replica_fetch(
        &self,
        address: String,
        partitions: Vec<(TopicPartition, FetchRequest)>,
    ) -> BoxFuture<Result<Vec<PartitionAnswer>, Unreachable>> {
        use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
        let client = Arc::clone(&self.client);
        let replica_id = self.node_id;
        Box::pin(async move {
            // Kafka's own Fetch, as a follower (DESIGN.md: followers replicate with Fetch).
            let fetch = replica_fetch_request(replica_id, &partitions);
            let response = client
                .call_kafka(
                    &address,
                    ApiKey::Fetch,
                    tandem_protocol::fetch_tags::REPLICA_FETCH_VERSION,
                    RequestKind::Fetch(fetch),
                )
                .await?;
            let ResponseKind::Fetch(response) = response else {
                return Err(Unreachable {
                    address,
                    reason: "not a Fetch answer".into(),
                });
            };
            Ok(replica_fetch_answers(response, &partitions, &address))
        })
    }

    fn flush_report(
        &self,
        address: String,
        partition: TopicPartition,
        replica_id: NodeId,
        leader_epoch: i32,
        flushed_offset: i64,
    ) -> BoxFuture<Result<(), Unreachable>> {
        let client = Arc::clone(&self.client);
        Box::pin(async move {
            let call = TandemRequest::FlushReport {
                topic: partition.topic,
                partition: partition.partition,
                replica_id,
                leader_epoch,
                flushed_offset,
            };
            client.call(&address, call).await.map(|_| ())
        })
    }

    fn controller(
        &self,
        address: String,
        request: ControllerRequest,
    ) -> BoxFuture<Result<ControllerResponse, Unreachable>> {
        let client = Arc::clone(&self.client);
        Box::pin(async move { controller_call(&client, &address, request).await })
    }
}

/// The controller voters' transport to each other.
pub struct TcpControllerTransport {
    pub client: Arc<PeerClient>,
}

impl ControllerTransport for TcpControllerTransport {
    async fn call(
        &self,
        target: u64,
        node: &BasicNode,
        request: ControllerRequest,
    ) -> Result<ControllerResponse, TransportError> {
        controller_call(&self.client, &node.addr, request)
            .await
            .map_err(|e| TransportError::Unreachable {
                target,
                reason: e.reason,
            })
    }
}
