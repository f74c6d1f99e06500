//! Every replica's table is its own log below its HW (DESIGN.md "Key-value tables": each
//! replica applies the records below HW to its index): after every event, each replica's
//! table has applied exactly up to its HW, and its committed map holds, for each key, the
//! latest put below the HW (value, offset as version, epoch), unless a delete follows it.
//! Two exceptions: a table restored from a snapshot may have applied past the HW its replica
//! recovered (the HW checkpoint lags the snapshot) until the HW catches up; it must then have
//! applied only committed offsets, and hold exactly the committed state there. And while the
//! HW is below the log's compaction horizon (a copy of a compacted log under way) the table
//! stays behind it, where it was: again exactly the committed state there.
//!
//! The reference is the committed history's writes per key (`CheckState::table_writes`,
//! indexed once per committed batch), not the replica's table code: `logs_agree` has just
//! checked that the replica's log below its HW *is* that history, so the latest write of each
//! key below the HW there is the latest in the replica's own log. A replica is compared again
//! only when its HW or its table changed.

use std::collections::BTreeMap;

use bytes::Bytes;
use tandem_replication::NodeId;

use super::{replicas, CheckState, Violation};
use crate::net::Part;
use crate::world::World;

/// (node, process generation, partition, slot serial) -> (HW, the table's applied offset, its
/// number of keys) when last compared.
pub type Compared = BTreeMap<(NodeId, u64, Part, u64), (i64, i64, usize)>;

pub fn check(world: &World, state: &mut CheckState) -> Result<(), Violation> {
    for r in replicas(world) {
        let hw = r.slot.replica.high_watermark();
        let table = r.slot.table.table();
        let fingerprint = (hw, table.applied_offset(), table.len());
        let key = (r.node, r.generation, r.part, r.slot.serial);
        if state.tables.insert(key, fingerprint) == Some(fingerprint) {
            continue;
        }
        let fail = |detail: String| {
            Err(Violation::new(
                "table-matches-log",
                format!("n{} p{}: {detail}", r.node, r.part),
            ))
        };
        let applied = table.applied_offset();
        let committed_end = state.committed_end(r.part);
        // Below its log's compaction horizon a table stays where it was (an emptied copy at
        // its log start): it must then hold the committed state there, checked below.
        let held = hw < r.slot.table.compaction_horizon();
        if (applied < hw && !held) || (applied > hw && applied > committed_end) {
            return fail(format!(
                "the table applied up to {applied}, the replica's HW is {hw} (the committed \
                 history ends at {committed_end})"
            ));
        }
        let part_keys = (r.part, Bytes::new())..(r.part + 1, Bytes::new());
        let expected: Vec<(&Bytes, i64, &Bytes, i32)> = state
            .table_writes
            .range(part_keys)
            .filter_map(|((_, key), writes)| {
                let (offset, value) = writes.range(..applied).next_back()?;
                let (value, epoch) = value.as_ref()?;
                Some((key, *offset, value, *epoch))
            })
            .collect();
        let same = table.len() == expected.len()
            && table.committed().iter().zip(&expected).all(
                |((k, e), (key, offset, value, epoch))| {
                    k == *key
                        && e.version == *offset
                        && e.value == **value
                        && e.leader_epoch == *epoch
                },
            );
        if !same {
            let table: Vec<(&Bytes, &Bytes, i64, i32)> = table
                .committed()
                .iter()
                .map(|(k, e)| (k, &e.value, e.version, e.leader_epoch))
                .collect();
            let log: Vec<(&Bytes, &Bytes, i64, i32)> = expected
                .iter()
                .map(|(k, o, v, epoch)| (*k, *v, *o, *epoch))
                .collect();
            return fail(format!(
                "the table below {applied} (HW {hw}) is {table:?}, but the log below it holds \
                 {log:?} (key, value, version, epoch)"
            ));
        }
    }
    Ok(())
}
