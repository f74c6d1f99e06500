//! Random sequences of produces, deliveries, time, clean stops and restarts, partitions and
//! clean failovers. The kit checks its invariants after every step (replicas agree below
//! their HWs, a leader's HW never goes back, model = log); at the end every acknowledged
//! acks=all write must be in the leader's log. A failing case prints its operations.

use proptest::prelude::*;
use tandem_replication::testkit::Cluster;
use tandem_replication::{Acks, RoleKind};

#[derive(Debug, Clone)]
enum Op {
    Produce { node: i32, all: bool },
    Replicate(i32),
    FetchOnce(i32),
    Settle,
    Advance(i64),
    Stop(i32),
    Restart(i32),
    Isolate(i32),
    Heal(i32),
    FailOver,
}

fn op() -> impl Strategy<Value = Op> {
    let node = 1..=3i32;
    prop_oneof![
        4 => (node.clone(), any::<bool>()).prop_map(|(node, all)| Op::Produce { node, all }),
        3 => node.clone().prop_map(Op::Replicate),
        3 => node.clone().prop_map(Op::FetchOnce),
        2 => Just(Op::Settle),
        2 => (1..40_000i64).prop_map(Op::Advance),
        1 => node.clone().prop_map(Op::Stop),
        1 => node.clone().prop_map(Op::Restart),
        1 => node.clone().prop_map(Op::Isolate),
        1 => node.prop_map(Op::Heal),
        1 => Just(Op::FailOver),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_under_random_operations(ops in prop::collection::vec(op(), 1..60)) {
        let mut c = Cluster::new(&[1, 2, 3], 2);
        let mut down = [false; 4];
        let mut count = 0;
        for op in ops {
            match op {
                Op::Produce { node, all } if !down[node as usize] => {
                    count += 1;
                    let value = format!("v{count}");
                    c.produce(node, &[&value], if all { Acks::All } else { Acks::Leader });
                }
                Op::Replicate(n) if !down[n as usize] => c.replicate(n),
                Op::FetchOnce(n) if !down[n as usize] => c.fetch_once(n),
                Op::Settle => c.settle(),
                Op::Advance(ms) => c.advance(ms),
                // At most one node down at a time, so that a clean leader always exists.
                Op::Stop(n) if !down.iter().any(|d| *d) => {
                    c.stop(n);
                    down[n as usize] = true;
                }
                Op::Restart(n) if down[n as usize] => {
                    c.restart(n);
                    down[n as usize] = false;
                }
                Op::Isolate(n) => c.isolate(n),
                Op::Heal(n) => c.heal(n),
                Op::FailOver => {
                    c.fail_over();
                }
                _ => {}
            }
        }
        // Liveness: with everyone healed and up, the cluster recovers and commits.
        for n in 1..=3 {
            c.heal(n);
            if down[n as usize] {
                c.restart(n);
            }
        }
        if !(1..=3).any(|n| c.role(n) == RoleKind::Leader) || c.isr().len() < 2 {
            c.fail_over();
        }
        c.advance(70_000);
        let leader = (1..=3).find(|n| c.role(*n) == RoleKind::Leader);
        prop_assert!(leader.is_some(), "no leader after recovery\n{}", c.trace_tail());
        let leader = leader.unwrap_or(1);
        c.assert_acked_writes_in(leader);
        let last = c.produce(leader, &["last"], Acks::All);
        c.advance(2_000);
        prop_assert!(c.acked(last), "no progress after recovery: {:?}\n{}", c.result(last), c.trace_tail());
    }
}
