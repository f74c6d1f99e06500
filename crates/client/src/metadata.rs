//! The client's view of the cluster: brokers, topics, partitions, leaders and leader epochs.
//! Pure: built from Metadata responses, merged so that it never goes back to an older leader
//! epoch (a lagging node's answer cannot undo a failover the client already saw).

use std::collections::BTreeMap;

use tandem_protocol::errors;
use tandem_protocol::kafka_protocol::messages::MetadataResponse;

/// One partition as the cluster last described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    pub partition: u32,
    /// `None` while an election is in progress or the partition is offline.
    pub leader: Option<i32>,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    pub name: String,
    pub partitions: Vec<PartitionMetadata>,
}

/// Brokers and topics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterMetadata {
    /// node id → "host:port"
    pub brokers: BTreeMap<i32, String>,
    pub topics: BTreeMap<String, TopicMetadata>,
}

impl ClusterMetadata {
    /// From a Metadata response (all topics). Topics answered with an error are left out.
    pub fn from_response(response: &MetadataResponse) -> ClusterMetadata {
        let brokers = response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        let topics = response
            .topics
            .iter()
            .filter(|t| t.error_code == errors::NONE)
            .filter_map(|t| {
                let name = t.name.as_ref()?.0.to_string();
                let mut partitions: Vec<PartitionMetadata> = t
                    .partitions
                    .iter()
                    .filter(|p| p.partition_index >= 0)
                    .map(|p| PartitionMetadata {
                        partition: p.partition_index as u32,
                        leader: (p.leader_id.0 >= 0).then_some(p.leader_id.0),
                        leader_epoch: p.leader_epoch,
                        replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                        isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                        offline_replicas: p.offline_replicas.iter().map(|b| b.0).collect(),
                    })
                    .collect();
                partitions.sort_by_key(|p| p.partition);
                Some((name.clone(), TopicMetadata { name, partitions }))
            })
            .collect();
        ClusterMetadata { brokers, topics }
    }

    /// Takes a newer answer, except partitions it describes at an older leader epoch than we
    /// already know (that node has not heard of the latest election yet).
    pub fn merge(&mut self, newer: ClusterMetadata) {
        let mut old_topics = std::mem::take(&mut self.topics);
        self.brokers = newer.brokers;
        for (name, mut topic) in newer.topics {
            if let Some(old) = old_topics.remove(&name) {
                if old.partitions.len() == topic.partitions.len() {
                    for (new, old) in topic.partitions.iter_mut().zip(old.partitions) {
                        if old.leader_epoch > new.leader_epoch {
                            *new = old;
                        }
                    }
                }
            }
            self.topics.insert(name, topic);
        }
    }

    /// A produce or fetch answer named the current leader: believe it if it is newer.
    pub fn apply_leader_hint(&mut self, topic: &str, partition: u32, leader: i32, epoch: i32) {
        if leader < 0 || !self.brokers.contains_key(&leader) {
            return;
        }
        if let Some(p) = self
            .topics
            .get_mut(topic)
            .and_then(|t| t.partitions.get_mut(partition as usize))
        {
            if epoch > p.leader_epoch {
                p.leader = Some(leader);
                p.leader_epoch = epoch;
            }
        }
    }

    /// Forget the leader of a partition (it failed us); the next refresh fills it in.
    pub fn forget_leader(&mut self, topic: &str, partition: u32, epoch: i32) {
        if let Some(p) = self
            .topics
            .get_mut(topic)
            .and_then(|t| t.partitions.get_mut(partition as usize))
        {
            if p.leader_epoch == epoch {
                p.leader = None;
            }
        }
    }

    pub fn partition(&self, topic: &str, partition: u32) -> Option<&PartitionMetadata> {
        self.topics.get(topic)?.partitions.get(partition as usize)
    }

    pub fn partition_count(&self, topic: &str) -> Option<u32> {
        self.topics.get(topic).map(|t| t.partitions.len() as u32)
    }

    /// The leader's id, address and epoch.
    pub fn leader(&self, topic: &str, partition: u32) -> Option<(i32, &str, i32)> {
        let p = self.partition(topic, partition)?;
        let leader = p.leader?;
        Some((leader, self.brokers.get(&leader)?.as_str(), p.leader_epoch))
    }

    /// Any in-sync replica (leader included) with a known address, picked by `seed`: spreads
    /// reads that any replica may answer.
    pub fn any_replica(&self, topic: &str, partition: u32, seed: u64) -> Option<(i32, &str)> {
        let p = self.partition(topic, partition)?;
        let candidates: Vec<i32> = p
            .isr
            .iter()
            .copied()
            .filter(|r| self.brokers.contains_key(r))
            .collect();
        if candidates.is_empty() {
            return self.leader(topic, partition).map(|(id, a, _)| (id, a));
        }
        let id = candidates[(seed % candidates.len() as u64) as usize];
        Some((id, self.brokers.get(&id)?.as_str()))
    }

    /// A follower in the ISR to read from (spread by partition), else the leader.
    pub fn read_replica(&self, topic: &str, partition: u32) -> Option<(i32, &str, i32)> {
        let p = self.partition(topic, partition)?;
        let followers: Vec<i32> = p
            .isr
            .iter()
            .copied()
            .filter(|r| Some(*r) != p.leader && self.brokers.contains_key(r))
            .collect();
        if followers.is_empty() {
            return self.leader(topic, partition);
        }
        let id = followers[partition as usize % followers.len()];
        Some((id, self.brokers.get(&id)?.as_str(), p.leader_epoch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_protocol::kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use tandem_protocol::kafka_protocol::messages::{BrokerId, TopicName};
    use tandem_protocol::kafka_protocol::protocol::StrBytes;

    fn response(leader: i32, epoch: i32) -> MetadataResponse {
        let brokers = (1..=3)
            .map(|id| {
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(id))
                    .with_host(StrBytes::from_static_str("127.0.0.1"))
                    .with_port(9090 + id)
            })
            .collect();
        let partitions = (0..2)
            .map(|i| {
                MetadataResponsePartition::default()
                    .with_partition_index(i)
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(epoch)
                    .with_replica_nodes(vec![BrokerId(1), BrokerId(2), BrokerId(3)])
                    .with_isr_nodes(vec![BrokerId(1), BrokerId(2), BrokerId(3)])
            })
            .rev()
            .collect();
        let topics = vec![
            MetadataResponseTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("t"))))
                .with_partitions(partitions),
            MetadataResponseTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("missing"))))
                .with_error_code(errors::UNKNOWN_TOPIC_OR_PARTITION),
        ];
        MetadataResponse::default()
            .with_brokers(brokers)
            .with_topics(topics)
    }

    #[test]
    fn a_response_becomes_a_sorted_view_without_failed_topics() {
        let m = ClusterMetadata::from_response(&response(2, 5));
        assert_eq!(m.brokers[&2], "127.0.0.1:9092");
        assert_eq!(m.partition_count("t"), Some(2));
        assert_eq!(m.partition_count("missing"), None);
        assert_eq!(m.partition("t", 1).unwrap().partition, 1);
        assert_eq!(m.leader("t", 0), Some((2, "127.0.0.1:9092", 5)));
    }

    #[test]
    fn an_older_leader_epoch_never_replaces_a_newer_one() {
        let mut m = ClusterMetadata::from_response(&response(2, 5));
        m.merge(ClusterMetadata::from_response(&response(1, 4)));
        assert_eq!(m.leader("t", 0).unwrap().0, 2, "stale answer ignored");
        m.merge(ClusterMetadata::from_response(&response(3, 6)));
        assert_eq!(m.leader("t", 0).unwrap().0, 3, "newer answer taken");
        m.merge(ClusterMetadata::default());
        assert_eq!(m.partition_count("t"), None, "a deleted topic goes away");
    }

    #[test]
    fn leader_hints_apply_only_when_newer_and_known() {
        let mut m = ClusterMetadata::from_response(&response(2, 5));
        m.apply_leader_hint("t", 0, 3, 5);
        assert_eq!(m.leader("t", 0).unwrap().0, 2, "same epoch: no change");
        m.apply_leader_hint("t", 0, 9, 7);
        assert_eq!(m.leader("t", 0).unwrap().0, 2, "unknown broker: no change");
        m.apply_leader_hint("t", 0, 3, 6);
        assert_eq!(m.leader("t", 0), Some((3, "127.0.0.1:9093", 6)));
        m.forget_leader("t", 0, 5);
        assert!(
            m.leader("t", 0).is_some(),
            "forgetting an old epoch does nothing"
        );
        m.forget_leader("t", 0, 6);
        assert!(m.leader("t", 0).is_none());
    }

    #[test]
    fn follower_reads_pick_an_isr_member_other_than_the_leader() {
        let m = ClusterMetadata::from_response(&response(2, 5));
        for p in 0..2 {
            let (id, _, epoch) = m.read_replica("t", p).unwrap();
            assert_ne!(id, 2);
            assert_eq!(epoch, 5);
        }
    }
}
