//! A real cluster: three `tandem server` processes on loopback, driven over Kafka's wire
//! protocol. Topic creation, acks=all produce, SIGKILL of the leader, failover, and the oracle:
//! every acknowledged record is still there exactly once, at its offset.

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use common::{kafka, name, wait_for, Cluster};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, FetchRequest, MetadataRequest, ProduceRequest, RequestKind,
    ResponseKind,
};
use kafka_protocol::protocol::StrBytes;
use tandem_storage::batch::{decode_records, split_batches};
use tandem_storage::BatchBuilder;

/// (leader id, ISR size) of partition 0, as `address` sees it.
fn leader_of(address: &str, topic: &str) -> Option<(i32, usize)> {
    let request = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(name(topic))),
    ]));
    let Some(ResponseKind::Metadata(response)) =
        kafka(address, ApiKey::Metadata, 9, RequestKind::Metadata(request))
    else {
        return None;
    };
    let partition = response.topics.first()?.partitions.first()?;
    (partition.error_code == 0 && partition.leader_id.0 >= 0)
        .then_some((partition.leader_id.0, partition.isr_nodes.len()))
}

/// The idempotent producer's id, from InitProducerId.
fn producer_id(address: &str) -> Option<i64> {
    let request = kafka_protocol::messages::InitProducerIdRequest::default()
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(kafka_protocol::messages::ProducerId(-1))
        .with_producer_epoch(-1);
    match kafka(
        address,
        ApiKey::InitProducerId,
        2,
        RequestKind::InitProducerId(request),
    ) {
        Some(ResponseKind::InitProducerId(r)) if r.error_code == 0 => Some(r.producer_id.0),
        _ => None,
    }
}

/// Produces one record with acks=all as an idempotent producer (so that a retry after an
/// indeterminate answer cannot write it twice); the base offset, or the error code.
fn produce(
    address: &str,
    topic: &str,
    value: &str,
    producer_id: i64,
    sequence: i32,
) -> Result<i64, i16> {
    let mut builder = BatchBuilder::new(0).producer(producer_id, 0, sequence);
    builder.push(0, None, Some(value.as_bytes()));
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(builder.build().freeze()))])]);
    match kafka(address, ApiKey::Produce, 7, RequestKind::Produce(request)) {
        Some(ResponseKind::Produce(response)) => {
            let p = &response.responses[0].partition_responses[0];
            if p.error_code == 0 {
                Ok(p.base_offset)
            } else {
                Err(p.error_code)
            }
        }
        _ => Err(-1),
    }
}

/// Every committed (offset, value) of partition 0, read from `address` as a consumer.
fn consume_all(address: &str, topic: &str) -> Option<Vec<(i64, String)>> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let request = FetchRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(offset)
                    .with_current_leader_epoch(-1)
                    .with_last_fetched_epoch(-1)
                    .with_partition_max_bytes(1 << 20)])]);
        let Some(ResponseKind::Fetch(response)) =
            kafka(address, ApiKey::Fetch, 11, RequestKind::Fetch(request))
        else {
            return None;
        };
        let partition = &response.responses.first()?.partitions.first()?;
        if partition.error_code != 0 {
            return None;
        }
        let records = partition.records.clone().unwrap_or_default();
        if records.is_empty() {
            return Some(out);
        }
        for (header, raw) in split_batches(&records).map_while(Result::ok) {
            for record in decode_records(&Bytes::copy_from_slice(raw)).ok()? {
                let value = String::from_utf8_lossy(record.value.as_deref().unwrap_or_default())
                    .into_owned();
                out.push((header.base_offset + record.offset_delta as i64, value));
            }
            offset = header.next_offset();
        }
    }
}

#[test]
fn acknowledged_writes_survive_sigkill_of_the_leader() {
    let started = Instant::now();
    let mut cluster = Cluster::start();
    let first = cluster.servers[0].address.clone();
    let create = CreateTopicsRequest::default()
        .with_timeout_ms(5_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(name("events"))
            .with_num_partitions(1)
            .with_replication_factor(3)
            .with_configs(vec![CreatableTopicConfig::default()
                .with_name(StrBytes::from_static_str("min.insync.replicas"))
                .with_value(Some(StrBytes::from_static_str("2")))])]);
    wait_for("the topic to be created", || {
        match kafka(
            &first,
            ApiKey::CreateTopics,
            5,
            RequestKind::CreateTopics(create.clone()),
        ) {
            Some(ResponseKind::CreateTopics(r)) if r.topics[0].error_code == 0 => Some(()),
            Some(ResponseKind::CreateTopics(r)) if r.topics[0].error_code == 36 => Some(()),
            _ => None,
        }
    });
    eprintln!("{:?}: topic created", started.elapsed());
    let leader = wait_for("a leader with a full ISR", || {
        leader_of(&first, "events")
            .filter(|(_, isr)| *isr == 3)
            .map(|(l, _)| l)
    });
    eprintln!("{:?}: leader {leader} with a full ISR", started.elapsed());
    let producer = wait_for("a producer id", || producer_id(&first));
    let mut acknowledged = BTreeMap::new();
    for i in 0..30 {
        let value = format!("event-{i}");
        let offset = wait_for("an acks=all write", || {
            produce(&cluster.address_of(leader), "events", &value, producer, i).ok()
        });
        acknowledged.insert(offset, value);
    }
    eprintln!("{:?}: 30 writes acknowledged", started.elapsed());

    // SIGKILL: no controlled shutdown, no goodbye.
    cluster.kill(leader);
    let killed_at = Instant::now();
    let survivor = cluster
        .servers
        .iter()
        .find(|s| s.id != leader)
        .unwrap()
        .address
        .clone();
    let new_leader = wait_for("a new leader", || {
        leader_of(&survivor, "events")
            .map(|(l, _)| l)
            .filter(|l| *l != leader)
    });
    let new_address = cluster.address_of(new_leader);
    let offset = wait_for("a write on the new leader", || {
        produce(&new_address, "events", "after", producer, 30).ok()
    });
    let failover = killed_at.elapsed();
    acknowledged.insert(offset, "after".into());
    eprintln!("SIGKILL of the leader to the first acknowledged acks=all write: {failover:?}");

    let read = wait_for("a full read", || consume_all(&new_address, "events"));
    let read: BTreeMap<i64, String> = {
        let mut seen = BTreeMap::new();
        for (offset, value) in read {
            assert!(
                seen.insert(offset, value).is_none(),
                "offset {offset} read twice"
            );
        }
        seen
    };
    for (offset, value) in &acknowledged {
        assert_eq!(
            read.get(offset),
            Some(value),
            "acknowledged record at {offset} lost or changed"
        );
    }
    let values: std::collections::BTreeSet<&String> = read.values().collect();
    assert_eq!(values.len(), read.len(), "a record was written twice");
}
