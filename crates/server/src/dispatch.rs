//! From a decoded request to its encoded answer: Kafka's APIs go to [`crate::kafka`], Tandem's
//! own key is answered here.

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use parking_lot::Mutex;
use tandem_controller::{ControllerRequest, ControllerResponse};
use tandem_protocol::errors::{self, produce_error_code};
use tandem_protocol::{
    encode_response, encode_tandem_response, Request, TandemRequest, TandemResponse,
};
use tandem_replication::types::{self, Acks, Durability};
use tracing::warn;

use crate::listener::Services;
use crate::partition::TopicPartition;

/// What a connection learned about who is on the other end: a node heartbeating to this
/// voter. When the connection closes, that node is known dead (rule 7: do not wait out the
/// session timeout).
#[derive(Default)]
pub struct ConnectionContext {
    pub heartbeating_node: Mutex<Option<(i32, u64)>>,
}

/// What to send back for one request.
pub enum Answer {
    Frame(Bytes),
    /// No answer is due (a produce with acks=0).
    Nothing,
    /// The answer cannot be expressed at the request's version: close the connection rather
    /// than leave the client waiting for an answer that will never come.
    Close,
}

pub async fn answer(services: &Services, context: &ConnectionContext, request: Request) -> Answer {
    match request {
        Request::Kafka { header, body } => {
            let Ok(api_key) = ApiKey::try_from(header.request_api_key) else {
                return Answer::Close;
            };
            let Some(response) = crate::kafka::handle(&services.node, &header, body).await else {
                return Answer::Nothing;
            };
            match encode_response(
                api_key,
                header.request_api_version,
                header.correlation_id,
                &response,
            ) {
                Ok(frame) => Answer::Frame(frame),
                Err(e) => {
                    warn!(?api_key, version = header.request_api_version, error = %e,
                        "could not encode a response; closing the connection");
                    Answer::Close
                }
            }
        }
        Request::Tandem {
            correlation_id,
            body,
            ..
        } => {
            let response = tandem(services, context, body).await;
            Answer::Frame(encode_tandem_response(correlation_id, &response))
        }
    }
}

fn error(error_code: i16, message: impl Into<String>) -> TandemResponse {
    TandemResponse::Error {
        error_code,
        message: message.into(),
    }
}

async fn tandem(
    services: &Services,
    context: &ConnectionContext,
    request: TandemRequest,
) -> TandemResponse {
    let node = &services.node;
    match request {
        TandemRequest::Controller(bytes) => {
            let Some(voter) = &services.voter else {
                return error(
                    errors::NOT_CONTROLLER,
                    "this node is not a controller voter",
                );
            };
            let request = match ControllerRequest::decode(&bytes) {
                Ok(request) => request,
                Err(e) => return error(errors::INVALID_REQUEST, e.to_string()),
            };
            let heartbeat_from = match &request {
                ControllerRequest::Heartbeat(h) if !h.want_shutdown => {
                    Some((h.node_id, h.incarnation))
                }
                _ => None,
            };
            let response = voter.handle(request).await;
            if let (Some(from), ControllerResponse::Heartbeat(Ok(_))) = (heartbeat_from, &response)
            {
                *context.heartbeating_node.lock() = Some(from);
            }
            TandemResponse::Controller(response.encode())
        }
        TandemRequest::FlushReport {
            topic,
            partition,
            replica_id,
            leader_epoch,
            flushed_offset,
        } => {
            let tp = TopicPartition { topic, partition };
            let delivered = node.flush_report(&tp, replica_id, leader_epoch, flushed_offset);
            TandemResponse::FlushReport {
                error_code: if delivered {
                    errors::NONE
                } else {
                    errors::NOT_LEADER_OR_FOLLOWER
                },
            }
        }
        TandemRequest::Produce {
            topic,
            partition,
            acks,
            durability,
            timeout_ms,
            current_leader_epoch,
            records,
        } => {
            let tp = TopicPartition { topic, partition };
            let acks = match acks {
                0 => Acks::None,
                1 => Acks::Leader,
                -1 => Acks::All,
                _ => {
                    return error(
                        errors::INVALID_REQUIRED_ACKS,
                        format!("acks {acks} is not 0, 1 or -1"),
                    )
                }
            };
            if !node.partition_exists(&tp) {
                return error(
                    errors::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("no partition {tp}"),
                );
            }
            let request = types::ProduceRequest {
                acks,
                durability: match durability {
                    tandem_protocol::Durability::Replicated => Durability::Replicated,
                    tandem_protocol::Durability::Flushed => Durability::Flushed,
                },
                timeout_ms: timeout_ms as i64,
                current_leader_epoch,
                records: bytes::BytesMut::from(&records[..]),
            };
            match node.produce(&tp, request).await {
                Ok(ok) => TandemResponse::Produce {
                    error_code: errors::NONE,
                    base_offset: ok.base_offset,
                    log_start_offset: ok.log_start_offset,
                    leader_hint: None,
                    leader_epoch: None,
                },
                Err(e) => {
                    let (leader_hint, leader_epoch) = e.leader_hint();
                    TandemResponse::Produce {
                        error_code: produce_error_code(&e),
                        base_offset: -1,
                        log_start_offset: -1,
                        leader_hint,
                        leader_epoch,
                    }
                }
            }
        }
        TandemRequest::ClusterStatus => {
            TandemResponse::ClusterStatus(crate::status::cluster_json(node))
        }
        TandemRequest::KvWrite {
            table,
            partition,
            op,
            acks,
            durability,
            timeout_ms,
            current_leader_epoch,
        } => {
            crate::kv::write(
                node,
                table,
                partition,
                op,
                acks,
                durability,
                timeout_ms,
                current_leader_epoch,
            )
            .await
        }
        TandemRequest::KvRead {
            table,
            partition,
            query,
            consistency,
            wait_ms,
        } => crate::kv::read(node, table, partition, query, consistency, wait_ms).await,
    }
}

/// The connection closed: a node that heartbeat over it is gone (its process exited, or its
/// host did). Tell the controller now rather than after the session timeout.
pub async fn connection_closed(services: &Services, context: &ConnectionContext) {
    let Some((node_id, incarnation)) = context.heartbeating_node.lock().take() else {
        return;
    };
    let Some(voter) = &services.voter else {
        return;
    };
    if voter.is_active() {
        tracing::info!(
            node = node_id,
            incarnation,
            "a node's controller connection closed; fencing it now"
        );
        let _ = voter
            .handle(ControllerRequest::NodeStopped {
                node_id,
                incarnation,
            })
            .await;
    }
}
