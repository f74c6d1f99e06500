//! Liveness, after the faults stop (links healed, nodes restarted, controller up): within
//! `liveness_bound_ms` every partition has a leader that acts as one at the committed epoch,
//! its HW covers the whole committed history, an acks=all produce issued after the faults
//! stopped was acknowledged, and its table answered a linearizable read issued after then (the
//! leader holds its lease and its HW reached its epoch's start).
//!
//! One exemption: a partition left with an empty ISR and an empty ELR is offline *by design*
//! (unclean election is off) when its last eligible replicas may have lost committed data:
//! with `DurabilityMode::FlushNever` after unclean restarts (KIP-966), or after a node
//! registered saying it lost data (a wiped disk, a cut corrupt tail). Seed 232: the last ISR
//! member was wiped while the others were fenced; the controller rightly refused to elect it.

use tandem_replication::RoleKind;

use crate::config::DurabilityMode;
use crate::world::World;

pub enum Verdict {
    Done { offline_by_design: bool },
    Waiting(String),
}

pub fn check(world: &World) -> Verdict {
    let meta = &world.controller.metadata;
    let mut offline_by_design = false;
    let parts: Vec<_> = meta.partitions().map(|(_, i, p)| (i, p.clone())).collect();
    if parts.is_empty() {
        return Verdict::Waiting("the topic does not exist".into());
    }
    for (part, p) in parts {
        let Some(leader) = p.leader else {
            if (world.cfg.durability == DurabilityMode::FlushNever || world.lost_data_registered)
                && p.isr.is_empty()
                && p.elr.is_empty()
            {
                offline_by_design = true;
                continue;
            }
            return Verdict::Waiting(format!(
                "p{part} has no leader (isr {:?}, elr {:?})",
                p.isr, p.elr
            ));
        };
        let slot = world
            .nodes
            .get(&leader)
            .and_then(|n| n.process.as_ref())
            .and_then(|proc_| proc_.replicas.get(&part));
        let Some(slot) = slot else {
            return Verdict::Waiting(format!("p{part}: leader n{leader} has no running replica"));
        };
        if slot.replica.role() != RoleKind::Leader || slot.replica.leader_epoch() != p.leader_epoch
        {
            return Verdict::Waiting(format!(
                "p{part}: n{leader} does not act as leader of epoch {} yet",
                p.leader_epoch
            ));
        }
        let end = world.checks.committed_end(part);
        if slot.replica.high_watermark() < end {
            return Verdict::Waiting(format!(
                "p{part}: leader HW {} below the committed end {end}",
                slot.replica.high_watermark()
            ));
        }
        if !world.clients.acked_after_heal.contains_key(&part) {
            return Verdict::Waiting(format!(
                "p{part}: no acks=all acknowledgement since the faults stopped"
            ));
        }
        if !world.kv.linearizable_after_heal.contains(&part) {
            return Verdict::Waiting(format!(
                "p{part}: no linearizable table read answered since the faults stopped"
            ));
        }
    }
    Verdict::Done { offline_by_design }
}
