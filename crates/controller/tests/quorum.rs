//! Three controller voters in one process, on an in-process network: failover of the active
//! controller, recovery from each voter's own storage, snapshots. Real time, with generous
//! bounds: every wait asserts on an event and fails only if it takes many seconds.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_controller::controller::{CreateTopicRequest, HeartbeatRequest, RegisterRequest};
use tandem_controller::local_network::LocalNetwork;
use tandem_controller::model::{Endpoint, NodeStatus, TopicConfig, TopicKind};
use tandem_controller::rpc::VoterState;
use tandem_controller::{
    ControllerError, ControllerNode, ControllerRequest, ControllerResponse, Metadata, QuorumConfig,
};
use tandem_storage::{Directory, MemDir, OsDir};

/// How long any single expected event may take before the test fails. Failover takes well
/// under a second on an idle machine; the bound is for a loaded 2-core CI box.
const BOUND: Duration = Duration::from_secs(20);

struct Cluster<D: Directory + Clone> {
    network: LocalNetwork,
    voters: BTreeMap<u64, String>,
    running: BTreeMap<u64, Arc<ControllerNode>>,
    /// Each voter's (Raft log directory, checkpoint directory), kept across restarts.
    dirs: BTreeMap<u64, (D, D)>,
    tweak: fn(&mut QuorumConfig),
}

impl<D: Directory + Clone> Cluster<D> {
    async fn start(dirs: BTreeMap<u64, (D, D)>, tweak: fn(&mut QuorumConfig)) -> Cluster<D> {
        let voters = dirs.keys().map(|id| (*id, format!("voter-{id}"))).collect();
        let mut cluster = Cluster {
            network: LocalNetwork::new(),
            voters,
            running: BTreeMap::new(),
            dirs,
            tweak,
        };
        let ids: Vec<u64> = cluster.dirs.keys().copied().collect();
        for id in ids {
            cluster.start_voter(id).await;
        }
        cluster
    }

    async fn start_voter(&mut self, id: u64) {
        let mut config = QuorumConfig::new(id, self.voters.clone());
        (self.tweak)(&mut config);
        let (log_dir, checkpoints) = self.dirs[&id].clone();
        let node = ControllerNode::start(config, log_dir, checkpoints, self.network.transport(id))
            .await
            .expect("voter starts");
        self.network.add(&node);
        self.running.insert(id, node);
    }

    /// The voter dies: unreachable at once, then its tasks stop.
    async fn kill(&mut self, id: u64) {
        self.network.isolate(id);
        let node = self.running.remove(&id).expect("running");
        node.shutdown().await;
        self.network.remove(id);
        self.network.heal(id);
    }

    async fn wait_for_active(&self) -> u64 {
        let deadline = Instant::now() + BOUND;
        loop {
            if let Some((id, _)) = self.running.iter().find(|(_, n)| n.is_active()) {
                return *id;
            }
            assert!(
                Instant::now() < deadline,
                "no active controller within {BOUND:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a node request to whichever voter is the active controller, retrying while there
    /// is none (as a node would, following the leader hint).
    async fn call(&self, request: ControllerRequest) -> ControllerResponse {
        call_active(
            &self.network,
            &self.running.keys().copied().collect::<Vec<_>>(),
            request,
        )
        .await
    }

    async fn wait_until(&self, what: &str, mut done: impl FnMut(&Metadata) -> bool) {
        let deadline = Instant::now() + BOUND;
        loop {
            let active = self.wait_for_active().await;
            if done(&self.running[&active].metadata().1) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: not within {BOUND:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn shutdown(self) {
        for node in self.running.values() {
            node.shutdown().await;
        }
    }
}

async fn call_active(
    network: &LocalNetwork,
    voters: &[u64],
    request: ControllerRequest,
) -> ControllerResponse {
    let client = network.client();
    let deadline = Instant::now() + BOUND;
    loop {
        for voter in voters {
            let Ok(response) = client.send(*voter, request.clone()).await else {
                continue;
            };
            if !retry_elsewhere(&response) {
                return response;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no controller answered {request:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn retry_elsewhere(response: &ControllerResponse) -> bool {
    let error = match response {
        ControllerResponse::Register(Err(e)) => e,
        ControllerResponse::Heartbeat(Err(e)) => e,
        ControllerResponse::AlterPartition(Err(e)) => e,
        ControllerResponse::CreateTopic(Err(e)) => e,
        ControllerResponse::DeleteTopic(Err(e)) => e,
        ControllerResponse::NodeStopped(Err(e)) => e,
        _ => return false,
    };
    matches!(
        error,
        ControllerError::NotController { .. }
            | ControllerError::Unavailable(_)
            | ControllerError::Conflict(_)
    )
}

fn mem_dirs(ids: &[u64]) -> BTreeMap<u64, (MemDir, MemDir)> {
    ids.iter()
        .map(|id| (*id, (MemDir::new(), MemDir::new())))
        .collect()
}

async fn register(cluster_network: &LocalNetwork, voters: &[u64], node_id: i32) -> u64 {
    let request = ControllerRequest::Register(RegisterRequest {
        node_id,
        process_id: 1000 + node_id as u128,
        addresses: vec![Endpoint {
            listener: "PLAINTEXT".into(),
            host: "127.0.0.1".into(),
            port: 9000 + node_id as u16,
        }],
        rack: None,
        previous_shutdown_clean: true,
        lost_data: false,
    });
    match call_active(cluster_network, voters, request).await {
        ControllerResponse::Register(Ok(reply)) => reply.incarnation,
        other => panic!("registration failed: {other:?}"),
    }
}

fn create_topic(name: &str, partitions: u32, rf: u16, min_isr: u16) -> ControllerRequest {
    ControllerRequest::CreateTopic(CreateTopicRequest {
        name: name.into(),
        partitions,
        replication_factor: rf,
        kind: TopicKind::Log,
        config: TopicConfig {
            min_insync_replicas: min_isr,
            ..TopicConfig::default()
        },
    })
}

/// A data node heartbeating the active controller every 100 ms until `alive` is cleared.
fn spawn_heartbeats(
    network: LocalNetwork,
    voters: Vec<u64>,
    node_id: i32,
    incarnation: u64,
    alive: Arc<AtomicBool>,
) {
    tokio::spawn(async move {
        while alive.load(Ordering::SeqCst) {
            let request = ControllerRequest::Heartbeat(HeartbeatRequest {
                node_id,
                incarnation,
                replica_leos: vec![],
                want_shutdown: false,
            });
            let client = network.client();
            for voter in &voters {
                if let Ok(response) = client.send(*voter, request.clone()).await {
                    if !retry_elsewhere(&response) {
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_controller_dies_and_another_takes_over_without_losing_metadata() {
    let mut cluster = Cluster::start(mem_dirs(&[1, 2, 3]), |_| {}).await;
    let first = cluster.wait_for_active().await;
    let voters: Vec<u64> = vec![1, 2, 3];

    // Three data nodes register and heartbeat; a topic is created.
    let mut alive = BTreeMap::new();
    for node_id in [11, 12, 13] {
        let incarnation = register(&cluster.network, &voters, node_id).await;
        let flag = Arc::new(AtomicBool::new(true));
        spawn_heartbeats(
            cluster.network.clone(),
            voters.clone(),
            node_id,
            incarnation,
            flag.clone(),
        );
        alive.insert(node_id, (incarnation, flag));
    }
    let topic_id = match cluster.call(create_topic("orders", 3, 3, 2)).await {
        ControllerResponse::CreateTopic(Ok(id)) => id,
        other => panic!("create failed: {other:?}"),
    };
    let committed = cluster.running[&first].metadata().1;
    assert_eq!(committed.topics[&topic_id].partitions.len(), 3);

    // The active controller dies.
    let killed_at = Instant::now();
    cluster.kill(first).await;
    let second = cluster.wait_for_active().await;
    let failover = killed_at.elapsed();
    assert_ne!(second, first);
    assert!(failover < BOUND, "failover took {failover:?}");
    eprintln!("controller failover took {failover:?}");

    // Nothing committed is lost.
    let after = cluster.running[&second].metadata().1;
    assert_eq!(after.topics, committed.topics);
    for node_id in [11, 12, 13] {
        assert_eq!(after.node(node_id).unwrap().status, NodeStatus::Live);
    }

    // Fencing goes on under the new controller: node 11 stops heartbeating.
    alive[&11].1.store(false, Ordering::SeqCst);
    cluster
        .wait_until("node 11 fenced after its session", |m| {
            m.node(11).is_some_and(|n| n.status == NodeStatus::Fenced)
        })
        .await;
    let fenced = cluster.running[&cluster.wait_for_active().await]
        .metadata()
        .1;
    for p in &fenced.topics[&topic_id].partitions {
        assert!(!p.isr.contains(&11));
        assert_ne!(p.leader, Some(11));
        assert!(p.leader.is_some(), "a live ISR member leads");
    }
    // A node known dead is fenced at once: the reply comes after the commit.
    alive[&12].1.store(false, Ordering::SeqCst);
    let response = cluster
        .call(ControllerRequest::NodeStopped {
            node_id: 12,
            incarnation: alive[&12].0,
        })
        .await;
    assert!(
        matches!(response, ControllerResponse::NodeStopped(Ok(()))),
        "{response:?}"
    );
    let active = cluster.wait_for_active().await;
    let now = cluster.running[&active].metadata().1;
    assert_eq!(now.node(12).unwrap().status, NodeStatus::Fenced);
    for (p, original) in now.topics[&topic_id]
        .partitions
        .iter()
        .zip(&committed.topics[&topic_id].partitions)
    {
        assert_eq!(p.leader, Some(13));
        assert_eq!(p.isr, [13].into());
        // Every leader change bumped the epoch; a partition 13 always led kept it.
        assert_eq!(
            p.leader_epoch > original.leader_epoch,
            original.leader != Some(13)
        );
    }

    // The old controller's machine loses whatever it had not synced, then the voter comes back
    // as a follower from its own storage and catches up.
    cluster.dirs[&first].0.crash_clean_cut();
    cluster.dirs[&first].1.crash_clean_cut();
    cluster.start_voter(first).await;
    let target = cluster.running[&active].metadata().0;
    let deadline = Instant::now() + BOUND;
    while cluster.running[&first].metadata().0 < target {
        assert!(
            Instant::now() < deadline,
            "restarted voter did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cluster.running[&first].metadata().1.topics, now.topics);
    alive[&13].1.store(false, Ordering::SeqCst);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_quorum_restarts_from_disk_and_keeps_committed_metadata() {
    let root = tempfile::tempdir().unwrap();
    let dirs: BTreeMap<u64, (OsDir, OsDir)> = [1u64, 2, 3]
        .iter()
        .map(|id| {
            let base = root.path().join(format!("voter-{id}"));
            let log = OsDir::create_all(base.join("raft-log")).unwrap();
            let checkpoints = OsDir::create_all(&base).unwrap();
            (*id, (log, checkpoints))
        })
        .collect();
    let cluster = Cluster::start(dirs.clone(), |_| {}).await;
    cluster.wait_for_active().await;
    let voters = vec![1, 2, 3];
    register(&cluster.network, &voters, 21).await;
    let topic_id = match cluster.call(create_topic("kept", 2, 1, 1)).await {
        ControllerResponse::CreateTopic(Ok(id)) => id,
        other => panic!("create failed: {other:?}"),
    };
    let before = cluster.running[&cluster.wait_for_active().await]
        .metadata()
        .1;
    cluster.shutdown().await;

    let cluster = Cluster::start(dirs, |_| {}).await;
    cluster
        .wait_until("committed metadata re-applied after restart", |m| {
            m.topics.contains_key(&topic_id)
        })
        .await;
    let after = cluster.running[&cluster.wait_for_active().await]
        .metadata()
        .1;
    assert_eq!(after.topics, before.topics);
    assert_eq!(after.node(21), before.node(21));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_bound_the_log_and_bring_a_lagging_voter_up_to_date() {
    let mut cluster = Cluster::start(mem_dirs(&[1, 2, 3]), |config| {
        config.snapshot_after_entries = 10;
        config.entries_kept_after_snapshot = 0;
    })
    .await;
    let active = cluster.wait_for_active().await;
    let lagging = *cluster.running.keys().find(|id| **id != active).unwrap();
    cluster.kill(lagging).await;
    let voters = vec![1, 2, 3];
    let incarnation = register(&cluster.network, &voters, 31).await;
    let alive = Arc::new(AtomicBool::new(true));
    spawn_heartbeats(
        cluster.network.clone(),
        voters.clone(),
        31,
        incarnation,
        alive.clone(),
    );
    for i in 0..40 {
        let response = cluster.call(create_topic(&format!("t{i}"), 1, 1, 1)).await;
        assert!(
            matches!(response, ControllerResponse::CreateTopic(Ok(_))),
            "{response:?}"
        );
    }
    let active = cluster.wait_for_active().await;
    let deadline = Instant::now() + BOUND;
    loop {
        let metrics = cluster.running[&active].raft().metrics().borrow().clone();
        if metrics.snapshot.is_some() && metrics.purged.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot and purge: {metrics:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The lagging voter restarts from its own (older) storage; the entries it misses are
    // purged on the leader, so it can only catch up from a snapshot.
    cluster.start_voter(lagging).await;
    let target = cluster.running[&active].metadata();
    let deadline = Instant::now() + BOUND;
    while cluster.running[&lagging].metadata().0 < target.0 {
        assert!(Instant::now() < deadline, "lagging voter did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let caught_up = cluster.running[&lagging].metadata().1;
    assert_eq!(caught_up.topics.len(), 40);
    assert_eq!(caught_up.topic_ids, target.1.topic_ids);
    assert_eq!(caught_up.node(31).map(|n| n.incarnation), Some(incarnation));
    let snapshot = cluster.running[&lagging].raft().metrics().borrow().snapshot;
    assert!(snapshot.is_some(), "caught up through a snapshot");
    alive.store(false, Ordering::SeqCst);
    cluster.shutdown().await;
}

/// Rule 8 across a controller failover: a controller cut off from the other voters stops
/// extending leases no later than `lease_ms` after it was cut off, even to a node that can still
/// reach it; the new controller grants leases once a quorum confirms it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_controller_stops_granting_leases() {
    let cluster = Cluster::start(mem_dirs(&[1, 2, 3]), |_| {}).await;
    let old = cluster.wait_for_active().await;
    let lease_ms = QuorumConfig::new(1, BTreeMap::new()).controller.lease_ms;
    let incarnation = register(&cluster.network, &[1, 2, 3], 41).await;
    let heartbeat = ControllerRequest::Heartbeat(HeartbeatRequest {
        node_id: 41,
        incarnation,
        replica_leos: vec![],
        want_shutdown: false,
    });
    let origin = Instant::now();
    // Sends a heartbeat straight to `voter` (the node can reach it whatever the voters can);
    // the lease as an end time in ms since `origin`, if one was granted.
    let lease_end = |voter: u64| {
        let node = cluster.running[&voter].clone();
        let request = heartbeat.clone();
        async move {
            let sent_ms = origin.elapsed().as_millis() as i64;
            let reply = tokio::time::timeout(BOUND, node.handle(request))
                .await
                .expect("answers");
            match reply {
                ControllerResponse::Heartbeat(Ok(reply)) => reply.lease_ms.map(|l| sent_ms + l),
                ControllerResponse::Heartbeat(Err(_)) => None,
                other => panic!("{other:?}"),
            }
        }
    };
    let deadline = Instant::now() + BOUND;
    while lease_end(old).await.is_none() {
        assert!(
            Instant::now() < deadline,
            "the active controller never granted a lease"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    cluster.network.isolate(old);
    let isolated_ms = origin.elapsed().as_millis() as i64;
    // Rounding of the controller's own millisecond clock.
    let slack_ms = 5;
    loop {
        let end = lease_end(old).await;
        if let Some(end) = end {
            assert!(
                end <= isolated_ms + lease_ms + slack_ms,
                "lease until {end} ms outlives the cut at {isolated_ms} ms by more than {lease_ms} ms"
            );
        }
        let now_ms = origin.elapsed().as_millis() as i64;
        if now_ms > isolated_ms + lease_ms + 100 {
            assert_eq!(end, None, "still granting leases {now_ms} ms in");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Another voter takes over and, once confirmed, grants leases again.
    let deadline = Instant::now() + BOUND;
    let new = loop {
        let active = cluster
            .running
            .iter()
            .find(|(id, n)| **id != old && n.is_active())
            .map(|(id, _)| *id);
        if let Some(new) = active {
            if lease_end(new).await.is_some() {
                break new;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no new controller granted a lease"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_ne!(new, old);
    cluster.network.heal(old);
    cluster.shutdown().await;
}

/// A voter whose storage was wiped restarts: it must not take part in Raft as the same voter
/// (the leader would find its log gone and panic, and its lost vote and log could let a quorum
/// form without a committed entry). It refuses, naming the recovery; the other two keep an
/// active controller that commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_voter_is_refused_and_the_others_keep_committing() {
    let mut cluster = Cluster::start(mem_dirs(&[1, 2, 3]), |_| {}).await;
    let active = cluster.wait_for_active().await;
    let alive = Arc::new(AtomicBool::new(true));
    let incarnation = register(&cluster.network, &[1, 2, 3], 11).await;
    spawn_heartbeats(
        cluster.network.clone(),
        vec![1, 2, 3],
        11,
        incarnation,
        alive.clone(),
    );
    let response = cluster.call(create_topic("before", 1, 1, 1)).await;
    assert!(
        matches!(response, ControllerResponse::CreateTopic(Ok(_))),
        "{response:?}"
    );
    // A follower: the leader has replicated to it and remembers how far.
    let wiped = *cluster.running.keys().find(|id| **id != active).unwrap();
    cluster
        .wait_until("the follower applied the topic", |m| m.topics.len() == 1)
        .await;
    cluster.kill(wiped).await;
    cluster.dirs.insert(wiped, (MemDir::new(), MemDir::new()));
    cluster.start_voter(wiped).await;
    let refused = tokio::time::timeout(BOUND, cluster.running[&wiped].joined())
        .await
        .expect("the wiped voter decides");
    let message = refused
        .expect_err("a wiped voter must not rejoin")
        .to_string();
    assert!(message.contains("no Raft state"), "{message}");
    assert!(message.contains("--rejoin-as-new-voter"), "{message}");
    assert!(!message.contains('\n'), "one line: {message}");
    // The other two still commit, with the refused voter's network up.
    for i in 0..5 {
        let response = cluster
            .call(create_topic(&format!("after-{i}"), 1, 1, 1))
            .await;
        assert!(
            matches!(response, ControllerResponse::CreateTopic(Ok(_))),
            "{response:?}"
        );
    }
    let leader = cluster.wait_for_active().await;
    assert_ne!(leader, wiped);
    assert_eq!(cluster.running[&leader].metadata().1.topics.len(), 6);
    assert_eq!(
        cluster.running[&wiped].metadata().0,
        0,
        "the refused voter applied nothing"
    );
    alive.store(false, Ordering::SeqCst);
    cluster.shutdown().await;
}

/// `rejoin_as_new_voter`: the wiped voter is removed from the membership, copies the log as a
/// learner, and becomes a voter again; the quorum then survives losing another voter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_voter_rejoins_as_a_new_voter() {
    let mut cluster = Cluster::start(mem_dirs(&[1, 2, 3]), |_| {}).await;
    let active = cluster.wait_for_active().await;
    let alive = Arc::new(AtomicBool::new(true));
    let incarnation = register(&cluster.network, &[1, 2, 3], 11).await;
    spawn_heartbeats(
        cluster.network.clone(),
        vec![1, 2, 3],
        11,
        incarnation,
        alive.clone(),
    );
    let response = cluster.call(create_topic("kept", 1, 1, 1)).await;
    assert!(
        matches!(response, ControllerResponse::CreateTopic(Ok(_))),
        "{response:?}"
    );
    let wiped = *cluster.running.keys().find(|id| **id != active).unwrap();
    cluster
        .wait_until("the topic is committed", |m| m.topics.len() == 1)
        .await;
    cluster.kill(wiped).await;
    cluster.dirs.insert(wiped, (MemDir::new(), MemDir::new()));
    cluster.tweak = |config| config.rejoin_as_new_voter = true;
    cluster.start_voter(wiped).await;
    tokio::time::timeout(BOUND, cluster.running[&wiped].joined())
        .await
        .expect("the wiped voter rejoins in time")
        .expect("the wiped voter rejoins");
    let membership = cluster.running[&active]
        .raft()
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .clone();
    assert!(
        membership.voter_ids().any(|id| id == wiped),
        "{membership:?}"
    );
    // It has the log; it applies the topic once it hears the commit index.
    let deadline = Instant::now() + BOUND;
    while cluster.running[&wiped].metadata().1.topics.len() != 1 {
        assert!(
            Instant::now() < deadline,
            "the rejoined voter applied the topic"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // It votes again: with the old active controller gone, it and the third voter elect one.
    cluster.kill(active).await;
    let response = cluster.call(create_topic("after", 1, 1, 1)).await;
    assert!(
        matches!(response, ControllerResponse::CreateTopic(Ok(_))),
        "{response:?}"
    );
    let leader = cluster.wait_for_active().await;
    assert_eq!(cluster.running[&leader].metadata().1.topics.len(), 2);
    alive.store(false, Ordering::SeqCst);
    cluster.shutdown().await;
}

/// A voter without Raft state names its disk, not its process, in its start-up probes: a voter
/// that joined a forming quorum and crashed before holding any state must be let in again
/// with the same disk (the simulator found a fresh cluster that never formed when the id was
/// per process), and a wiped disk must look new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_without_state_presents_the_same_disk_id_after_a_restart() {
    // Voters 1 and 2 never start: voter 3 keeps probing and never holds Raft state.
    let mut cluster = Cluster {
        network: LocalNetwork::new(),
        voters: (1..=3).map(|id| (id, format!("voter-{id}"))).collect(),
        running: BTreeMap::new(),
        dirs: mem_dirs(&[3]),
        tweak: |_| {},
    };
    let probe = |network: LocalNetwork| async move {
        let request = ControllerRequest::VoterState {
            from: 1,
            probe_id: 7,
        };
        match network.client().send(3, request).await {
            Ok(ControllerResponse::VoterState(VoterState::Empty { probe_id })) => probe_id,
            other => panic!("a voter without state answers Empty: {other:?}"),
        }
    };
    cluster.start_voter(3).await;
    let first = probe(cluster.network.clone()).await;
    cluster.kill(3).await;
    cluster.start_voter(3).await;
    let restarted = probe(cluster.network.clone()).await;
    assert_eq!(first, restarted, "same disk, same id");
    cluster.kill(3).await;
    cluster.dirs.insert(3, (MemDir::new(), MemDir::new()));
    cluster.start_voter(3).await;
    let wiped = probe(cluster.network.clone()).await;
    assert_ne!(first, wiped, "a wiped disk presents a new id");
    cluster.shutdown().await;
}

/// A voter that formed the quorum remembers, across its restarts, the disks of the voters
/// that answered "no state" in that round: one of them that crashed before holding any Raft
/// state is let in when it comes back, even if the voter that formed the quorum restarted
/// meanwhile (the simulator found a quorum that never formed while this lived in memory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_voter_still_lets_in_the_voters_it_formed_the_quorum_with() {
    let mut cluster = Cluster::start(mem_dirs(&[1, 2, 3]), |_| {}).await;
    cluster.wait_for_active().await;
    // The first voter to initialize saw both others empty: its file names both.
    let mut remembered = Vec::new();
    for (id, (_, checkpoints)) in &cluster.dirs {
        if let Ok(Some(bytes)) = checkpoints.read("voter-formed-with") {
            let formed: BTreeMap<u64, u64> = postcard::from_bytes(&bytes).expect("decodes");
            remembered.extend(formed.into_iter().map(|(other, disk)| (*id, other, disk)));
        }
    }
    assert!(!remembered.is_empty(), "some voter formed the quorum");
    let (voter, other, disk) = remembered[0];
    cluster.kill(voter).await;
    cluster.start_voter(voter).await;
    let request = ControllerRequest::VoterState {
        from: other,
        probe_id: disk,
    };
    let answer = cluster.network.client().send(voter, request).await;
    assert!(
        matches!(
            answer,
            Ok(ControllerResponse::VoterState(VoterState::HasState {
                formed_with_you: true
            }))
        ),
        "{answer:?}"
    );
    let request = ControllerRequest::VoterState {
        from: other,
        probe_id: disk ^ 1,
    };
    let answer = cluster.network.client().send(voter, request).await;
    assert!(
        matches!(
            answer,
            Ok(ControllerResponse::VoterState(VoterState::HasState {
                formed_with_you: false
            }))
        ),
        "another disk of that voter is not let in: {answer:?}"
    );
    cluster.shutdown().await;
}
