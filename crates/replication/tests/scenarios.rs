//! Scenario tests: whole exchanges between a leader, its followers and the controller, each
//! named after the rule or the bug it pins (research/replication-facts.md §1, §2 and §6).
//! The kit checks after every step that replicas agree below their HWs, that a leader's HW
//! never goes back, and that each replica's model matches its log.

use tandem_replication::testkit::Cluster;
use tandem_replication::{Acks, ProduceError, RoleKind};

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

#[test]
fn acks_all_completes_once_every_isr_member_has_the_batch() {
    let mut c = Cluster::new(&[1, 2, 3], 2);
    let id = c.produce(1, &["a", "b", "c"], Acks::All);
    c.replicate(2);
    assert!(!c.acked(id), "3 is in the ISR and has not fetched");
    c.replicate(3);
    assert_eq!(c.acked_offset(id), Some(0));
    assert_eq!(c.hw(1), 3);
    c.settle();
    assert_eq!(
        (c.hw(2), c.hw(3)),
        (3, 3),
        "followers learn the HW one round later"
    );
}

#[test]
fn long_poll_replicates_in_a_round_trip_without_waiting() {
    let mut c = Cluster::new(&[1, 2, 3], 2);
    c.settle(); // both followers' fetches are parked at the leader
    let id = c.produce(1, &["a"], Acks::All);
    c.settle(); // the append wakes them: no max wait, no tick
    assert!(c.acked(id));
    assert_eq!(c.now_ms(), 0);
}

#[test]
fn a_crashed_follower_leaves_the_isr_after_the_lag_time_and_the_hw_moves_on() {
    // produce 3 on 1; 2 fetches; crash 3; advance 31 s; expect ISR proposal {1,2}; expect HW 3.
    let mut c = Cluster::new(&[1, 2, 3], 2);
    let id = c.produce(1, &["a", "b", "c"], Acks::All);
    c.replicate(2);
    c.crash(3);
    c.advance(29_000);
    assert_eq!(c.hw(1), 0, "3 still counts until it is out of the ISR");
    c.advance(2_000);
    assert_eq!(c.isr_proposals().last(), Some(&(1, vec![1, 2])));
    assert_eq!(c.isr(), [1, 2]);
    assert_eq!(c.hw(1), 3);
    assert!(c.acked(id));
}

#[test]
fn kip_101_case_1_a_restarted_follower_keeps_what_it_fetched_above_its_hw() {
    // A follower fetched m2 but had not learned the HW that covers it. It restarts, then the
    // leader dies and it is elected. Truncating to its HW on restart would lose acked m2.
    let mut c = Cluster::new(&[1, 2], 1);
    let m1 = c.produce(1, &["m1"], Acks::All);
    c.replicate(2);
    let m2 = c.produce(1, &["m2"], Acks::All);
    c.fetch_once(2); // 2 appends m2
    c.deliver_fetch(2); // its next fetch tells the leader: HW 2, m2 acked
    assert!(c.acked(m1) && c.acked(m2));
    assert_eq!(c.hw(2), 1, "the answer carrying HW 2 is still in flight");
    c.stop(2);
    c.restart(2);
    assert_eq!(c.leo(2), 2, "no truncation to the HW checkpoint");
    c.crash(1);
    c.elect_with_isr(2, &[2]);
    assert_eq!(c.values(2), strings(&["m1", "m2"]));
    c.assert_acked_writes_in(2);
    assert!(c.truncations(2).is_empty());
}

#[test]
fn kip_101_case_2_replicas_that_lost_different_tails_converge() {
    // Both replicas crash; the one that comes back first leads and writes m3 at the offset
    // where the other still has the uncommitted m2. The epoch cache makes the other cut m2.
    let mut c = Cluster::new(&[1, 2], 1);
    c.produce(1, &["m1"], Acks::All);
    c.replicate(2);
    c.produce(1, &["m2"], Acks::Leader); // only on 1, never committed
    c.flush(1);
    c.flush(2);
    c.crash(1);
    c.crash(2);
    c.restart(2);
    c.elect_with_isr(2, &[2]);
    let m3 = c.produce(2, &["m3"], Acks::Leader);
    assert_eq!(c.acked_offset(m3), Some(1));
    c.restart(1);
    c.replicate(1);
    assert_eq!(c.truncations(1), [1]);
    assert_eq!(c.values(1), strings(&["m1", "m3"]));
    assert_eq!(c.values(2), c.values(1));
}

#[test]
fn kip_279_two_leader_changes_in_quick_succession() {
    // Epoch 1's leader (2) wrote b and reached only 3; epoch 2's leader (1) wrote c and reached
    // nobody; epoch 3's leader is 3. Node 1 last fetched epoch 2, which 3 never saw; 3 answers
    // with epoch 1, which 1 never saw. 1 must cut to the end of its own epoch 0 and ask again.
    let mut c = Cluster::new(&[1, 2, 3], 1);
    c.produce(1, &["a"], Acks::All);
    c.settle();
    c.isolate(1);
    c.elect(2);
    c.produce(2, &["b"], Acks::Leader);
    c.replicate(3);
    c.isolate(2);
    c.isolate(3);
    c.heal(1);
    c.elect(1);
    c.produce(1, &["c"], Acks::Leader);
    c.isolate(1);
    c.heal(3);
    c.elect(3);
    c.produce(3, &["d"], Acks::Leader);
    c.heal(1);
    c.advance(1_100); // 1's lost fetch times out and is sent again
    assert_eq!(c.truncations(1), [1]);
    assert_eq!(c.values(1), strings(&["a", "b", "d"]));
    assert_eq!(c.values(3), c.values(1));
}

#[test]
fn kafka_7128_a_lagging_follower_does_not_rejoin_before_the_new_epoch_start() {
    let mut c = Cluster::new(&[1, 2, 3], 1);
    c.produce(1, &["a"], Acks::All);
    c.settle();
    c.isolate(3);
    let acked = c.produce(1, &["b", "c"], Acks::All);
    c.fetch_once(2); // 2 appends b and c
    c.deliver_fetch(2); // the leader learns it; 3 holds the HW at 1
    c.advance_without_network(31_000); // 3 lags: out of the ISR, HW 3, b and c acked
    assert_eq!(c.isr(), [1, 2]);
    assert!(c.acked(acked));
    assert_eq!(c.hw(2), 1, "2 has not learned the HW that covers b and c");
    // Leadership moves to 2 (epoch 1 starts at 3). Its HW is still 1, and stays there until
    // 1 fetches in the new epoch.
    c.elect_with_isr(2, &[1, 2]);
    assert_eq!(c.hw(2), 1);
    c.heal(3);
    c.advance_without_network(1_000); // 3's lost fetch times out and goes to 2
    c.deliver_fetch(3);
    assert_eq!(c.replica(2).follower_log_end_offset(3), Some(1));
    // LEO 1 ≥ HW 1, but below the epoch start 3: not in sync. Had it joined, electing it
    // next would lose the acked b and c.
    assert_eq!(c.isr(), [1, 2]);
    assert!(!c
        .isr_proposals()
        .iter()
        .any(|(from, isr)| *from == 2 && isr.contains(&3)));
    c.replicate(3);
    assert_eq!(c.isr(), [1, 2, 3]);
    c.assert_acked_writes_in(3);
}

#[test]
fn an_old_leader_cuts_its_uncommitted_suffix_when_it_rejoins() {
    let mut c = Cluster::new(&[1, 2, 3], 2);
    c.produce(1, &["a"], Acks::All);
    c.settle();
    c.isolate(1); // cut off from its followers, still reachable by clients
    let x = c.produce(1, &["x"], Acks::All);
    let y = c.produce(1, &["y"], Acks::Leader);
    assert!(c.acked(y), "acks=1 is the leader's word alone");
    c.elect_with_isr(2, &[2, 3]);
    assert_eq!(c.role(1), RoleKind::Follower);
    assert!(matches!(
        c.result(x),
        Some(Err(e @ ProduceError::NotLeaderAfterAppend { .. })) if e.is_indeterminate()
    ));
    let b = c.produce(2, &["b"], Acks::All);
    c.settle();
    assert!(c.acked(b));
    c.heal(1);
    c.advance(1_100);
    assert_eq!(c.truncations(1), [1]);
    assert_eq!(c.values(1), strings(&["a", "b"]));
    assert_eq!(c.hw(1), 2);
}

#[test]
fn acks_all_while_the_isr_shrinks_mid_flight_is_indeterminate_and_may_still_commit() {
    let mut c = Cluster::new(&[1, 2, 3], 2);
    c.isolate(2);
    c.isolate(3);
    let id = c.produce(1, &["a"], Acks::All);
    c.advance(31_000);
    assert_eq!(c.isr(), [1]);
    assert!(matches!(
        c.result(id),
        Some(Err(e @ ProduceError::NotEnoughReplicasAfterAppend { .. })) if e.is_indeterminate()
    ));
    assert_eq!(c.hw(1), 0, "the HW is frozen under min.insync");
    let refused = c.produce(1, &["b"], Acks::All);
    assert!(matches!(
        c.result(refused),
        Some(Err(ProduceError::NotEnoughReplicas { .. }))
    ));
    // 2 comes back, rejoins, and the indeterminate batch commits after all.
    c.heal(2);
    c.advance(1_100);
    assert_eq!(c.isr(), [1, 2]);
    assert_eq!(c.committed_values(1), strings(&["a"]));
}

#[test]
fn a_retried_batch_after_a_leader_change_is_not_written_twice() {
    let mut c = Cluster::new(&[1, 2, 3], 2);
    let first = c.produce_idempotent(1, (7, 0, 0), &["a", "b"], Acks::All);
    c.settle();
    assert_eq!(c.acked_offset(first), Some(0));
    // The leader writes and replicates c, but its answer never reaches the producer.
    c.produce_idempotent(1, (7, 0, 2), &["c"], Acks::All);
    c.settle();
    c.crash(1);
    c.elect_with_isr(2, &[2, 3]);
    let retry = c.produce_idempotent(2, (7, 0, 2), &["c"], Acks::All);
    c.settle();
    assert_eq!(c.acked_offset(retry), Some(2), "the original offset");
    assert_eq!(c.values(2), strings(&["a", "b", "c"]));
    // Dedupe survives a restart too: the producer state is rebuilt from the log.
    c.stop(3);
    c.restart(3);
    c.elect_with_isr(3, &[2, 3]);
    let again = c.produce_idempotent(3, (7, 0, 2), &["c"], Acks::All);
    c.settle();
    assert_eq!(
        c.acked_offset(again),
        Some(2),
        "{:?}\n{}",
        c.result(again),
        c.trace_tail()
    );
    let gap = c.produce_idempotent(3, (7, 0, 9), &["z"], Acks::All);
    assert!(matches!(
        c.result(gap),
        Some(Err(ProduceError::OutOfOrderSequence { .. }))
    ));
    assert_eq!(c.values(3), strings(&["a", "b", "c"]));
}

#[test]
fn the_hw_is_never_exposed_above_what_truncation_leaves() {
    // KAFKA-14704: the answer that tells a follower to truncate also carries the leader's HW.
    // Applied first, min(HW 4, LEO 3) = 3 would expose x1 and x2, which the leader never had.
    let mut c = Cluster::new(&[1, 2, 3], 1);
    c.produce(1, &["a"], Acks::All);
    c.settle();
    c.isolate(1);
    c.produce(1, &["x1", "x2"], Acks::Leader);
    c.elect_with_isr(2, &[2, 3]);
    c.produce(2, &["b", "c", "d"], Acks::All);
    c.settle();
    assert_eq!(c.hw(2), 4);
    c.heal(1);
    c.advance_without_network(1_000); // 1's lost fetch times out and is sent again
    c.fetch_once(1);
    assert_eq!(c.truncations(1), [1]);
    assert_eq!(c.hw(1), 1);
    assert_eq!(c.committed_values(1), strings(&["a"]));
    c.replicate(1);
    assert_eq!(c.committed_values(1), strings(&["a", "b", "c", "d"]));
}

#[test]
fn a_restarted_follower_catches_up_and_rejoins_the_isr() {
    let mut c = Cluster::new(&[1, 2, 3], 2);
    c.produce(1, &["a"], Acks::All);
    c.settle();
    c.crash(3); // nothing flushed: it comes back empty
    c.produce(1, &["b"], Acks::All);
    c.advance(31_000);
    assert_eq!(c.isr(), [1, 2]);
    c.restart(3);
    c.settle();
    assert_eq!(c.isr(), [1, 2, 3]);
    assert_eq!(c.values(3), strings(&["a", "b"]));
}

#[test]
fn a_flushed_acks_all_write_survives_every_replica_crashing() {
    let mut c = Cluster::new(&[1, 2, 3], 2);
    let id = c.produce_flushed(1, &["a"], Acks::All);
    c.settle();
    assert!(c.acked(id));
    for n in [1, 2, 3] {
        c.crash(n);
    }
    for n in [1, 2, 3] {
        c.restart(n);
    }
    c.elect(3);
    assert_eq!(c.values(3), strings(&["a"]));
    c.assert_acked_writes_in(3);
}

#[test]
fn a_new_leader_alone_in_the_isr_serves_the_latest_offset_at_once() {
    let mut c = Cluster::new(&[1, 2], 1);
    c.produce(1, &["a", "b"], Acks::All);
    c.fetch_once(2);
    c.deliver_fetch(2);
    c.crash(1);
    c.elect_with_isr(2, &[2]);
    // 2's HW was 0 (the answer with HW 2 was lost) and its epoch starts at 2; alone in the
    // ISR, its HW reaches 2 at once, so latest is available right away. (The
    // OffsetNotAvailable case is the unit test of the same rule in replica/tests.rs.)
    assert_eq!(c.hw(2), 2);
    let latest = c
        .replica(2)
        .latest_offset(None, tandem_replication::Isolation::Committed);
    assert_eq!(latest, Ok(2));
}

// ---- compaction of key-value tables: the tombstone horizon ----

mod compaction {
    use tandem_replication::testkit::Cluster;
    use tandem_replication::{Acks, ReplicaConfig};
    use tandem_storage::{CompactionConfig, LogConfig};

    fn table_cluster() -> Cluster {
        let log_config = LogConfig {
            segment_bytes: 1024,
            index_interval_bytes: 64,
            ..LogConfig::default()
        };
        Cluster::with_log_config(&[1, 2, 3], 1, ReplicaConfig::default(), log_config)
    }

    fn compaction() -> CompactionConfig {
        CompactionConfig {
            tombstone_retention_ms: 1_000,
            ..CompactionConfig::default()
        }
    }

    /// Enough puts of other keys to fill a few segments.
    fn fill(c: &mut Cluster, from: usize) {
        for i in from..from + 20 {
            let value = format!("{i:0>60}");
            c.put(1, &[("filler", Some(&value))], Acks::Leader);
        }
        c.settle();
    }

    /// Kafka's delete.retention.ms hazard. Node 3 holds b=1, stops, and misses the delete of
    /// b; the leader compacts the delete away once it is old. Fetching on from its own end
    /// node 3 would never see the delete and keep b forever; the leader refuses that fetch
    /// (its offset is below the compaction horizon), node 3 empties its log, copies the
    /// compacted log from the start, and ends with the leader's table.
    #[test]
    fn a_follower_behind_the_compaction_horizon_copies_the_log_again_and_converges() {
        let mut c = table_cluster();
        c.put(1, &[("a", Some("1")), ("b", Some("1"))], Acks::All);
        c.settle();
        c.stop(3);
        c.put(1, &[("b", None), ("a", Some("2"))], Acks::Leader);
        fill(&mut c, 0);
        c.advance(31_000); // 3 leaves the ISR, the delete is now old
        fill(&mut c, 100);
        let report = c.compact(1, &compaction());
        assert_eq!(report.tombstones_removed, 1, "{report:?}");
        assert!(report.compaction_horizon > 2);
        assert_eq!(c.leo(3), 2, "node 3 ends below the horizon");

        c.restart(3);
        c.settle();
        c.advance(2_000);
        assert_eq!(c.leo(3), c.leo(1));
        assert_eq!(c.hw(3), c.hw(1));
        assert_eq!(c.table(3), c.table(1));
        assert_eq!(c.table(3).get("b"), None, "the delete reached node 3");
        assert_eq!(c.table(3).get("a").map(String::as_str), Some("2"));
        assert_eq!(
            c.values(3),
            c.values(1),
            "node 3 holds a copy of the compacted log"
        );
        // Node 2 was in sync all along: it has the delete, so it was never sent back.
        assert_eq!(c.table(2), c.table(1));
    }

    /// Puts of keys written once each: nothing for compaction to remove.
    fn fill_unique(c: &mut Cluster, from: usize) {
        for i in from..from + 20 {
            let (key, value) = (format!("u{i}"), format!("{i:0>60}"));
            c.put(1, &[(&key, Some(&value))], Acks::Leader);
        }
        c.settle();
    }

    /// Sim seed 12, here with no tombstone old enough to go: the leader's compaction removes
    /// only superseded records, among them a delete of k that a later put replaced. Node 3,
    /// holding k's first put, would fetch on from its end through the cleaned region and stop
    /// between the delete (gone) and the put (not reached): k present where the history says
    /// absent. The horizon covers every removed record, so node 3 copies the log instead.
    #[test]
    fn a_follower_behind_a_compaction_that_removed_only_superseded_records_copies_the_log() {
        let mut c = table_cluster();
        c.put(1, &[("k", Some("1"))], Acks::All);
        c.settle();
        c.stop(3);
        let stopped_at = c.leo(3);
        c.put(1, &[("k", None)], Acks::Leader);
        fill(&mut c, 0);
        c.put(1, &[("k", Some("2"))], Acks::Leader);
        c.advance(31_000); // 3 leaves the ISR: the HW moves on
        fill(&mut c, 100);
        let report = c.compact(1, &CompactionConfig::default());
        assert_eq!(report.tombstones_removed, 1, "k's delete, superseded");
        assert!(report.compaction_horizon > stopped_at, "{report:?}");

        c.restart(3);
        c.settle();
        c.advance(2_000);
        assert_eq!(c.table(3), c.table(1));
        assert_eq!(
            c.values(3),
            c.values(1),
            "node 3 holds a copy of the compacted log"
        );
    }

    /// A follower that already has every record the leader removed (its log ends at or above
    /// the horizon) goes on from its end: nothing is copied again.
    #[test]
    fn a_follower_at_or_above_the_horizon_fetches_on_from_its_end() {
        let mut c = table_cluster();
        c.put(1, &[("a", Some("1")), ("b", Some("1"))], Acks::All);
        c.put(1, &[("b", None)], Acks::All);
        fill(&mut c, 0);
        c.stop(3);
        let stopped_at = c.leo(3);
        fill_unique(&mut c, 100);
        c.advance(31_000);
        fill_unique(&mut c, 200);
        let report = c.compact(1, &compaction());
        assert_eq!(report.tombstones_removed, 1);
        assert!(report.compaction_horizon <= stopped_at);
        let before = c.values(3);

        c.restart(3);
        c.settle();
        c.advance(2_000);
        assert_eq!(c.leo(3), c.leo(1));
        assert_eq!(c.table(3), c.table(1));
        let after = c.values(3);
        assert_eq!(
            &after[..before.len()],
            &before[..],
            "node 3 kept its own log (b's records included) and appended after it"
        );
    }

    /// Every replica compacts its own log; the tables stay identical, and a follower that
    /// compacted can still lead a follower behind its own horizon back into agreement.
    #[test]
    fn every_replica_compacts_and_the_tables_stay_identical_across_a_failover() {
        let mut c = table_cluster();
        c.put(
            1,
            &[("a", Some("1")), ("b", Some("1")), ("c", Some("1"))],
            Acks::All,
        );
        c.settle();
        c.stop(3);
        c.put(1, &[("b", None), ("c", Some("2"))], Acks::All);
        fill(&mut c, 0);
        c.advance(31_000);
        fill(&mut c, 100);
        c.compact(1, &compaction());
        c.compact(2, &compaction());
        assert_eq!(c.table(1), c.table(2));
        // 1 dies; 2 leads; 3 comes back behind 2's horizon.
        c.stop(1);
        c.elect(2);
        c.restart(3);
        c.settle();
        c.advance(2_000);
        assert_eq!(c.table(3), c.table(2));
        assert_eq!(c.table(3).get("b"), None);
    }
}
