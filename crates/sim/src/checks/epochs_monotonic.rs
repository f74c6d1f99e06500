//! Leader and partition epochs never go back: not on any replica (within one process life),
//! not in the committed metadata.

use tandem_controller::Metadata;

use super::{replicas, CheckState, ReplicaSeen, Violation};
use crate::world::World;

pub fn check(world: &World, state: &mut CheckState) -> Result<(), Violation> {
    for r in replicas(world) {
        let Some(p) = r.slot.replica.partition() else {
            continue;
        };
        let epochs = (p.leader_epoch, p.partition_epoch);
        let seen = state
            .replicas
            .entry((r.node, r.generation, r.part))
            .or_insert(ReplicaSeen {
                epochs,
                high_watermark: r.slot.replica.high_watermark(),
                log_end_offset: r.slot.replica.local_log().log_end_offset(),
                verified_to: r.slot.replica.local_log().log_start_offset(),
                compacted: (r.slot.serial, r.slot.compactions),
            });
        if epochs < seen.epochs {
            return Err(Violation::new(
                "epochs-never-go-back",
                format!(
                    "n{} p{}: (leader epoch, partition epoch) went from {:?} to {:?}",
                    r.node, r.part, seen.epochs, epochs
                ),
            ));
        }
        seen.epochs = epochs;
    }
    Ok(())
}

/// Between two committed metadata versions.
pub fn check_committed(before: &Metadata, after: &Metadata) -> Result<(), Violation> {
    for (topic_id, topic) in &after.topics {
        let Some(old) = before.topics.get(topic_id) else {
            continue;
        };
        for (i, (p, q)) in old.partitions.iter().zip(&topic.partitions).enumerate() {
            if q.leader_epoch < p.leader_epoch || q.partition_epoch < p.partition_epoch {
                return Err(Violation::new(
                    "epochs-never-go-back",
                    format!(
                        "committed p{i}: epochs ({}, {}) -> ({}, {})",
                        p.leader_epoch, p.partition_epoch, q.leader_epoch, q.partition_epoch
                    ),
                ));
            }
        }
    }
    Ok(())
}
