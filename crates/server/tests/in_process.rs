//! Three nodes in one process, each with a controller voter, wired by an in-memory router
//! instead of TCP: registration, topic creation, acks=all replication, and failover after the
//! leader dies, with nothing acknowledged lost. Real time and real files, generous bounds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};
use parking_lot::RwLock;
use tandem_controller::local_network::LocalNetwork;
use tandem_controller::model::{TopicConfig, TopicKind};
use tandem_controller::{
    ControllerNode, ControllerRequest, ControllerResponse, CreateTopicRequest, QuorumConfig,
};
use tandem_replication::types::{Acks, Durability, FetchRequest, ProduceRequest};
use tandem_replication::ProduceError;
use tandem_server::fetcher::PartitionAnswer;
use tandem_server::node::{BoxFuture, Unreachable};
use tandem_server::tcp_peers;
use tandem_server::{Node, NodeConfig, Peers, TopicPartition};
use tandem_storage::batch::split_batches;
use tandem_storage::{BatchBuilder, OsDir};

const BOUND: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Router {
    nodes: RwLock<BTreeMap<String, Arc<Node>>>,
    voters: RwLock<BTreeMap<String, Arc<ControllerNode>>>,
    /// Nodes whose calls to the controller fail (cut off from it, not from peers or clients).
    cut_from_controller: RwLock<BTreeSet<String>>,
}

/// One node's view of the router: its controller calls fail while it is cut off.
struct NodePeers {
    router: Arc<Router>,
    me: String,
}

impl Peers for NodePeers {
    fn replica_fetch(
        &self,
        address: String,
        partitions: Vec<(TopicPartition, FetchRequest)>,
    ) -> BoxFuture<Result<Vec<PartitionAnswer>, Unreachable>> {
        self.router.replica_fetch(address, partitions)
    }

    fn flush_report(
        &self,
        address: String,
        partition: TopicPartition,
        replica_id: i32,
        leader_epoch: i32,
        flushed_offset: i64,
    ) -> BoxFuture<Result<(), Unreachable>> {
        self.router
            .flush_report(address, partition, replica_id, leader_epoch, flushed_offset)
    }

    fn controller(
        &self,
        address: String,
        request: ControllerRequest,
    ) -> BoxFuture<Result<ControllerResponse, Unreachable>> {
        let router = Arc::clone(&self.router);
        let me = self.me.clone();
        Box::pin(async move {
            let cut = |router: &Router| router.cut_from_controller.read().contains(&me);
            if cut(&router) {
                return Err(unreachable(&address));
            }
            let answer = router.controller(address.clone(), request).await;
            // An answer to a call made before the cut (a long poll) is lost with the link.
            if cut(&router) {
                return Err(unreachable(&address));
            }
            answer
        })
    }
}

fn unreachable(address: &str) -> Unreachable {
    Unreachable {
        address: address.to_string(),
        reason: "down".into(),
    }
}

impl Peers for Router {
    /// The leader's real Kafka Fetch handler, without the bytes: the follower's request as
    /// its fetcher builds it, the answer split as its fetcher splits it.
    fn replica_fetch(
        &self,
        address: String,
        partitions: Vec<(TopicPartition, FetchRequest)>,
    ) -> BoxFuture<Result<Vec<PartitionAnswer>, Unreachable>> {
        let node = self.nodes.read().get(&address).cloned();
        Box::pin(async move {
            let node = node.ok_or_else(|| unreachable(&address))?;
            let replica_id = partitions
                .first()
                .and_then(|(_, r)| r.replica_id)
                .unwrap_or(-1);
            let request = tcp_peers::replica_fetch_request(replica_id, &partitions);
            let header = RequestHeader::default()
                .with_request_api_key(ApiKey::Fetch as i16)
                .with_request_api_version(tandem_protocol::fetch_tags::REPLICA_FETCH_VERSION);
            match tandem_server::kafka::handle(&node, &header, RequestKind::Fetch(request)).await {
                Some(ResponseKind::Fetch(response)) => Ok(tcp_peers::replica_fetch_answers(
                    response,
                    &partitions,
                    &address,
                )),
                _ => Err(unreachable(&address)),
            }
        })
    }

    fn flush_report(
        &self,
        address: String,
        partition: TopicPartition,
        replica_id: i32,
        leader_epoch: i32,
        flushed_offset: i64,
    ) -> BoxFuture<Result<(), Unreachable>> {
        let node = self.nodes.read().get(&address).cloned();
        Box::pin(async move {
            let node = node.ok_or_else(|| unreachable(&address))?;
            node.flush_report(&partition, replica_id, leader_epoch, flushed_offset);
            Ok(())
        })
    }

    fn controller(
        &self,
        address: String,
        request: ControllerRequest,
    ) -> BoxFuture<Result<ControllerResponse, Unreachable>> {
        let voter = self.voters.read().get(&address).cloned();
        Box::pin(async move {
            let voter = voter.ok_or_else(|| unreachable(&address))?;
            Ok(voter.handle(request).await)
        })
    }
}

struct Cluster {
    router: Arc<Router>,
    network: LocalNetwork,
    nodes: BTreeMap<i32, (Arc<Node>, Arc<ControllerNode>)>,
    voters: BTreeMap<u64, String>,
    dirs: tempfile::TempDir,
}

fn address(id: i32) -> String {
    // Never bound: the router maps these to nodes in this process.
    format!("127.0.0.1:{}", 19_000 + id)
}

impl Cluster {
    async fn start(size: i32) -> Cluster {
        let mut cluster = Cluster {
            router: Arc::new(Router::default()),
            network: LocalNetwork::new(),
            nodes: BTreeMap::new(),
            voters: (1..=size).map(|id| (id as u64, address(id))).collect(),
            dirs: tempfile::tempdir().unwrap(),
        };
        for id in 1..=size {
            cluster.start_node(id).await;
        }
        cluster
    }

    fn data_dir(&self, id: i32) -> std::path::PathBuf {
        self.dirs.path().join(format!("node-{id}"))
    }

    /// Starts (or restarts, from its files) node `id` and its voter.
    async fn start_node(&mut self, id: i32) {
        let data_dir = self.data_dir(id);
        let controller_dir = data_dir.join("controller");
        let log_dir = OsDir::create_all(controller_dir.join("raft-log")).unwrap();
        let checkpoints = OsDir::create_all(controller_dir.join("checkpoints")).unwrap();
        let quorum = QuorumConfig::new(id as u64, self.voters.clone());
        self.network.heal(id as u64);
        let voter = ControllerNode::start(
            quorum,
            log_dir,
            checkpoints,
            self.network.transport(id as u64),
        )
        .await
        .expect("voter starts");
        self.network.add(&voter);
        self.router
            .voters
            .write()
            .insert(address(id), Arc::clone(&voter));
        let config = NodeConfig::new(id, address(id), data_dir, self.voters.clone());
        let peers = Arc::new(NodePeers {
            router: Arc::clone(&self.router),
            me: address(id),
        });
        let node = Node::start(config, peers).expect("node starts");
        self.router
            .nodes
            .write()
            .insert(address(id), Arc::clone(&node));
        self.nodes.insert(id, (node, voter));
    }

    /// Waits for every node to register, creates a one-partition topic with RF 3 and
    /// min.insync 2, and waits for its leader with a full ISR.
    async fn replicated_topic(&self, name: &str) -> (TopicPartition, i32) {
        wait_until("all nodes registered", || {
            self.nodes
                .values()
                .all(|(n, _)| n.incarnation().is_some())
                .then_some(())
        })
        .await;
        let create = CreateTopicRequest {
            name: name.into(),
            partitions: 1,
            replication_factor: 3,
            kind: TopicKind::Log,
            config: TopicConfig {
                min_insync_replicas: 2,
                ..TopicConfig::default()
            },
        };
        self.node(1)
            .create_topic(create)
            .await
            .expect("topic created");
        let leader = wait_until("a leader with a full ISR", || {
            let (_, metadata) = self.node(1).metadata();
            let state = metadata.topic_by_name(name)?.partitions.first()?.clone();
            (state.isr.len() == 3).then_some(state.leader?)
        })
        .await;
        let tp = TopicPartition {
            topic: name.into(),
            partition: 0,
        };
        (tp, leader)
    }

    fn node(&self, id: i32) -> &Arc<Node> {
        &self.nodes[&id].0
    }

    /// The node dies at once: unreachable, its voter gone, its replicas stopped.
    async fn kill(&mut self, id: i32) {
        self.router.nodes.write().remove(&address(id));
        self.router.voters.write().remove(&address(id));
        self.network.isolate(id as u64);
        let (node, voter) = self.nodes.remove(&id).expect("running");
        voter.shutdown().await;
        node.shutdown(false).await;
        self.network.remove(id as u64);
    }
}

async fn wait_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + BOUND;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn batch(value: &str) -> bytes::BytesMut {
    let mut b = BatchBuilder::new(0);
    b.push(0, None, Some(value.as_bytes()));
    b.build()
}

fn produce_request(value: &str) -> ProduceRequest {
    ProduceRequest {
        acks: Acks::All,
        durability: Durability::Replicated,
        timeout_ms: 5_000,
        current_leader_epoch: None,
        records: batch(value),
    }
}

/// The values committed on `node`'s replica, read as a consumer.
async fn committed_values(node: &Node, tp: &TopicPartition) -> Vec<String> {
    let mut values = Vec::new();
    let mut offset = 0;
    loop {
        let request = FetchRequest {
            replica_id: None,
            fetch_offset: offset,
            last_fetched_epoch: None,
            current_leader_epoch: None,
            max_bytes: 1 << 20,
            max_wait_ms: 0,
            known_high_watermark: None,
        };
        let data = node.fetch(tp, request).await.expect("consumer fetch");
        if data.records.is_empty() {
            return values;
        }
        for (header, raw) in split_batches(&data.records).map_while(Result::ok) {
            let records =
                tandem_storage::batch::decode_records(&Bytes::copy_from_slice(raw)).unwrap();
            for record in records {
                values.push(
                    String::from_utf8_lossy(record.value.as_deref().unwrap_or_default())
                        .into_owned(),
                );
            }
            offset = header.next_offset();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_writes_survive_the_death_of_the_leader() {
    let mut cluster = Cluster::start(3).await;
    let (tp, leader) = cluster.replicated_topic("orders").await;

    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let value = format!("order-{i}");
        let node = Arc::clone(cluster.node(leader));
        let ok = wait_until_async(|| {
            let node = Arc::clone(&node);
            let value = value.clone();
            let tp = tp.clone();
            async move { node.produce(&tp, produce_request(&value)).await.ok() }
        })
        .await;
        assert_eq!(ok.base_offset, i, "offsets are assigned in order");
        acknowledged.push(value);
    }
    assert_eq!(
        committed_values(cluster.node(leader), &tp).await,
        acknowledged
    );

    cluster.kill(leader).await;
    let survivor = *cluster.nodes.keys().next().unwrap();
    let new_leader = wait_until("a new leader", || {
        let (_, metadata) = cluster.node(survivor).metadata();
        let state = metadata
            .topic_by_name("orders")?
            .partitions
            .first()?
            .clone();
        state.leader.filter(|l| *l != leader)
    })
    .await;
    // The new leader takes writes once it has a lease and the surviving ISR of two.
    let node = Arc::clone(cluster.node(new_leader));
    let after = wait_until_async(|| {
        let node = Arc::clone(&node);
        let tp = tp.clone();
        async move {
            node.produce(&tp, produce_request("after-failover"))
                .await
                .ok()
        }
    })
    .await;
    assert_eq!(
        after.base_offset, 20,
        "nothing acknowledged was lost or overwritten"
    );
    acknowledged.push("after-failover".into());
    let values = committed_values(cluster.node(new_leader), &tp).await;
    assert_eq!(values, acknowledged);
    let unique: BTreeSet<&String> = values.iter().collect();
    assert_eq!(unique.len(), values.len(), "no duplicates");
    for (_, (node, voter)) in std::mem::take(&mut cluster.nodes) {
        node.shutdown(false).await;
        voter.shutdown().await;
    }
}

/// Retries an async attempt until it yields a value, within the bound.
async fn wait_until_async<T, F: std::future::Future<Output = Option<T>>>(
    mut attempt: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + BOUND;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out retrying");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controlled_shutdown_moves_leadership_away_before_stopping() {
    let mut cluster = Cluster::start(3).await;
    let (tp, leader) = cluster.replicated_topic("moves").await;
    let node = Arc::clone(cluster.node(leader));
    wait_until_async(|| {
        let node = Arc::clone(&node);
        let tp = tp.clone();
        async move { node.produce(&tp, produce_request("before")).await.ok() }
    })
    .await;

    // Controlled: the node asks the controller to move its leaderships, then stops.
    node.shutdown(true).await;
    let survivor = *cluster.nodes.keys().find(|id| **id != leader).unwrap();
    let (_, metadata) = cluster.node(survivor).metadata();
    let state = metadata.topic_by_name("moves").unwrap().partitions[0].clone();
    assert_ne!(
        state.leader,
        Some(leader),
        "leadership moved before the node stopped"
    );
    assert!(
        !state.isr.contains(&leader),
        "the stopping node left the ISR"
    );
    let new_leader = state.leader.expect("a new leader");
    let node = Arc::clone(cluster.node(new_leader));
    let ok = wait_until_async(|| {
        let node = Arc::clone(&node);
        let tp = tp.clone();
        async move { node.produce(&tp, produce_request("after")).await.ok() }
    })
    .await;
    assert_eq!(ok.base_offset, 1);
    assert_eq!(committed_values(&node, &tp).await, vec!["before", "after"]);
    let (_, voter) = cluster.nodes.remove(&leader).unwrap();
    voter.shutdown().await;
    for (_, (node, voter)) in std::mem::take(&mut cluster.nodes) {
        node.shutdown(false).await;
        voter.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_with_a_corrupt_tail_cuts_it_refetches_and_rejoins() {
    let mut cluster = Cluster::start(3).await;
    let (tp, leader) = cluster.replicated_topic("heals").await;
    let mut written = Vec::new();
    for i in 0..10 {
        let node = Arc::clone(cluster.node(leader));
        let value = format!("v{i}");
        wait_until_async(|| {
            let node = Arc::clone(&node);
            let tp = tp.clone();
            let value = value.clone();
            async move { node.produce(&tp, produce_request(&value)).await.ok() }
        })
        .await;
        written.push(value);
    }
    let follower = *cluster.nodes.keys().find(|id| **id != leader).unwrap();
    cluster.kill(follower).await;
    // Bit rot in the follower's last batch: recovery must cut it (rule 10), and replication
    // must bring it back.
    let segment = cluster
        .data_dir(follower)
        .join("logs")
        .join("heals-0")
        .join("00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x55;
    std::fs::write(&segment, &bytes).unwrap();
    cluster.start_node(follower).await;
    let leader_segment = cluster
        .data_dir(leader)
        .join("logs")
        .join("heals-0")
        .join("00000000000000000000.log");
    wait_until(
        "the follower's log byte-identical to the leader's again",
        || {
            let repaired = std::fs::read(&segment).ok()?;
            let leaders = std::fs::read(&leader_segment).ok()?;
            (repaired == leaders && repaired != bytes).then_some(())
        },
    )
    .await;
    wait_until(
        "the follower back in the ISR under its new incarnation",
        || {
            let (_, metadata) = cluster.node(leader).metadata();
            let state = metadata.topic_by_name("heals")?.partitions.first()?.clone();
            let incarnation = cluster.node(follower).incarnation()?;
            let registered = metadata.node(follower)?.incarnation == incarnation;
            (registered && state.isr.contains(&follower)).then_some(())
        },
    )
    .await;
    for (_, (node, voter)) in std::mem::take(&mut cluster.nodes) {
        node.shutdown(false).await;
        voter.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_controller_stops_taking_writes_when_its_lease_ends() {
    // Rule 8: the leader still reaches its followers and clients, but not the controller,
    // which elects a successor after the session timeout. The old leader never hears of it
    // (metadata comes from the controller too); only its lapsed lease stops it.
    let cluster = Cluster::start(3).await;
    let (tp, leader) = cluster.replicated_topic("leased").await;
    let node = Arc::clone(cluster.node(leader));
    let acks_1 = |value: &str| ProduceRequest {
        acks: Acks::Leader,
        ..produce_request(value)
    };
    wait_until_async(|| {
        let node = Arc::clone(&node);
        let tp = tp.clone();
        async move { node.produce(&tp, acks_1("before")).await.ok() }
    })
    .await;
    cluster
        .router
        .cut_from_controller
        .write()
        .insert(address(leader));
    let cut_at = Instant::now();
    let refused = wait_until_async(|| {
        let node = Arc::clone(&node);
        let tp = tp.clone();
        async move {
            match node.produce(&tp, acks_1("during")).await {
                Err(ProduceError::NotLeader { .. }) => Some(()),
                _ => None,
            }
        }
    });
    refused.await;
    let after = cut_at.elapsed();
    eprintln!("the cut-off leader refused writes {after:?} after the cut");
    // Lease 400 ms, counted from a heartbeat sent up to one interval (100 ms) before the cut;
    // the controller's session timeout is 600 ms: the leader stops before a successor exists.
    assert!(
        after < Duration::from_millis(600),
        "the cut-off leader took writes for {after:?}"
    );
    for (_, (node, voter)) in cluster.nodes.iter() {
        node.shutdown(false).await;
        voter.shutdown().await;
    }
}
