//! The follower side of replication between two nodes: one fetcher per leader node, Kafka's
//! model. A fetcher keeps at most one Fetch in flight to its leader, carrying every local
//! partition whose core wants to fetch from that leader; partitions that become ready while
//! it is in flight join the next one. The answer is split back to each partition's core as
//! its own `FetchResponse` (per-partition errors stay per partition) or `FetchFailed` (the
//! connection failed: all of them).
//!
//! ```text
//!  partition cores ──SendFetch──> Outbound::Fetch ─┐  (dispatch forwards both in order)
//!        ^   └─ answer handled ─> Outbound::FetchAnswered
//!        │                                         v
//!        │         Fetchers (pure): per leader  waiting ──> InFlight ──> Settling ──> Idle
//!        │                                         │ one Kafka Fetch, every waiting partition
//!        └── Event::FetchResponse / FetchFailed <──┘ Peers::replica_fetch
//! ```
//!
//! **Settling.** After an answer, the fetcher waits (at most [`SETTLE_MS`]) until each
//! partition it carried has handled its part before it sends the next Fetch. A partition that
//! got records appends them on its own thread and only then asks to fetch again; without the
//! wait, an idle partition that answered first would go out alone in a long poll, and the busy
//! one would wait a whole `max_wait` behind it — every acks=all produce with it. Each core
//! still has at most one fetch outstanding, so ordering per partition is the core's, and so is
//! the backoff after a failure (`replica_fetch_backoff_ms`): a backing-off core simply does not
//! ask, and joins a later Fetch.
//!
//! The batching can be switched off (`TANDEM_REPLICA_FETCH_PER_PARTITION=1`, for benchmarks):
//! a fetcher per (leader, partition) then, one Fetch per partition, as before fetchers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tandem_replication::types::{FetchData, FetchId, FetchRequest, NodeId};
use tandem_replication::Event;
use tokio::sync::mpsc;
use tracing::debug;

use crate::node::{FetchFailure, Node};
use crate::partition::{Input, TopicPartition};

/// The longest a fetcher waits for the partitions of an answer to handle it before it sends
/// the next Fetch without the slow ones (they join the one after).
pub const SETTLE_MS: i64 = 50;

/// A partition's answer in a multi-partition replica Fetch.
pub type PartitionAnswer = Result<FetchData<Bytes>, FetchFailure>;

/// Which fetcher: one per leader, or one per (leader, partition) with batching off.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FetcherKey {
    pub leader: NodeId,
    pub partition: Option<TopicPartition>,
}

/// One partition's fetch as its core asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedFetch {
    pub partition: TopicPartition,
    pub fetch_id: FetchId,
    pub request: FetchRequest,
}

/// A Fetch to send now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub key: FetcherKey,
    pub fetches: Vec<WantedFetch>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Idle,
    InFlight,
    /// The answer is delivered; waiting for these partitions to handle it, until `until_ms`.
    Settling {
        unhandled: BTreeSet<TopicPartition>,
        until_ms: i64,
    },
}

#[derive(Debug)]
struct Fetcher {
    /// Partitions whose core wants to fetch, for the next Fetch (the latest ask of each).
    waiting: BTreeMap<TopicPartition, WantedFetch>,
    phase: Phase,
}

/// Every fetcher of this node, as a pure state machine: asks and answers in, Fetches to send
/// out. The task in [`run`] does the I/O.
#[derive(Debug)]
pub struct Fetchers {
    /// One fetcher per leader; false: one per (leader, partition).
    batching: bool,
    fetchers: BTreeMap<FetcherKey, Fetcher>,
}

impl Fetchers {
    pub fn new(batching: bool) -> Fetchers {
        Fetchers {
            batching,
            fetchers: BTreeMap::new(),
        }
    }

    fn key(&self, leader: NodeId, partition: &TopicPartition) -> FetcherKey {
        FetcherKey {
            leader,
            partition: (!self.batching).then(|| partition.clone()),
        }
    }

    /// A partition's core asks to fetch from `leader`. Returns the Fetch to send now, if that
    /// leader's fetcher is idle; else the partition joins its next Fetch.
    pub fn want(&mut self, leader: NodeId, wanted: WantedFetch) -> Option<Batch> {
        let key = self.key(leader, &wanted.partition);
        // A partition that now follows another leader leaves its old leader's queue.
        for (k, fetcher) in &mut self.fetchers {
            if *k != key {
                fetcher.waiting.remove(&wanted.partition);
            }
        }
        let fetcher = self.fetchers.entry(key.clone()).or_insert(Fetcher {
            waiting: BTreeMap::new(),
            phase: Phase::Idle,
        });
        fetcher.waiting.insert(wanted.partition.clone(), wanted);
        self.next_batch(&key)
    }

    /// The Fetch of `key` is answered (or failed) and its answers handed to `partitions`:
    /// wait for them to handle it before the next Fetch.
    pub fn answered(
        &mut self,
        key: &FetcherKey,
        partitions: impl IntoIterator<Item = TopicPartition>,
        now_ms: i64,
    ) -> Option<Batch> {
        let fetcher = self.fetchers.get_mut(key)?;
        fetcher.phase = Phase::Settling {
            unhandled: partitions.into_iter().collect(),
            until_ms: now_ms.saturating_add(SETTLE_MS),
        };
        self.next_batch(key)
    }

    /// `partition` has handled its answer (and, if it wants more, asked already).
    pub fn handled(&mut self, partition: &TopicPartition) -> Vec<Batch> {
        let mut settled = Vec::new();
        for (key, fetcher) in &mut self.fetchers {
            if let Phase::Settling { unhandled, .. } = &mut fetcher.phase {
                if unhandled.remove(partition) {
                    settled.push(key.clone());
                }
            }
        }
        settled
            .iter()
            .filter_map(|key| self.next_batch(key))
            .collect()
    }

    /// Time passed: a fetcher that waited [`SETTLE_MS`] for slow partitions goes on.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Batch> {
        let mut due = Vec::new();
        for (key, fetcher) in &mut self.fetchers {
            if matches!(fetcher.phase, Phase::Settling { until_ms, .. } if until_ms <= now_ms) {
                fetcher.phase = Phase::Idle;
                due.push(key.clone());
            }
        }
        due.iter().filter_map(|key| self.next_batch(key)).collect()
    }

    /// When [`Fetchers::tick`] has something to do.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        self.fetchers
            .values()
            .filter_map(|f| match &f.phase {
                Phase::Settling { until_ms, .. } => Some(*until_ms),
                _ => None,
            })
            .min()
    }

    /// Fetches in flight (at most one per fetcher).
    pub fn in_flight(&self) -> usize {
        self.fetchers
            .values()
            .filter(|f| f.phase == Phase::InFlight)
            .count()
    }

    /// Sends the next Fetch of `key` if it is idle (or has settled) and someone waits.
    fn next_batch(&mut self, key: &FetcherKey) -> Option<Batch> {
        let fetcher = self.fetchers.get_mut(key)?;
        if matches!(&fetcher.phase, Phase::Settling { unhandled, .. } if unhandled.is_empty()) {
            fetcher.phase = Phase::Idle;
        }
        if fetcher.phase != Phase::Idle {
            return None;
        }
        if fetcher.waiting.is_empty() {
            // Forget idle fetchers with nobody waiting: leaders come and go.
            self.fetchers.remove(key);
            return None;
        }
        fetcher.phase = Phase::InFlight;
        let fetches = std::mem::take(&mut fetcher.waiting).into_values().collect();
        Some(Batch {
            key: key.clone(),
            fetches,
        })
    }
}

/// What the fetcher task takes in, in the order partitions emitted it (so that a partition's
/// next ask always comes before its word that it handled the previous answer).
#[derive(Debug)]
pub enum FetcherInput {
    Want { leader: NodeId, fetch: WantedFetch },
    Handled { partition: TopicPartition },
}

/// Whether fetches are batched per leader (the default) or sent one per partition
/// (`TANDEM_REPLICA_FETCH_PER_PARTITION=1`: the model before fetchers, for benchmarks).
pub fn batching_from_env() -> bool {
    !matches!(
        std::env::var("TANDEM_REPLICA_FETCH_PER_PARTITION").as_deref(),
        Ok("1") | Ok("true")
    )
}

/// The fetchers' task: takes asks and handled notices, sends Fetches through the node's
/// peers, hands each answer to its partition.
pub async fn run(node: Arc<Node>, mut input: mpsc::UnboundedReceiver<FetcherInput>) {
    let started = tokio::time::Instant::now();
    let now_ms = || started.elapsed().as_millis() as i64;
    let mut fetchers = Fetchers::new(node.config().replica_fetch_batching);
    let mut in_flight = tokio::task::JoinSet::new();
    let mut stopping = node.stopping_signal();
    loop {
        let deadline = fetchers
            .next_deadline_ms()
            .map(|ms| started + Duration::from_millis(ms.max(0) as u64));
        let batches = tokio::select! {
            message = input.recv() => match message {
                None => break,
                Some(FetcherInput::Want { leader, fetch }) => {
                    fetchers.want(leader, fetch).into_iter().collect()
                }
                Some(FetcherInput::Handled { partition }) => fetchers.handled(&partition),
            },
            Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                let Ok((batch, answers)) = joined else {
                    continue; // the task panicked: cannot happen short of a bug
                };
                let partitions = deliver(&node, &batch, answers);
                fetchers.answered(&batch.key, partitions, now_ms()).into_iter().collect()
            }
            _ = sleep_until(deadline), if deadline.is_some() => fetchers.tick(now_ms()),
            _ = stopping.changed() => break,
        };
        for batch in batches {
            let node = Arc::clone(&node);
            in_flight.spawn(async move {
                let answers = send(&node, &batch).await;
                (batch, answers)
            });
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Sends one Fetch; `None` when the leader could not be reached (every partition failed).
async fn send(node: &Node, batch: &Batch) -> Option<Vec<PartitionAnswer>> {
    let address = node.address_of_node(batch.key.leader)?;
    let partitions: Vec<(TopicPartition, FetchRequest)> = batch
        .fetches
        .iter()
        .map(|f| (f.partition.clone(), f.request.clone()))
        .collect();
    // The leader answers within the longest max wait; past the cores' fetch timeout on top
    // they have given up anyway (their late answers would be dropped).
    let max_wait_ms = partitions
        .iter()
        .map(|(_, r)| r.max_wait_ms)
        .max()
        .unwrap_or(0);
    let bound = Duration::from_millis(
        (max_wait_ms + node.config().replica.replica_fetch_timeout_ms) as u64,
    );
    match tokio::time::timeout(bound, node.peers().replica_fetch(address, partitions)).await {
        Ok(Ok(answers)) if answers.len() == batch.fetches.len() => Some(answers),
        Ok(Ok(_)) => {
            debug!(
                leader = batch.key.leader,
                "a Fetch answer of the wrong length"
            );
            None
        }
        Ok(Err(e)) => {
            debug!(leader = batch.key.leader, error = %e, "replica Fetch failed");
            None
        }
        Err(_) => None,
    }
}

/// Hands each partition its answer; returns the partitions that will say they handled it.
fn deliver(
    node: &Node,
    batch: &Batch,
    answers: Option<Vec<PartitionAnswer>>,
) -> Vec<TopicPartition> {
    let mut delivered = Vec::new();
    let answers: Vec<Option<PartitionAnswer>> = match answers {
        Some(answers) => answers.into_iter().map(Some).collect(),
        None => vec![None; batch.fetches.len()],
    };
    for (fetch, answer) in batch.fetches.iter().zip(answers) {
        let fetch_id = fetch.fetch_id;
        let event = match answer {
            Some(Ok(data)) => Event::FetchResponse {
                fetch_id,
                response: Ok(data),
            },
            Some(Err(FetchFailure::Refused(error))) => Event::FetchResponse {
                fetch_id,
                response: Err(error),
            },
            Some(Err(FetchFailure::Unreachable(_))) | None => Event::FetchFailed { fetch_id },
        };
        if node.deliver_to_partition(&fetch.partition, Input::Event(event)) {
            delivered.push(fetch.partition.clone());
        }
    }
    delivered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition {
            topic: "t".into(),
            partition,
        }
    }

    fn wanted(partition: i32, fetch_id: u64) -> WantedFetch {
        WantedFetch {
            partition: tp(partition),
            fetch_id: FetchId(fetch_id),
            request: FetchRequest {
                replica_id: Some(2),
                fetch_offset: 0,
                last_fetched_epoch: None,
                current_leader_epoch: Some(1),
                max_bytes: 1 << 20,
                max_wait_ms: 200,
                known_high_watermark: Some(0),
            },
        }
    }

    fn partitions_of(batch: &Batch) -> Vec<i32> {
        batch
            .fetches
            .iter()
            .map(|f| f.partition.partition)
            .collect()
    }

    fn leader(leader: NodeId) -> FetcherKey {
        FetcherKey {
            leader,
            partition: None,
        }
    }

    #[test]
    fn one_fetch_in_flight_per_leader_and_the_waiting_partitions_join_the_next() {
        let mut f = Fetchers::new(true);
        let first = f
            .want(1, wanted(0, 1))
            .expect("an idle fetcher sends at once");
        assert_eq!(partitions_of(&first), vec![0]);
        assert_eq!(
            f.want(1, wanted(1, 1)),
            None,
            "one Fetch in flight to leader 1"
        );
        assert_eq!(f.want(1, wanted(2, 1)), None);
        // Another leader has its own fetcher.
        assert_eq!(partitions_of(&f.want(3, wanted(5, 1)).unwrap()), vec![5]);
        assert_eq!(f.in_flight(), 2);
        // Leader 1 answers partition 0; it handles it and asks again.
        assert_eq!(f.answered(&leader(1), [tp(0)], 0), None, "settling");
        assert_eq!(f.want(1, wanted(0, 2)), None);
        let next = f.handled(&tp(0));
        assert_eq!(next.len(), 1);
        assert_eq!(
            partitions_of(&next[0]),
            vec![0, 1, 2],
            "everyone waiting, in one Fetch"
        );
        assert_eq!(next[0].fetches[0].fetch_id, FetchId(2));
    }

    #[test]
    fn the_next_fetch_waits_for_every_answered_partition_or_the_settle_bound() {
        let mut f = Fetchers::new(true);
        f.want(1, wanted(9, 1));
        f.want(1, wanted(0, 1));
        f.want(1, wanted(1, 1));
        let both = f.answered(&leader(1), [], 0).expect("nothing to wait for");
        assert_eq!(partitions_of(&both), vec![0, 1]);
        assert_eq!(f.answered(&leader(1), [tp(0), tp(1)], 10), None);
        // The idle partition handled its empty answer and asked again first: it does not go
        // out alone in a long poll while the busy one is still appending its records.
        f.want(1, wanted(1, 2));
        assert_eq!(f.handled(&tp(1)), vec![]);
        assert_eq!(f.next_deadline_ms(), Some(10 + SETTLE_MS));
        // The busy one is slow: after the bound the Fetch goes without it.
        assert_eq!(f.tick(10 + SETTLE_MS - 1), vec![]);
        let due = f.tick(10 + SETTLE_MS);
        assert_eq!(due.len(), 1);
        assert_eq!(partitions_of(&due[0]), vec![1]);
        // Its late notice changes nothing: one Fetch in flight.
        assert_eq!(f.handled(&tp(0)), vec![]);
        assert_eq!(f.in_flight(), 1);
    }

    #[test]
    fn a_partition_that_moves_to_another_leader_leaves_the_old_queue() {
        let mut f = Fetchers::new(true);
        f.want(1, wanted(0, 1));
        f.want(1, wanted(1, 1));
        // Partition 1 now follows leader 3 before leader 1's Fetch went out.
        assert_eq!(partitions_of(&f.want(3, wanted(1, 2)).unwrap()), vec![1]);
        f.answered(&leader(1), [tp(0)], 0);
        assert_eq!(f.handled(&tp(0)), vec![], "nobody waits for leader 1");
        assert_eq!(f.in_flight(), 1);
    }

    #[test]
    fn without_batching_each_partition_has_its_own_fetcher() {
        let mut f = Fetchers::new(false);
        assert!(f.want(1, wanted(0, 1)).is_some());
        assert!(f.want(1, wanted(1, 1)).is_some());
        assert_eq!(f.in_flight(), 2);
    }
}
