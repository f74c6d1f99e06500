//! The cluster's timeline: elections, ISR shrinks and expands, fencings, unclean elections,
//! derived by diffing successive committed metadata ([`diff`]). Every node applies the same
//! committed metadata, so every node derives the same events (timestamps are when this node
//! applied them); a node keeps the last [`EVENTS_KEPT`].

use std::collections::{BTreeSet, VecDeque};

use parking_lot::Mutex;
use serde_json::{json, Value};
use tandem_controller::{Metadata, NodeStatus};

/// How many events a node keeps for `/api/events`.
pub const EVENTS_KEPT: usize = 500;

/// What happened, as a diff of committed metadata shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// One of the `kind` names in docs/observability.md.
    pub kind: &'static str,
    /// Does this event put data at risk (offline, below min ISR, unclean election)?
    pub severity: Severity,
    pub topic: Option<String>,
    pub partition: Option<u32>,
    pub node: Option<i32>,
    pub leader: Option<i32>,
    pub leader_epoch: Option<i32>,
    pub isr: Option<Vec<i32>>,
    /// One line for people.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warning,
    Danger,
}

impl Severity {
    fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Danger => "danger",
        }
    }
}

impl Event {
    fn new(kind: &'static str, severity: Severity, message: String) -> Event {
        Event {
            kind,
            severity,
            topic: None,
            partition: None,
            node: None,
            leader: None,
            leader_epoch: None,
            isr: None,
            message,
        }
    }
}

impl Event {
    /// This node found another voter to be the active controller (not from metadata: the
    /// controller's own election is Raft's, outside the metadata).
    pub fn controller_changed(before: u64, now: u64) -> Event {
        Event {
            node: Some(now as i32),
            ..Event::new(
                "controller_changed",
                Severity::Info,
                format!("active controller is now node {now} (was node {before})"),
            )
        }
    }
}

fn list(ids: &BTreeSet<i32>) -> String {
    let ids: Vec<String> = ids.iter().map(i32::to_string).collect();
    format!("[{}]", ids.join(","))
}

/// The events between two committed versions of the metadata, in a stable order: nodes, then
/// topics, then partitions.
pub fn diff(old: &Metadata, new: &Metadata) -> Vec<Event> {
    let mut events = Vec::new();
    for (id, node) in &new.nodes {
        let before = old.nodes.get(id);
        let node_event = |kind, severity, message| Event {
            node: Some(*id),
            ..Event::new(kind, severity, message)
        };
        if before.is_none_or(|b| b.incarnation != node.incarnation) {
            events.push(node_event(
                "node_registered",
                Severity::Info,
                format!("node {id} registered (incarnation {})", node.incarnation),
            ));
        } else if before.is_some_and(|b| b.status != node.status) {
            match node.status {
                NodeStatus::Fenced => events.push(node_event(
                    "node_fenced",
                    Severity::Warning,
                    format!(
                        "node {id} fenced (incarnation {}): out of every ISR, leads nothing",
                        node.incarnation
                    ),
                )),
                NodeStatus::ShuttingDown => events.push(node_event(
                    "node_shutting_down",
                    Severity::Info,
                    format!("node {id} is shutting down (controlled)"),
                )),
                NodeStatus::Live => {}
            }
        }
    }
    for (id, topic) in &new.topics {
        if !old.topics.contains_key(id) {
            events.push(Event {
                topic: Some(topic.name.clone()),
                ..Event::new(
                    "topic_created",
                    Severity::Info,
                    format!(
                        "topic {} created ({} partitions)",
                        topic.name,
                        topic.partitions.len()
                    ),
                )
            });
        }
    }
    for (id, topic) in &old.topics {
        if !new.topics.contains_key(id) {
            events.push(Event {
                topic: Some(topic.name.clone()),
                ..Event::new(
                    "topic_deleted",
                    Severity::Info,
                    format!("topic {} deleted", topic.name),
                )
            });
        }
    }
    for (topic, index, state) in new.partitions() {
        let Some(before) = old.partition(topic.id, index) else {
            continue;
        };
        let name = format!("{}-{index}", topic.name);
        let min_insync = topic.config.min_insync_replicas as usize;
        let event = |kind, severity, message| Event {
            topic: Some(topic.name.clone()),
            partition: Some(index),
            leader: state.leader,
            leader_epoch: Some(state.leader_epoch),
            isr: Some(state.isr.iter().copied().collect()),
            ..Event::new(kind, severity, message)
        };
        if state.leader_epoch != before.leader_epoch {
            let from = before
                .leader
                .map_or("none".to_string(), |l| format!("node {l}"));
            match state.leader {
                None => events.push(event(
                    "partition_offline",
                    Severity::Danger,
                    format!("{name} has no leader (was {from}): no eligible replica is live"),
                )),
                Some(leader) if state.recovering && !before.recovering => events.push(event(
                    "unclean_election",
                    Severity::Danger,
                    format!(
                        "{name}: UNCLEAN election of node {leader} (epoch {}, was {from}): committed data may be lost",
                        state.leader_epoch
                    ),
                )),
                Some(leader) => events.push(event(
                    "leader_elected",
                    Severity::Info,
                    format!(
                        "{name}: node {leader} leads epoch {} (was {from})",
                        state.leader_epoch
                    ),
                )),
            }
        }
        let removed: BTreeSet<i32> = before.isr.difference(&state.isr).copied().collect();
        let added: BTreeSet<i32> = state.isr.difference(&before.isr).copied().collect();
        if !removed.is_empty() {
            let below = state.isr.len() < min_insync;
            events.push(event(
                "isr_shrink",
                if below {
                    Severity::Danger
                } else {
                    Severity::Warning
                },
                format!(
                    "{name}: ISR shrank to {} (out: {}){}",
                    list(&state.isr),
                    list(&removed),
                    if below {
                        format!(", below min.insync.replicas={min_insync}")
                    } else {
                        String::new()
                    }
                ),
            ));
        }
        if !added.is_empty() {
            events.push(event(
                "isr_expand",
                Severity::Info,
                format!(
                    "{name}: ISR expanded to {} (in: {})",
                    list(&state.isr),
                    list(&added)
                ),
            ));
        }
        if before.recovering && !state.recovering {
            events.push(event(
                "recovered",
                Severity::Info,
                format!("{name}: no longer recovering"),
            ));
        }
    }
    events
}

/// An event as this node recorded it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Increasing per node, from 1: `/api/events?since=N` returns those above N.
    pub seq: u64,
    pub unix_ms: i64,
    pub metadata_version: u64,
    pub event: Event,
}

impl Recorded {
    pub fn to_json(&self) -> Value {
        let e = &self.event;
        json!({
            "seq": self.seq,
            "time_ms": self.unix_ms,
            "metadata_version": self.metadata_version,
            "kind": e.kind,
            "severity": e.severity.name(),
            "topic": e.topic,
            "partition": e.partition,
            "node": e.node,
            "leader": e.leader,
            "leader_epoch": e.leader_epoch,
            "isr": e.isr,
            "message": e.message,
        })
    }
}

/// The last [`EVENTS_KEPT`] events of this node.
#[derive(Debug, Default)]
pub struct EventLog {
    state: Mutex<(u64, VecDeque<Recorded>)>,
}

impl EventLog {
    pub fn push(&self, unix_ms: i64, metadata_version: u64, event: Event) {
        let mut state = self.state.lock();
        let (seq, events) = &mut *state;
        *seq += 1;
        events.push_back(Recorded {
            seq: *seq,
            unix_ms,
            metadata_version,
            event,
        });
        while events.len() > EVENTS_KEPT {
            events.pop_front();
        }
    }

    /// The events after `since` (a `seq`), oldest first.
    pub fn since(&self, since: u64) -> Vec<Recorded> {
        self.state
            .lock()
            .1
            .iter()
            .filter(|r| r.seq > since)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_controller::model::{NodeRecord, PartitionState, Topic, TopicConfig, TopicKind};
    use tandem_controller::TopicId;

    fn node(id: i32, incarnation: u64, status: NodeStatus) -> NodeRecord {
        NodeRecord {
            node_id: id,
            incarnation,
            process_id: 0,
            addresses: Vec::new(),
            rack: None,
            status,
        }
    }

    /// Three live nodes and topic t (min.insync 2) whose partition 0 is led by `leader`.
    fn cluster(
        statuses: [NodeStatus; 3],
        leader: Option<i32>,
        leader_epoch: i32,
        isr: &[i32],
        recovering: bool,
    ) -> Metadata {
        let mut m = Metadata::default();
        for (i, status) in statuses.into_iter().enumerate() {
            let id = i as i32 + 1;
            m.nodes.insert(id, node(id, id as u64, status));
        }
        let id = TopicId(1);
        m.topics.insert(
            id,
            Topic {
                id,
                name: "t".into(),
                kind: TopicKind::Log,
                config: TopicConfig {
                    min_insync_replicas: 2,
                    ..TopicConfig::default()
                },
                partitions: vec![PartitionState {
                    replicas: vec![1, 2, 3],
                    leader,
                    isr: isr.iter().copied().collect(),
                    elr: BTreeSet::new(),
                    leader_epoch,
                    partition_epoch: leader_epoch,
                    recovering,
                }],
            },
        );
        m.topic_ids.insert("t".into(), id);
        m
    }

    const LIVE: [NodeStatus; 3] = [NodeStatus::Live; 3];

    fn kinds(events: &[Event]) -> Vec<&'static str> {
        events.iter().map(|e| e.kind).collect()
    }

    #[test]
    fn a_killed_leader_is_fenced_a_new_leader_elected_and_the_isr_shrinks() {
        let before = cluster(LIVE, Some(1), 3, &[1, 2, 3], false);
        let after = cluster(
            [NodeStatus::Fenced, NodeStatus::Live, NodeStatus::Live],
            Some(2),
            4,
            &[2, 3],
            false,
        );
        let events = diff(&before, &after);
        assert_eq!(
            kinds(&events),
            vec!["node_fenced", "leader_elected", "isr_shrink"]
        );
        assert_eq!(events[0].node, Some(1));
        let election = &events[1];
        assert_eq!(
            (election.topic.as_deref(), election.partition),
            (Some("t"), Some(0))
        );
        assert_eq!((election.leader, election.leader_epoch), (Some(2), Some(4)));
        assert_eq!(election.message, "t-0: node 2 leads epoch 4 (was node 1)");
        assert_eq!(events[2].isr, Some(vec![2, 3]));
        assert_eq!(events[2].severity, Severity::Warning);
        assert_eq!(events[2].message, "t-0: ISR shrank to [2,3] (out: [1])");
    }

    #[test]
    fn a_shrink_below_min_insync_is_danger_and_an_expand_is_info() {
        let full = cluster(LIVE, Some(2), 4, &[2, 3], false);
        let alone = cluster(LIVE, Some(2), 4, &[2], false);
        let events = diff(&full, &alone);
        assert_eq!(kinds(&events), vec!["isr_shrink"]);
        assert_eq!(events[0].severity, Severity::Danger);
        assert!(events[0].message.ends_with("below min.insync.replicas=2"));
        let back = diff(&alone, &cluster(LIVE, Some(2), 4, &[1, 2, 3], false));
        assert_eq!(kinds(&back), vec!["isr_expand"]);
        assert_eq!(back[0].message, "t-0: ISR expanded to [1,2,3] (in: [1,3])");
    }

    #[test]
    fn unclean_elections_offline_partitions_and_recovery_are_reported() {
        let led = cluster(LIVE, Some(1), 3, &[1], false);
        let offline = cluster(LIVE, None, 4, &[], false);
        assert_eq!(
            kinds(&diff(&led, &offline)),
            vec!["partition_offline", "isr_shrink"]
        );
        let unclean = cluster(LIVE, Some(3), 5, &[3], true);
        let events = diff(&offline, &unclean);
        assert_eq!(kinds(&events), vec!["unclean_election", "isr_expand"]);
        assert_eq!(events[0].severity, Severity::Danger);
        let recovered = cluster(LIVE, Some(3), 5, &[3], false);
        assert_eq!(kinds(&diff(&unclean, &recovered)), vec!["recovered"]);
    }

    #[test]
    fn registrations_and_topics_are_events_and_nothing_changed_is_none() {
        let empty = Metadata::default();
        let m = cluster(LIVE, Some(1), 0, &[1, 2, 3], false);
        assert_eq!(
            kinds(&diff(&empty, &m)),
            vec![
                "node_registered",
                "node_registered",
                "node_registered",
                "topic_created"
            ]
        );
        assert!(diff(&m, &m).is_empty());
        let mut restarted = m.clone();
        restarted.nodes.insert(2, node(2, 9, NodeStatus::Live));
        assert_eq!(kinds(&diff(&m, &restarted)), vec!["node_registered"]);
    }

    #[test]
    fn the_log_keeps_the_last_events_and_answers_since() {
        let log = EventLog::default();
        for i in 0..(EVENTS_KEPT as i64 + 10) {
            log.push(
                i,
                1,
                Event::new("leader_elected", Severity::Info, String::new()),
            );
        }
        let all = log.since(0);
        assert_eq!(all.len(), EVENTS_KEPT);
        assert_eq!(all[0].seq, 11);
        assert_eq!(log.since(EVENTS_KEPT as u64 + 8).len(), 2);
        assert_eq!(all[0].to_json()["kind"], "leader_elected");
    }
}
