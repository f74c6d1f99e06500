//! No read returns data above the serving replica's HW, nor data other than what was
//! committed at that offset (rule 3; §6 scenario 8 of replication-facts.md), or that as
//! compaction may leave it (`logs_agree::compacted_form`). Checked on every consumer fetch
//! answer, follower reads included.

use bytes::Bytes;
use tandem_replication::NodeId;
use tandem_storage::batch::split_batches;

use super::{logs_agree, Violation};
use crate::net::Part;
use crate::world::World;

pub fn check(
    world: &World,
    node: NodeId,
    part: Part,
    high_watermark: i64,
    bytes: &Bytes,
) -> Result<(), Violation> {
    let history = world.checks.committed.get(&part);
    for item in split_batches(bytes) {
        let Ok((header, raw)) = item else {
            return Err(Violation::new(
                "reads-below-hw",
                format!("n{node} p{part}: a read returned a damaged batch"),
            ));
        };
        if header.last_offset() >= high_watermark {
            return Err(Violation::new(
                "reads-below-hw",
                format!(
                    "n{node} p{part}: a consumer read offsets {}..={} with the replica's HW at {high_watermark}",
                    header.base_offset,
                    header.last_offset()
                ),
            ));
        }
        // Exposed in this very step, the batch may not be in the history yet; the per-step
        // check compares the replica's log with it right after.
        if let Some(c) = history.and_then(|h| h.get(&header.base_offset)) {
            // A compacted log serves the committed batch as compaction left it (logs_agree).
            let compacted = || {
                let horizon = world
                    .nodes
                    .get(&node)
                    .and_then(|n| n.process.as_ref())
                    .and_then(|p| p.replicas.get(&part))
                    .map_or(0, |slot| {
                        slot.replica.local_log().compaction_horizon_target()
                    });
                let raw = Bytes::copy_from_slice(raw);
                logs_agree::compacted_form(
                    &world.checks.table_writes,
                    part,
                    &c.bytes,
                    &raw,
                    horizon,
                )
                .is_ok()
            };
            if c.bytes.as_ref() != raw && !compacted() {
                return Err(Violation::new(
                    "reads-below-hw",
                    format!("n{node} p{part}: a consumer read a batch at {} that differs from the committed one", header.base_offset),
                ));
            }
        }
    }
    Ok(())
}
