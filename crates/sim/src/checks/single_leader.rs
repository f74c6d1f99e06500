//! At most one leader per epoch: no two nodes ever act as leader of the same partition in the
//! same leader epoch (rule 1).

use super::{replicas, CheckState, Violation};
use crate::world::World;
use tandem_replication::RoleKind;

pub fn check(world: &World, state: &mut CheckState) -> Result<(), Violation> {
    for r in replicas(world) {
        if r.slot.replica.role() != RoleKind::Leader {
            continue;
        }
        let epoch = r.slot.replica.leader_epoch();
        let seen = *state.leaders.entry((r.part, epoch)).or_insert(r.node);
        if seen != r.node {
            return Err(Violation::new(
                "single-leader-per-epoch",
                format!(
                    "p{}: nodes {seen} and {} both led epoch {epoch}",
                    r.part, r.node
                ),
            ));
        }
    }
    Ok(())
}
