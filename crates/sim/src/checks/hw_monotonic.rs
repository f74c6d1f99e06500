//! The HW never goes back: on any replica within one process life, and on the leader of an
//! epoch across that epoch (rule 3).

use tandem_replication::RoleKind;

use super::{replicas, CheckState, Violation};
use crate::world::World;

pub fn check(world: &World, state: &mut CheckState) -> Result<(), Violation> {
    for r in replicas(world) {
        let hw = r.slot.replica.high_watermark();
        if let Some(seen) = state.replicas.get_mut(&(r.node, r.generation, r.part)) {
            if hw < seen.high_watermark {
                return Err(Violation::new(
                    "hw-never-goes-back",
                    format!(
                        "n{} p{}: HW went from {} to {hw}",
                        r.node, r.part, seen.high_watermark
                    ),
                ));
            }
            seen.high_watermark = hw;
        }
        if r.slot.replica.role() == RoleKind::Leader {
            let epoch = r.slot.replica.leader_epoch();
            let seen = state
                .leader_high_watermarks
                .entry((r.part, epoch))
                .or_insert(hw);
            if hw < *seen {
                return Err(Violation::new(
                    "hw-never-goes-back",
                    format!(
                        "p{}: the leader of epoch {epoch} (n{}) showed HW {} then {hw}",
                        r.part, r.node, *seen
                    ),
                ));
            }
            *seen = hw;
        }
    }
    Ok(())
}
