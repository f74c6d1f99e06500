//! [`Peers`] and the controller's transport over TCP, with Tandem's API key.

use std::sync::Arc;

use bytes::Bytes;
use openraft::BasicNode;
use tandem_controller::network::{ControllerTransport, TransportError};
use tandem_controller::{ControllerRequest, ControllerResponse};
use tandem_protocol::errors;
use tandem_protocol::{TandemRequest, TandemResponse};
use tandem_replication::types::{DivergingEpoch, FetchData, FetchRequest, NodeId};
use tandem_replication::ReadError;

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

impl Peers for TcpPeers {
    fn replica_fetch(
        &self,
        address: String,
        partition: TopicPartition,
        request: FetchRequest,
    ) -> BoxFuture<Result<FetchData<Bytes>, FetchFailure>> {
        use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
        use kafka_protocol::messages::{ApiKey, BrokerId, RequestKind, ResponseKind, TopicName};
        use tandem_protocol::fetch_tags;
        let client = Arc::clone(&self.client);
        let replica_id = self.node_id;
        Box::pin(async move {
            // Kafka's own Fetch, as a follower (replica id set), at the version whose tagged
            // fields carry Tandem's flush requests (DESIGN.md: followers replicate with Fetch).
            let fetch = kafka_protocol::messages::FetchRequest::default()
                .with_replica_id(BrokerId(replica_id))
                .with_max_wait_ms(request.max_wait_ms as i32)
                .with_min_bytes(1)
                .with_max_bytes(request.max_bytes as i32)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(TopicName(kafka_protocol::protocol::StrBytes::from_string(
                        partition.topic.clone(),
                    )))
                    .with_partitions(vec![FetchPartition::default()
                        .with_partition(partition.partition)
                        .with_fetch_offset(request.fetch_offset)
                        .with_last_fetched_epoch(request.last_fetched_epoch.unwrap_or(-1))
                        .with_current_leader_epoch(request.current_leader_epoch.unwrap_or(-1))
                        .with_log_start_offset(-1)
                        .with_partition_max_bytes(request.max_bytes as i32)])]);
            let response = client
                .call_kafka(
                    &address,
                    ApiKey::Fetch,
                    fetch_tags::REPLICA_FETCH_VERSION,
                    RequestKind::Fetch(fetch),
                )
                .await
                .map_err(FetchFailure::Unreachable)?;
            let unexpected = |reason: String| {
                FetchFailure::Unreachable(Unreachable {
                    address: address.clone(),
                    reason,
                })
            };
            let ResponseKind::Fetch(response) = response else {
                return Err(unexpected("not a Fetch answer".into()));
            };
            if response.error_code != errors::NONE {
                return Err(FetchFailure::Refused(read_error(
                    response.error_code,
                    -1,
                    -1,
                )));
            }
            let Some(p) = response
                .responses
                .into_iter()
                .flat_map(|t| t.partitions)
                .find(|p| p.partition_index == partition.partition)
            else {
                return Err(unexpected("no partition in the answer".into()));
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
                records: p.records.unwrap_or_default(),
                flush_up_to: tag(fetch_tags::FLUSH_UP_TO),
                compaction_horizon: tag(fetch_tags::COMPACTION_HORIZON).unwrap_or(0),
            })
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
