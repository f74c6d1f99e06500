//! The simulated network: endpoints, messages, and the links between them. A message is
//! scheduled for delivery after a random latency (so messages reorder), may be dropped or
//! duplicated, and is lost when its link is cut at send or at delivery time. Links are
//! directed, so a cut may be asymmetric.

use std::sync::Arc;

use bytes::Bytes;
use tandem_controller::{
    AlterPartitionRequest, ControllerError, CreateTopicRequest, HeartbeatReply, HeartbeatRequest,
    Metadata, PartitionState as ControllerPartition, RegisterReply, RegisterRequest,
};
use tandem_replication::{
    Acks, FetchData, FetchId, FetchRequest, NodeId, ProduceError, ProduceOk, ProduceRequest,
    ReadError,
};
use tandem_table::{
    Consistency, ReadAnswer, TableQuery, TableReadError, TableWrite, TableWriteError, Written,
};

/// A partition index of the simulated topic.
pub type Part = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    /// The controller voter in node `n`'s process.
    Voter(NodeId),
    Node(NodeId),
    /// Every client (producers and consumers) sits behind this one endpoint.
    Clients,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Voter(n) => write!(f, "v{n}"),
            Endpoint::Node(n) => write!(f, "n{n}"),
            Endpoint::Clients => write!(f, "clients"),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Payload {
    // ---- between replicas ----
    Fetch {
        part: Part,
        fetch_id: FetchId,
        request: FetchRequest,
    },
    FetchReply {
        part: Part,
        fetch_id: FetchId,
        response: Result<FetchData<Bytes>, ReadError>,
    },
    FlushReport {
        part: Part,
        leader_epoch: i32,
        flushed_offset: i64,
    },
    // ---- between controller voters: postcard bytes, as over TCP ----
    VoterCall {
        call: u64,
        request: Bytes,
    },
    /// `None`: the voter is down (connection refused).
    VoterCallReply {
        call: u64,
        response: Option<Bytes>,
    },
    /// The admin client creates the topic.
    CreateTopic(CreateTopicRequest),
    // ---- node <-> controller ----
    Register(RegisterRequest),
    RegisterReply(Result<RegisterReply, ControllerError>),
    Heartbeat {
        request: HeartbeatRequest,
        /// The node's own clock when it sent this: its lease counts from here (rule 8).
        sent_local_ms: i64,
        known_version: u64,
    },
    HeartbeatReply {
        sent_local_ms: i64,
        result: Result<HeartbeatReply, ControllerError>,
        metadata: Option<(u64, Arc<Metadata>)>,
    },
    AlterPartition {
        request_id: u64,
        part: Part,
        request: AlterPartitionRequest,
    },
    AlterPartitionReply {
        request_id: u64,
        part: Part,
        result: Result<ControllerPartition, ControllerError>,
    },
    /// The node's process exited (it said so, or its connection closed).
    NodeStopped {
        node_id: NodeId,
        incarnation: u64,
    },
    MetadataRequest,
    Metadata {
        version: u64,
        metadata: Arc<Metadata>,
    },
    // ---- clients <-> nodes ----
    Produce {
        client_request: u64,
        part: Part,
        request: ProduceRequest,
    },
    ProduceReply {
        client_request: u64,
        result: Result<ProduceOk, ProduceError>,
    },
    ConsumerFetch {
        client_request: u64,
        part: Part,
        request: FetchRequest,
    },
    ConsumerFetchReply {
        client_request: u64,
        result: Result<Bytes, ReadError>,
    },
    // ---- table clients <-> nodes ----
    KvWrite {
        client_request: u64,
        part: Part,
        write: TableWrite,
        acks: Acks,
        timeout_ms: i64,
        current_leader_epoch: Option<i32>,
    },
    KvWriteReply {
        client_request: u64,
        result: Result<Written, TableWriteError>,
    },
    /// A get or a scan of one partition (the server's per-partition request).
    KvRead {
        client_request: u64,
        part: Part,
        query: TableQuery,
        consistency: Consistency,
        wait_ms: i64,
    },
    KvReadReply {
        client_request: u64,
        result: Result<ReadAnswer, TableReadError>,
    },
}

impl Payload {
    /// A short name for the trace, without record bytes.
    pub fn describe(&self) -> String {
        match self {
            Payload::Fetch {
                part,
                fetch_id,
                request,
            } => format!(
                "Fetch p{part} #{} off {} last-epoch {:?} epoch {:?}",
                fetch_id.0,
                request.fetch_offset,
                request.last_fetched_epoch,
                request.current_leader_epoch
            ),
            Payload::FetchReply {
                part,
                fetch_id,
                response,
            } => match response {
                Ok(d) => format!(
                    "FetchReply p{part} #{} hw {} leo {} diverging {:?} {} bytes",
                    fetch_id.0,
                    d.high_watermark,
                    d.log_end_offset,
                    d.diverging_epoch,
                    d.records.len()
                ),
                Err(e) => format!("FetchReply p{part} #{} error {e:?}", fetch_id.0),
            },
            Payload::FlushReport {
                part,
                leader_epoch,
                flushed_offset,
            } => {
                format!("FlushReport p{part} epoch {leader_epoch} flushed {flushed_offset}")
            }
            Payload::VoterCall { call, request } => {
                format!(
                    "VoterCall #{call} {}",
                    crate::controller::describe_call(request)
                )
            }
            Payload::VoterCallReply { call, response } => format!(
                "VoterCallReply #{call} {}",
                crate::controller::describe_reply(response)
            ),
            Payload::CreateTopic(r) => format!("CreateTopic {}", r.name),
            Payload::Register(r) => format!("Register clean={}", r.previous_shutdown_clean),
            Payload::RegisterReply(r) => {
                format!("RegisterReply {:?}", r.as_ref().map(|r| r.incarnation))
            }
            Payload::Heartbeat { request, .. } => format!("Heartbeat inc {}", request.incarnation),
            Payload::HeartbeatReply {
                result, metadata, ..
            } => format!(
                "HeartbeatReply {:?} metadata {:?}",
                result.as_ref().map(|r| (r.status, r.lease_ms)),
                metadata.as_ref().map(|m| m.0)
            ),
            Payload::AlterPartition { part, request, .. } => format!(
                "AlterPartition p{part} epochs ({}, {}) isr {:?}",
                request.leader_epoch,
                request.partition_epoch,
                request
                    .new_isr
                    .iter()
                    .map(|m| m.node_id)
                    .collect::<Vec<_>>()
            ),
            Payload::AlterPartitionReply { part, result, .. } => format!(
                "AlterPartitionReply p{part} {:?}",
                result
                    .as_ref()
                    .map(|s| (s.leader_epoch, s.partition_epoch, &s.isr))
            ),
            Payload::NodeStopped {
                node_id,
                incarnation,
            } => {
                format!("NodeStopped n{node_id} inc {incarnation}")
            }
            Payload::MetadataRequest => "MetadataRequest".into(),
            Payload::Metadata { version, .. } => format!("Metadata v{version}"),
            Payload::Produce {
                client_request,
                part,
                request,
            } => format!(
                "Produce #{client_request} p{part} acks {:?} epoch {:?}",
                request.acks, request.current_leader_epoch
            ),
            Payload::ProduceReply {
                client_request,
                result,
            } => {
                format!("ProduceReply #{client_request} {result:?}")
            }
            Payload::ConsumerFetch {
                client_request,
                part,
                request,
            } => {
                format!(
                    "ConsumerFetch #{client_request} p{part} off {}",
                    request.fetch_offset
                )
            }
            Payload::ConsumerFetchReply {
                client_request,
                result,
            } => format!(
                "ConsumerFetchReply #{client_request} {:?}",
                result.as_ref().map(|b| b.len())
            ),
            Payload::KvWrite {
                client_request,
                part,
                write,
                acks,
                ..
            } => format!(
                "KvWrite #{client_request} p{part} {:?} value {:?} expect {:?} acks {acks:?}",
                write.key, write.value, write.expected
            ),
            Payload::KvWriteReply {
                client_request,
                result,
            } => format!("KvWriteReply #{client_request} {result:?}"),
            Payload::KvRead {
                client_request,
                part,
                query,
                consistency,
                ..
            } => format!("KvRead #{client_request} p{part} {query:?} {consistency:?}"),
            Payload::KvReadReply {
                client_request,
                result,
            } => format!(
                "KvReadReply #{client_request} {:?}",
                result.as_ref().map(|a| (
                    a.entries
                        .iter()
                        .map(|(k, e)| (k.clone(), e.value.clone(), e.version))
                        .collect::<Vec<_>>(),
                    &a.next,
                    a.token
                ))
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Message {
    pub from: Endpoint,
    pub to: Endpoint,
    /// A reply is for the process that asked: if the destination node restarted since, the
    /// connection is gone and so is the reply.
    pub to_generation: Option<u64>,
    pub payload: Payload,
}
