//! Fully populated Kafka requests and responses for every API and version Tandem serves:
//! every array non-empty, every optional string set, every version-gated field set in the
//! versions that have it, unknown tagged fields at several levels. A field the schema walker
//! misses or misplaces makes these fail to decode.
#![allow(dead_code)]

pub mod tracker;

use bytes::Bytes;
#[allow(unused_imports)]
use kafka_protocol::messages::api_versions_request::*;
#[allow(unused_imports)]
use kafka_protocol::messages::api_versions_response::*;
#[allow(unused_imports)]
use kafka_protocol::messages::create_topics_request::*;
#[allow(unused_imports)]
use kafka_protocol::messages::create_topics_response::*;
#[allow(unused_imports)]
use kafka_protocol::messages::delete_topics_request::*;
#[allow(unused_imports)]
use kafka_protocol::messages::delete_topics_response::*;
#[allow(unused_imports)]
use kafka_protocol::messages::describe_cluster_request::*;
#[allow(unused_imports)]
use kafka_protocol::messages::describe_cluster_response::*;
#[allow(unused_imports)]
use kafka_protocol::messages::fetch_request::*;
#[allow(unused_imports)]
use kafka_protocol::messages::fetch_response::*;
#[allow(unused_imports)]
use kafka_protocol::messages::init_producer_id_request::*;
#[allow(unused_imports)]
use kafka_protocol::messages::init_producer_id_response::*;
#[allow(unused_imports)]
use kafka_protocol::messages::list_offsets_request::*;
#[allow(unused_imports)]
use kafka_protocol::messages::list_offsets_response::*;
#[allow(unused_imports)]
use kafka_protocol::messages::metadata_request::*;
#[allow(unused_imports)]
use kafka_protocol::messages::metadata_response::*;
#[allow(unused_imports)]
use kafka_protocol::messages::offset_for_leader_epoch_request::*;
#[allow(unused_imports)]
use kafka_protocol::messages::offset_for_leader_epoch_response::*;
#[allow(unused_imports)]
use kafka_protocol::messages::produce_request::*;
#[allow(unused_imports)]
use kafka_protocol::messages::produce_response::*;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use tandem_protocol::{supported_versions, ApiKey, RequestKind, ResponseKind};

pub fn s(v: &'static str) -> StrBytes {
    StrBytes::from_static_str(v)
}

pub fn topic(v: &'static str) -> TopicName {
    TopicName(s(v))
}

/// An unknown tagged field, only in flexible versions.
fn tags(flexible: bool) -> std::collections::BTreeMap<i32, Bytes> {
    let mut m = std::collections::BTreeMap::new();
    if flexible {
        m.insert(99, Bytes::from_static(b"xyz"));
    }
    m
}

pub fn all_versions() -> Vec<(ApiKey, i16)> {
    supported_versions()
        .iter()
        .flat_map(|&(k, lo, hi)| (lo..=hi).map(move |v| (k, v)))
        .collect()
}

pub fn request(key: ApiKey, v: i16) -> RequestKind {
    match key {
        ApiKey::ApiVersions => {
            let mut r = ApiVersionsRequest::default();
            if v >= 3 {
                r.client_software_name = s("librdkafka");
                r.client_software_version = s("2.3.0");
                r.unknown_tagged_fields = tags(true);
            }
            RequestKind::ApiVersions(r)
        }
        ApiKey::Metadata => {
            let fx = v >= 9;
            let mut t = MetadataRequestTopic::default();
            t.name = Some(topic("orders"));
            t.unknown_tagged_fields = tags(fx);
            let mut r = MetadataRequest::default();
            r.topics = Some(vec![t.clone(), t]);
            if v >= 4 {
                r.allow_auto_topic_creation = false;
            }
            if (8..=10).contains(&v) {
                r.include_cluster_authorized_operations = true;
            }
            if v >= 8 {
                r.include_topic_authorized_operations = true;
            }
            r.unknown_tagged_fields = tags(fx);
            RequestKind::Metadata(r)
        }
        ApiKey::Produce => {
            let fx = v >= 9;
            let mut p = PartitionProduceData::default();
            p.index = 3;
            p.records = Some(Bytes::from_static(b"\x00\x01record-batch-bytes"));
            p.unknown_tagged_fields = tags(fx);
            let mut t = TopicProduceData::default();
            t.name = topic("orders");
            t.partition_data = vec![p.clone(), p];
            t.unknown_tagged_fields = tags(fx);
            let mut r = ProduceRequest::default();
            r.transactional_id = Some(TransactionalId(s("tx-1")));
            r.acks = -1;
            r.timeout_ms = 1500;
            r.topic_data = vec![t];
            r.unknown_tagged_fields = tags(fx);
            RequestKind::Produce(r)
        }
        ApiKey::Fetch => {
            let fx = v >= 12;
            let mut p = FetchPartition::default();
            p.partition = 2;
            if v >= 9 {
                p.current_leader_epoch = 7;
            }
            p.fetch_offset = 1234;
            if v >= 12 {
                p.last_fetched_epoch = 6;
            }
            if v >= 5 {
                p.log_start_offset = 10;
            }
            p.partition_max_bytes = 1 << 20;
            p.unknown_tagged_fields = tags(fx);
            let mut t = FetchTopic::default();
            t.topic = topic("orders");
            t.partitions = vec![p];
            t.unknown_tagged_fields = tags(fx);
            let mut r = FetchRequest::default();
            r.replica_id = BrokerId(2);
            r.max_wait_ms = 500;
            r.min_bytes = 1;
            r.max_bytes = 50 << 20;
            r.isolation_level = 1;
            if v >= 7 {
                r.session_id = 0;
                r.session_epoch = -1;
                let mut f = ForgottenTopic::default();
                f.topic = topic("old");
                f.partitions = vec![1, 2, 3];
                f.unknown_tagged_fields = tags(fx);
                r.forgotten_topics_data = vec![f];
            }
            r.topics = vec![t];
            if v >= 11 {
                r.rack_id = s("rack-a");
            }
            if v >= 12 {
                r.cluster_id = Some(s("cluster-x"));
            }
            r.unknown_tagged_fields = tags(fx);
            RequestKind::Fetch(r)
        }
        ApiKey::ListOffsets => {
            let fx = v >= 6;
            let mut p = ListOffsetsPartition::default();
            p.partition_index = 1;
            if v >= 4 {
                p.current_leader_epoch = 3;
            }
            p.timestamp = -2;
            p.unknown_tagged_fields = tags(fx);
            let mut t = ListOffsetsTopic::default();
            t.name = topic("orders");
            t.partitions = vec![p];
            t.unknown_tagged_fields = tags(fx);
            let mut r = ListOffsetsRequest::default();
            r.replica_id = BrokerId(-1);
            if v >= 2 {
                r.isolation_level = 1;
            }
            r.topics = vec![t];
            if v >= 10 {
                r.timeout_ms = 100;
            }
            r.unknown_tagged_fields = tags(fx);
            RequestKind::ListOffsets(r)
        }
        ApiKey::CreateTopics => {
            let fx = v >= 5;
            let mut a = CreatableReplicaAssignment::default();
            a.partition_index = 0;
            a.broker_ids = vec![BrokerId(1), BrokerId(2)];
            a.unknown_tagged_fields = tags(fx);
            let mut c = CreatableTopicConfig::default();
            c.name = s("min.insync.replicas");
            c.value = Some(s("2"));
            c.unknown_tagged_fields = tags(fx);
            let mut t = CreatableTopic::default();
            t.name = topic("orders");
            t.num_partitions = -1;
            t.replication_factor = -1;
            t.assignments = vec![a];
            t.configs = vec![c];
            t.unknown_tagged_fields = tags(fx);
            let mut r = CreateTopicsRequest::default();
            r.topics = vec![t];
            r.timeout_ms = 30_000;
            r.validate_only = true;
            r.unknown_tagged_fields = tags(fx);
            RequestKind::CreateTopics(r)
        }
        ApiKey::DeleteTopics => {
            let mut r = DeleteTopicsRequest::default();
            r.topic_names = vec![topic("a"), topic("b")];
            r.timeout_ms = 5000;
            r.unknown_tagged_fields = tags(v >= 4);
            RequestKind::DeleteTopics(r)
        }
        ApiKey::InitProducerId => {
            let mut r = InitProducerIdRequest::default();
            r.transactional_id = Some(TransactionalId(s("tx")));
            r.transaction_timeout_ms = 60_000;
            if v >= 3 {
                r.producer_id = ProducerId(77);
                r.producer_epoch = 3;
            }
            r.unknown_tagged_fields = tags(v >= 2);
            RequestKind::InitProducerId(r)
        }
        ApiKey::DescribeCluster => {
            let mut r = DescribeClusterRequest::default();
            r.include_cluster_authorized_operations = true;
            if v >= 1 {
                r.endpoint_type = 2;
            }
            if v >= 2 {
                r.include_fenced_brokers = true;
            }
            r.unknown_tagged_fields = tags(true);
            RequestKind::DescribeCluster(r)
        }
        ApiKey::OffsetForLeaderEpoch => {
            let fx = v >= 4;
            let mut p = OffsetForLeaderPartition::default();
            p.partition = 0;
            p.current_leader_epoch = 9;
            p.leader_epoch = 8;
            p.unknown_tagged_fields = tags(fx);
            let mut t = OffsetForLeaderTopic::default();
            t.topic = topic("orders");
            t.partitions = vec![p];
            t.unknown_tagged_fields = tags(fx);
            let mut r = OffsetForLeaderEpochRequest::default();
            if v >= 3 {
                r.replica_id = BrokerId(3);
            }
            r.topics = vec![t];
            r.unknown_tagged_fields = tags(fx);
            RequestKind::OffsetForLeaderEpoch(r)
        }
        other => panic!("no fixture for {other:?}"),
    }
}

pub fn response(key: ApiKey, v: i16) -> ResponseKind {
    match key {
        ApiKey::ApiVersions => {
            let mut r = tandem_protocol::api_versions_response();
            if v >= 1 {
                r.throttle_time_ms = 5;
            }
            if v >= 3 {
                let mut sf = api_versions_response::SupportedFeatureKey::default();
                sf.name = s("metadata.version");
                sf.min_version = 1;
                sf.max_version = 20;
                r.supported_features = vec![sf];
                let mut ff = api_versions_response::FinalizedFeatureKey::default();
                ff.name = s("metadata.version");
                ff.min_version_level = 1;
                ff.max_version_level = 20;
                r.finalized_features = vec![ff];
                r.finalized_features_epoch = 42;
                r.zk_migration_ready = true;
                r.unknown_tagged_fields = tags(true);
            }
            ResponseKind::ApiVersions(r)
        }
        ApiKey::Metadata => {
            let fx = v >= 9;
            let mut b = MetadataResponseBroker::default();
            b.node_id = BrokerId(1);
            b.host = s("127.0.0.1");
            b.port = 9092;
            if v >= 1 {
                b.rack = Some(s("r1"));
            }
            b.unknown_tagged_fields = tags(fx);
            let mut p = MetadataResponsePartition::default();
            p.error_code = 0;
            p.partition_index = 0;
            p.leader_id = BrokerId(1);
            if v >= 7 {
                p.leader_epoch = 4;
            }
            p.replica_nodes = vec![BrokerId(1), BrokerId(2), BrokerId(3)];
            p.isr_nodes = vec![BrokerId(1), BrokerId(2)];
            if v >= 5 {
                p.offline_replicas = vec![BrokerId(3)];
            }
            p.unknown_tagged_fields = tags(fx);
            let mut t = MetadataResponseTopic::default();
            t.name = Some(topic("orders"));
            if v >= 1 {
                t.is_internal = false;
            }
            t.partitions = vec![p.clone(), p];
            if v >= 8 {
                t.topic_authorized_operations = 8;
            }
            t.unknown_tagged_fields = tags(fx);
            let mut r = MetadataResponse::default();
            if v >= 3 {
                r.throttle_time_ms = 1;
            }
            r.brokers = vec![b];
            if v >= 2 {
                r.cluster_id = Some(s("cluster-x"));
            }
            if v >= 1 {
                r.controller_id = BrokerId(1);
            }
            r.topics = vec![t];
            if (8..=10).contains(&v) {
                r.cluster_authorized_operations = 5;
            }
            r.unknown_tagged_fields = tags(fx);
            ResponseKind::Metadata(r)
        }
        ApiKey::Produce => {
            let fx = v >= 9;
            let mut p = PartitionProduceResponse::default();
            p.index = 3;
            p.error_code = 6;
            p.base_offset = 100;
            p.log_append_time_ms = -1;
            if v >= 5 {
                p.log_start_offset = 0;
            }
            if v >= 8 {
                let mut e = BatchIndexAndErrorMessage::default();
                e.batch_index = 2;
                e.batch_index_error_message = Some(s("bad record"));
                e.unknown_tagged_fields = tags(fx);
                p.record_errors = vec![e];
                p.error_message = Some(s("not leader"));
            }
            if v >= 10 {
                let mut l = produce_response::LeaderIdAndEpoch::default();
                l.leader_id = BrokerId(2);
                l.leader_epoch = 9;
                l.unknown_tagged_fields = tags(fx);
                p.current_leader = l;
            }
            p.unknown_tagged_fields = tags(fx);
            let mut t = TopicProduceResponse::default();
            t.name = topic("orders");
            t.partition_responses = vec![p];
            t.unknown_tagged_fields = tags(fx);
            let mut r = ProduceResponse::default();
            r.responses = vec![t];
            r.throttle_time_ms = 0;
            if v >= 10 {
                let mut n = produce_response::NodeEndpoint::default();
                n.node_id = BrokerId(2);
                n.host = s("10.0.0.2");
                n.port = 9092;
                n.rack = Some(s("r2"));
                n.unknown_tagged_fields = tags(fx);
                r.node_endpoints = vec![n];
            }
            r.unknown_tagged_fields = tags(fx);
            ResponseKind::Produce(r)
        }
        ApiKey::Fetch => {
            let fx = v >= 12;
            let mut a = fetch_response::AbortedTransaction::default();
            a.producer_id = ProducerId(5);
            a.first_offset = 10;
            a.unknown_tagged_fields = tags(fx);
            let mut p = PartitionData::default();
            p.partition_index = 2;
            p.error_code = 0;
            p.high_watermark = 900;
            p.last_stable_offset = 900;
            if v >= 5 {
                p.log_start_offset = 3;
            }
            p.aborted_transactions = Some(vec![a]);
            if v >= 11 {
                p.preferred_read_replica = BrokerId(2);
            }
            p.records = Some(Bytes::from_static(b"batches"));
            if v >= 12 {
                let mut d = fetch_response::EpochEndOffset::default();
                d.epoch = 4;
                d.end_offset = 880;
                d.unknown_tagged_fields = tags(fx);
                p.diverging_epoch = d;
                let mut l = fetch_response::LeaderIdAndEpoch::default();
                l.leader_id = BrokerId(1);
                l.leader_epoch = 5;
                p.current_leader = l;
                let mut sn = fetch_response::SnapshotId::default();
                sn.end_offset = 50;
                sn.epoch = 2;
                p.snapshot_id = sn;
            }
            p.unknown_tagged_fields = tags(fx);
            let mut t = FetchableTopicResponse::default();
            t.topic = topic("orders");
            t.partitions = vec![p.clone(), p];
            t.unknown_tagged_fields = tags(fx);
            let mut r = FetchResponse::default();
            r.throttle_time_ms = 0;
            if v >= 7 {
                r.error_code = 0;
                r.session_id = 12;
            }
            r.responses = vec![t];
            r.unknown_tagged_fields = tags(fx);
            ResponseKind::Fetch(r)
        }
        ApiKey::ListOffsets => {
            let fx = v >= 6;
            let mut p = ListOffsetsPartitionResponse::default();
            p.partition_index = 1;
            p.error_code = 78;
            p.timestamp = -1;
            p.offset = 55;
            if v >= 4 {
                p.leader_epoch = 3;
            }
            p.unknown_tagged_fields = tags(fx);
            let mut t = ListOffsetsTopicResponse::default();
            t.name = topic("orders");
            t.partitions = vec![p];
            t.unknown_tagged_fields = tags(fx);
            let mut r = ListOffsetsResponse::default();
            if v >= 2 {
                r.throttle_time_ms = 1;
            }
            r.topics = vec![t];
            r.unknown_tagged_fields = tags(fx);
            ResponseKind::ListOffsets(r)
        }
        ApiKey::CreateTopics => {
            let fx = v >= 5;
            let mut t = CreatableTopicResult::default();
            t.name = topic("orders");
            t.error_code = 36;
            t.error_message = Some(s("exists"));
            if v >= 5 {
                t.topic_config_error_code = 40;
                t.num_partitions = 3;
                t.replication_factor = 3;
                let mut c = CreatableTopicConfigs::default();
                c.name = s("cleanup.policy");
                c.value = Some(s("delete"));
                c.read_only = true;
                c.config_source = 5;
                c.is_sensitive = false;
                c.unknown_tagged_fields = tags(fx);
                t.configs = Some(vec![c]);
            }
            t.unknown_tagged_fields = tags(fx);
            let mut r = CreateTopicsResponse::default();
            r.throttle_time_ms = 1;
            r.topics = vec![t];
            r.unknown_tagged_fields = tags(fx);
            ResponseKind::CreateTopics(r)
        }
        ApiKey::DeleteTopics => {
            let fx = v >= 4;
            let mut t = DeletableTopicResult::default();
            t.name = Some(topic("orders"));
            t.error_code = 3;
            if v >= 5 {
                t.error_message = Some(s("unknown"));
            }
            t.unknown_tagged_fields = tags(fx);
            let mut r = DeleteTopicsResponse::default();
            r.throttle_time_ms = 1;
            r.responses = vec![t];
            r.unknown_tagged_fields = tags(fx);
            ResponseKind::DeleteTopics(r)
        }
        ApiKey::InitProducerId => {
            let mut r = InitProducerIdResponse::default();
            r.throttle_time_ms = 1;
            r.error_code = 0;
            r.producer_id = ProducerId(1000);
            r.producer_epoch = 0;
            r.unknown_tagged_fields = tags(v >= 2);
            ResponseKind::InitProducerId(r)
        }
        ApiKey::DescribeCluster => {
            let mut b = DescribeClusterBroker::default();
            b.broker_id = BrokerId(1);
            b.host = s("localhost");
            b.port = 9092;
            b.rack = Some(s("r1"));
            if v >= 2 {
                b.is_fenced = true;
            }
            b.unknown_tagged_fields = tags(true);
            let mut r = DescribeClusterResponse::default();
            r.error_message = Some(s("fine"));
            if v >= 1 {
                r.endpoint_type = 1;
            }
            r.cluster_id = s("cluster-x");
            r.controller_id = BrokerId(1);
            r.brokers = vec![b.clone(), b];
            r.cluster_authorized_operations = 3;
            r.unknown_tagged_fields = tags(true);
            ResponseKind::DescribeCluster(r)
        }
        ApiKey::OffsetForLeaderEpoch => {
            let fx = v >= 4;
            let mut p = offset_for_leader_epoch_response::EpochEndOffset::default();
            p.error_code = 0;
            p.partition = 0;
            p.leader_epoch = 8;
            p.end_offset = 777;
            p.unknown_tagged_fields = tags(fx);
            let mut t = OffsetForLeaderTopicResult::default();
            t.topic = topic("orders");
            t.partitions = vec![p];
            t.unknown_tagged_fields = tags(fx);
            let mut r = OffsetForLeaderEpochResponse::default();
            r.throttle_time_ms = 1;
            r.topics = vec![t];
            r.unknown_tagged_fields = tags(fx);
            ResponseKind::OffsetForLeaderEpoch(r)
        }
        other => panic!("no fixture for {other:?}"),
    }
}

pub fn header(key: ApiKey, v: i16, correlation_id: i32) -> RequestHeader {
    let mut h = RequestHeader::default();
    h.request_api_key = key as i16;
    h.request_api_version = v;
    h.correlation_id = correlation_id;
    h.client_id = Some(s("test-client"));
    h
}

/// A valid encoded request frame (no length prefix) for this key and version.
pub fn request_frame(key: ApiKey, v: i16) -> Bytes {
    tandem_protocol::encode_request(&header(key, v, 7), &request(key, v))
        .unwrap_or_else(|e| panic!("{key:?} v{v}: {e}"))
}
