//! What the active controller has done, counted for metrics (docs/observability.md): leader
//! elections, fencings by reason, ISR shrinks and expands, unclean elections. Counted when a
//! decision's records commit, so a refused or timed-out decision counts nothing.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::controller::{FenceReason, Report};
use crate::model::{Metadata, MetadataRecord};

/// Monotonic counters of one voter, over all the terms it was the active controller in.
#[derive(Debug, Default)]
pub struct ControllerCounters {
    /// Terms in which this voter became the active controller.
    pub became_active: AtomicU64,
    /// Partition leader changes to a new leader (leader epoch bumps with a leader).
    pub leader_elections: AtomicU64,
    /// Leader epoch bumps that left a partition without a leader.
    pub partitions_offline: AtomicU64,
    pub unclean_elections: AtomicU64,
    pub isr_shrinks: AtomicU64,
    pub isr_expands: AtomicU64,
    pub fenced_session_expired: AtomicU64,
    pub fenced_process_exited: AtomicU64,
    pub fenced_replaced: AtomicU64,
    pub registrations: AtomicU64,
}

/// The counts of one committed decision.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChangeCounts {
    pub leader_elections: u64,
    pub partitions_offline: u64,
    pub unclean_elections: u64,
    pub isr_shrinks: u64,
    pub isr_expands: u64,
    pub fenced_session_expired: u64,
    pub fenced_process_exited: u64,
    pub fenced_replaced: u64,
    pub registrations: u64,
}

impl ChangeCounts {
    /// What `records` (decided on `before`) and `reports` change. A partition change may
    /// count as an election and an ISR change at once.
    pub fn of(before: &Metadata, records: &[MetadataRecord], reports: &[Report]) -> ChangeCounts {
        let mut counts = ChangeCounts::default();
        for record in records {
            match record {
                MetadataRecord::ChangePartition {
                    topic_id,
                    partition,
                    expected_leader_epoch,
                    state,
                    ..
                } => {
                    if state.leader_epoch != *expected_leader_epoch {
                        match state.leader {
                            Some(_) => counts.leader_elections += 1,
                            None => counts.partitions_offline += 1,
                        }
                    }
                    if let Some(old) = before.partition(*topic_id, *partition) {
                        if old.isr.iter().any(|r| !state.isr.contains(r)) {
                            counts.isr_shrinks += 1;
                        }
                        if state.isr.iter().any(|r| !old.isr.contains(r)) {
                            counts.isr_expands += 1;
                        }
                    }
                }
                MetadataRecord::RegisterNode { .. } => counts.registrations += 1,
                _ => {}
            }
        }
        for report in reports {
            match report {
                Report::NodeFenced { reason, .. } => match reason {
                    FenceReason::SessionExpired => counts.fenced_session_expired += 1,
                    FenceReason::ProcessExited => counts.fenced_process_exited += 1,
                    FenceReason::Replaced => counts.fenced_replaced += 1,
                },
                Report::UncleanElection { .. } => counts.unclean_elections += 1,
                Report::PartitionOffline { .. } => {}
            }
        }
        counts
    }
}

impl ControllerCounters {
    pub fn add(&self, counts: &ChangeCounts) {
        let add = |counter: &AtomicU64, n: u64| {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        };
        add(&self.leader_elections, counts.leader_elections);
        add(&self.partitions_offline, counts.partitions_offline);
        add(&self.unclean_elections, counts.unclean_elections);
        add(&self.isr_shrinks, counts.isr_shrinks);
        add(&self.isr_expands, counts.isr_expands);
        add(&self.fenced_session_expired, counts.fenced_session_expired);
        add(&self.fenced_process_exited, counts.fenced_process_exited);
        add(&self.fenced_replaced, counts.fenced_replaced);
        add(&self.registrations, counts.registrations);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::model::{PartitionState, Topic, TopicConfig, TopicId, TopicKind};

    fn metadata_with(isr: &[i32]) -> Metadata {
        let mut metadata = Metadata::default();
        let id = TopicId(1);
        metadata.topics.insert(
            id,
            Topic {
                id,
                name: "t".into(),
                kind: TopicKind::Log,
                config: TopicConfig::default(),
                partitions: vec![PartitionState {
                    replicas: vec![1, 2, 3],
                    leader: Some(1),
                    isr: isr.iter().copied().collect(),
                    elr: BTreeSet::new(),
                    leader_epoch: 4,
                    partition_epoch: 9,
                    recovering: false,
                }],
            },
        );
        metadata
    }

    fn change(leader: Option<i32>, leader_epoch: i32, isr: &[i32]) -> MetadataRecord {
        MetadataRecord::ChangePartition {
            topic_id: TopicId(1),
            partition: 0,
            expected_leader_epoch: 4,
            expected_partition_epoch: 9,
            state: PartitionState {
                replicas: vec![1, 2, 3],
                leader,
                isr: isr.iter().copied().collect(),
                elr: BTreeSet::new(),
                leader_epoch,
                partition_epoch: 10,
                recovering: false,
            },
        }
    }

    #[test]
    fn a_failover_counts_an_election_a_shrink_and_the_fencing() {
        let before = metadata_with(&[1, 2, 3]);
        let records = [change(Some(2), 5, &[2, 3])];
        let reports = [Report::NodeFenced {
            node_id: 1,
            incarnation: 7,
            reason: FenceReason::ProcessExited,
        }];
        assert_eq!(
            ChangeCounts::of(&before, &records, &reports),
            ChangeCounts {
                leader_elections: 1,
                isr_shrinks: 1,
                fenced_process_exited: 1,
                ..ChangeCounts::default()
            }
        );
    }

    #[test]
    fn an_isr_expansion_is_no_election_and_losing_the_leader_is_offline() {
        let before = metadata_with(&[1, 2]);
        assert_eq!(
            ChangeCounts::of(&before, &[change(Some(1), 4, &[1, 2, 3])], &[]),
            ChangeCounts {
                isr_expands: 1,
                ..ChangeCounts::default()
            }
        );
        assert_eq!(
            ChangeCounts::of(&before, &[change(None, 5, &[])], &[]),
            ChangeCounts {
                partitions_offline: 1,
                isr_shrinks: 1,
                ..ChangeCounts::default()
            }
        );
    }
}
