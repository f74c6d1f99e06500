//! Controller voters across restarts, with real processes: a fresh 3-node cluster forms, a
//! voter restarted with its data rejoins, a voter whose data directory was wiped is refused
//! (one error line naming the recovery) while the other two keep an active controller and keep
//! serving acks=all writes, and `--rejoin-as-new-voter` brings it back as a voter that counts.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{status, wait_for, Cluster};

/// Produces one line to `topic` with acks=all through the nodes in `ids`, retrying (a
/// leader may be moving) until it is acknowledged.
fn produce(cluster: &Cluster, ids: &[i32], topic: &str, line: &str) {
    let bootstrap: Vec<String> = ids.iter().map(|id| cluster.address_of(*id)).collect();
    wait_for(&format!("an acks=all produce of {line:?}"), || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tandem"));
        command
            .args(["produce", topic, "--acks", "all"])
            .env("TANDEM_BOOTSTRAP", bootstrap.join(","))
            .env("TANDEM_LOG", "warn");
        let stdin = format!("{line}\n");
        let output = cluster.run(command, stdin.as_bytes(), Duration::from_secs(20));
        output.status.success().then_some(())
    });
}

/// The active controller as node `id` knows it.
fn active_controller(cluster: &Cluster, id: i32) -> Option<i32> {
    let status = status(&cluster.address_of(id))?;
    status["active_controller"].as_i64().map(|c| c as i32)
}

/// No node's process panicked (openraft's "follower log reversion" panic kills the active
/// controller's Raft core).
fn assert_no_panic(cluster: &Cluster) {
    for id in cluster.ids() {
        let log = cluster.log_of(id);
        assert!(
            !log.contains("panicked"),
            "node {id} panicked:\n{}",
            cluster.logs()
        );
    }
}

#[test]
fn a_wiped_voter_is_refused_then_rejoins_as_a_new_voter() {
    // A fresh cluster forms: every voter starts empty and asks the others first.
    let mut cluster = Cluster::start();
    cluster.create_topic("events", 1, "2");
    produce(&cluster, &[1, 2, 3], "events", "fresh");
    let active = wait_for("an active controller", || active_controller(&cluster, 1));
    // A follower voter (the leader remembers how far its log goes), not node 1 (the harness
    // creates topics through node 1).
    let voter = *cluster
        .ids()
        .iter()
        .rev()
        .find(|id| **id != active)
        .unwrap();
    let others: Vec<i32> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != voter)
        .collect();

    // A normal restart, data intact: it rejoins at once.
    cluster.kill(voter);
    cluster.restart(voter);
    cluster.wait_until_ready("events", 1);
    produce(&cluster, &[1, 2, 3], "events", "after a restart");

    // Its whole data directory is wiped: it refuses to run as the same voter.
    cluster.kill(voter);
    std::fs::remove_dir_all(cluster.data_dir(voter)).unwrap();
    cluster.restart(voter);
    let exit = cluster
        .wait_for_exit(voter, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the wiped voter kept running:\n{}", cluster.logs()));
    assert_eq!(exit.code(), Some(2), "{}", cluster.logs());
    let log = cluster.log_of(voter);
    let error = log
        .lines()
        .rev()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line:\n{log}"));
    assert!(error.contains("has no Raft state"), "{error}");
    assert!(error.contains("--rejoin-as-new-voter"), "{error}");
    assert!(error.contains("docs/operations.md"), "{error}");

    // The other two keep an active controller and keep taking acks=all writes at
    // min.insync.replicas 2.
    produce(&cluster, &others, "events", "while the wiped voter is out");
    let controller = wait_for("an active controller", || {
        active_controller(&cluster, others[0]).filter(|c| others.contains(c))
    });
    // And it still decides: it fences and elects (a topic is created).
    cluster.create_topic_with("later", 1, 2, "1");
    assert_no_panic(&cluster);

    // The recovery: removed from the membership, added back as a new voter.
    cluster.restart_with_args(voter, &["--rejoin-as-new-voter"]);
    wait_for("the wiped voter to rejoin", || {
        cluster
            .log_of(voter)
            .contains("rejoined the controller quorum as a new voter")
            .then_some(())
    });
    cluster.wait_until_ready("events", 1);
    produce(&cluster, &[1, 2, 3], "events", "after the rejoin");

    // It counts as a voter again: with the active controller's node gone, it and the third
    // voter elect a controller, which moves leadership; acks=all writes go on.
    cluster.kill(controller);
    let survivors: Vec<i32> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != controller)
        .collect();
    produce(&cluster, &survivors, "events", "after losing another voter");
    wait_for("a new active controller", || {
        active_controller(&cluster, voter).filter(|c| survivors.contains(c))
    });
    assert_no_panic(&cluster);
}
