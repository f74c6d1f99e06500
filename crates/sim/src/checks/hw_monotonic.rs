//! The HW never goes back: on any replica within one process life, and on the leader of an
//! epoch across that epoch (rule 3).
//!
//! One exception, the only way a replica's log is emptied while it runs: a follower whose log
//! ended below the compaction horizon of a replica of its partition (the leader that sent
//! it to copy) empties its log to copy the compacted one from the start, and its HW restarts
//! at the log start (docs/tables.md, "Compaction"). Allowed only then, and only for a replica
//! outside the committed ISR: acks=all and the HW rest on every ISR member holding what was
//! committed (`hw_within_isr`), so an ISR member must never be the one dropping it; sessions
//! rest on the table serving nothing until the copy passes the horizon (`table_matches_log`,
//! `session_reads`).

use tandem_replication::RoleKind;

use super::{replicas, CheckState, ReplicaRef, Violation};
use crate::node::partition_state;
use crate::world::World;

pub fn check(world: &World, state: &mut CheckState) -> Result<(), Violation> {
    for r in replicas(world) {
        let hw = r.slot.replica.high_watermark();
        let log = r.slot.replica.local_log();
        if let Some(seen) = state.replicas.get_mut(&(r.node, r.generation, r.part)) {
            if hw < seen.high_watermark {
                if let Err(why) = copying_a_compacted_log(world, &r, seen.log_end_offset) {
                    return Err(Violation::new(
                        "hw-never-goes-back",
                        format!(
                            "n{} p{}: HW went from {} to {hw} ({why})",
                            r.node, r.part, seen.high_watermark
                        ),
                    ));
                }
            }
            seen.high_watermark = hw;
            seen.log_end_offset = log.log_end_offset();
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

/// Whether the replica's HW went back because it started to copy a compacted log: `Err` says
/// what does not fit.
fn copying_a_compacted_log(
    world: &World,
    r: &ReplicaRef<'_>,
    previous_log_end: i64,
) -> Result<(), String> {
    let log = r.slot.replica.local_log();
    let hw = r.slot.replica.high_watermark();
    if r.slot.replica.role() != RoleKind::Follower
        || hw != log.log_start_offset()
        || log.log_end_offset() != log.log_start_offset()
    {
        return Err("not a follower that emptied its log".into());
    }
    let horizon = replicas(world)
        .iter()
        .filter(|o| o.part == r.part)
        // What the core sends followers to copy by: at most its LEO.
        .map(|o| o.slot.replica.local_log().compaction_horizon())
        .max()
        .unwrap_or(0);
    if previous_log_end >= horizon {
        return Err(format!(
            "its log ended at {previous_log_end}, not below any compaction horizon (at most {horizon})"
        ));
    }
    let meta = &world.controller.metadata;
    let in_isr = meta.topics.keys().next().is_some_and(|topic_id| {
        partition_state(meta, *topic_id, r.part).is_some_and(|p| p.isr.contains(&r.node))
    });
    let current = meta.node(r.node).map(|n| n.incarnation);
    let process_incarnation = world
        .nodes
        .get(&r.node)
        .and_then(|n| n.process.as_ref())
        .and_then(|p| p.incarnation);
    if in_isr && process_incarnation.is_some() && process_incarnation == current {
        return Err("it emptied its log while a member of the committed ISR".into());
    }
    Ok(())
}
