//! No acknowledged acks=all record is lost: when a client hears "acknowledged at offset o",
//! the batch is in the committed history at o, and at the end of the run it is in the
//! leader's log at o (rule 4, and §6 scenario 1 of replication-facts.md).

use bytes::Bytes;
use tandem_replication::{Acks, RoleKind};
use tandem_storage::batch::decode_records;

use super::Violation;
use crate::workload::Outcome;
use crate::world::World;

fn values(bytes: &Bytes) -> Vec<String> {
    decode_records(bytes)
        .map(|records| {
            records
                .iter()
                .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or(b"")).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// At the acknowledgement of batch `batch`.
pub fn on_ack(world: &World, batch: u64) -> Result<(), Violation> {
    let Some(b) = world.clients.batches.get(&batch) else {
        return Ok(());
    };
    let Outcome::Acked { base_offset } = b.outcome else {
        return Ok(());
    };
    let found = world
        .checks
        .committed
        .get(&b.part)
        .and_then(|h| h.get(&base_offset))
        .map(|c| values(&c.bytes));
    if found.as_ref() != Some(&b.values) {
        return Err(Violation::new(
            "acked-writes-survive",
            format!(
                "p{}: batch {batch} {:?} acknowledged (acks=all) at offset {base_offset}, but the \
                 committed history holds {found:?} there",
                b.part, b.values
            ),
        ));
    }
    Ok(())
}

/// At the end: every acks=all acknowledgement is in the leader's log, at its offset.
pub fn final_check(world: &World) -> Result<(), Violation> {
    for (id, b) in &world.clients.batches {
        let Outcome::Acked { base_offset } = b.outcome else {
            continue;
        };
        if b.acks != Acks::All {
            continue;
        }
        if world.stats.offline_by_design && leader_slot(world, b.part).is_none() {
            continue;
        }
        let Some(slot) = leader_slot(world, b.part) else {
            return Err(Violation::new(
                "acked-writes-survive",
                format!("p{}: no leader at the end", b.part),
            ));
        };
        let at = slot.mirror.iter().find(|m| m.0 == base_offset);
        let found = at.map(|m| values(&m.2));
        if found.as_ref() != Some(&b.values) {
            return Err(Violation::new(
                "acked-writes-survive",
                format!(
                    "p{}: batch {id} {:?} acknowledged (acks=all) at offset {base_offset} is lost: \
                     the final leader holds {found:?} there",
                    b.part, b.values
                ),
            ));
        }
    }
    Ok(())
}

fn leader_slot(world: &World, part: u32) -> Option<&crate::node::Slot> {
    world.nodes.values().find_map(|n| {
        let slot = n.process.as_ref()?.replicas.get(&part)?;
        (slot.replica.role() == RoleKind::Leader
            && Some(n.id)
                == world
                    .controller
                    .metadata
                    .partitions()
                    .nth(part as usize)
                    .and_then(|(_, _, p)| p.leader))
        .then_some(slot)
    })
}
