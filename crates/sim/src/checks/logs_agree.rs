//! All replicas agree below their HW, and committed data never changes: every batch a replica
//! holds below its HW equals the committed history's batch at that offset, and the history
//! only grows. The history is built from what replicas expose, so two replicas that disagree
//! below their HWs cannot both match it. Incremental: each replica's log is compared once
//! per offset (`verified_to`), except after it is cut.

use std::ops::Bound;

use super::{
    no_duplicates, replicas, session_reads, CheckState, CommittedBatch, ReplicaSeen, Violation,
};
use crate::world::World;

pub fn check(world: &World, state: &mut CheckState) -> Result<(), Violation> {
    for r in replicas(world) {
        let log = r.slot.replica.local_log();
        let seen = state
            .replicas
            .entry((r.node, r.generation, r.part))
            .or_insert(ReplicaSeen {
                epochs: (-1, -1),
                high_watermark: r.slot.replica.high_watermark(),
                verified_to: log.log_start_offset(),
            });
        let mirror = &r.slot.mirror;
        let log_end = mirror.last().map_or(log.log_start_offset(), |b| b.1 + 1);
        // A cut below what was compared (the HW check reports it if it was below the HW).
        seen.verified_to = seen.verified_to.min(log_end).max(log.log_start_offset());
        let hw = r.slot.replica.high_watermark();
        if seen.verified_to >= hw {
            continue;
        }
        let from = mirror.partition_point(|b| b.1 < seen.verified_to);
        let history = state.committed.entry(r.part).or_default();
        let mut verified_to = seen.verified_to;
        for (base, last, bytes) in &mirror[from..] {
            if *last >= hw {
                break;
            }
            match history.get(base) {
                Some(c) if c.last_offset == *last && c.bytes == *bytes => {}
                Some(c) => {
                    return Err(Violation::new(
                        "logs-agree-below-hw",
                        format!(
                            "p{}: n{} holds a different batch at offset {base} below its HW {hw} \
                             (offsets {base}..={last}) than the committed one (offsets {base}..={}, \
                             first exposed by n{} at {} ms)",
                            r.part, r.node, c.last_offset, c.first_seen.0, c.first_seen.1
                        ),
                    ))
                }
                None => {
                    // New committed data: it must fit between its neighbours exactly.
                    let before = history.range(..*base).next_back();
                    let after = history.range((Bound::Excluded(*base), Bound::Unbounded)).next();
                    let overlaps = before.is_some_and(|(_, c)| c.last_offset >= *base)
                        || after.is_some_and(|(b, _)| *b <= *last);
                    if overlaps {
                        return Err(Violation::new(
                            "logs-agree-below-hw",
                            format!(
                                "p{}: n{} exposes batch {base}..={last} below HW {hw}, which overlaps \
                                 different committed batches",
                                r.part, r.node
                            ),
                        ));
                    }
                    no_duplicates::on_committed(r.part, bytes, *base, &mut state.producer_batches)?;
                    session_reads::on_committed(r.part, bytes, &mut state.table_writes);
                    history.insert(
                        *base,
                        CommittedBatch { last_offset: *last, bytes: bytes.clone(), first_seen: (r.node, world.now) },
                    );
                }
            }
            verified_to = last + 1;
        }
        if let Some(seen) = state.replicas.get_mut(&(r.node, r.generation, r.part)) {
            seen.verified_to = verified_to;
        }
    }
    Ok(())
}
