//! HW ≤ LEO of every ISR member: the leader's HW never passes the log end of a member of its
//! committed ISR (rules 3 and 5; a proposed removal must not count before it commits).
//!
//! Checked while the leader's view of the partition is the committed one, for members whose
//! running process is the incarnation the controller knows: a restarted member was fenced out
//! of the ISR by its registration, so if it is in the ISR now it rejoined with LEO ≥ HW.

use tandem_replication::RoleKind;

use super::{replicas, Violation};
use crate::node::partition_state;
use crate::world::World;

pub fn check(world: &World) -> Result<(), Violation> {
    let meta = &world.controller.metadata;
    let Some(topic_id) = meta.topics.keys().next().copied() else {
        return Ok(());
    };
    for r in replicas(world) {
        if r.slot.replica.role() != RoleKind::Leader {
            continue;
        }
        let (Some(view), Some(committed)) = (
            r.slot.replica.partition(),
            partition_state(meta, topic_id, r.part),
        ) else {
            continue;
        };
        if (view.leader_epoch, view.partition_epoch)
            != (committed.leader_epoch, committed.partition_epoch)
        {
            continue;
        }
        let hw = r.slot.replica.high_watermark();
        for member in &view.isr {
            if *member == r.node {
                continue;
            }
            let Some(node) = world.nodes.get(member) else {
                continue;
            };
            let Some(process) = &node.process else {
                continue;
            };
            let current = meta.node(*member).map(|n| n.incarnation);
            if process.incarnation.is_none() || process.incarnation != current {
                continue;
            }
            let Some(slot) = process.replicas.get(&r.part) else {
                continue;
            };
            let leo = slot.replica.local_log().log_end_offset();
            if hw > leo {
                return Err(Violation::new(
                    "hw-within-isr",
                    format!(
                        "p{}: leader n{} (epoch {}) has HW {hw} above ISR member n{member}'s LEO {leo}; ISR {:?}",
                        r.part, r.node, view.leader_epoch, view.isr
                    ),
                ));
            }
        }
    }
    Ok(())
}
