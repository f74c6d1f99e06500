//! Every replica's table is its own log below its HW (DESIGN.md "Key-value tables": each
//! replica applies the records below HW to its index): after every event, each replica's
//! committed map equals the latest put of each key in its log (the mirror) below its HW, with
//! that record's offset as the version and deletes removing the key, and the table has
//! applied exactly up to the HW. The reference is a plain map built here, independently of
//! `tandem_table::Table`, incrementally per replica slot; it is compared only when the HW or
//! the table changed.

use std::collections::BTreeMap;

use bytes::Bytes;
use tandem_replication::NodeId;
use tandem_table::decode_writes;

use super::{replicas, CheckState, Violation};
use crate::net::Part;
use crate::world::World;

/// The reference table of one replica slot.
#[derive(Debug, Default)]
pub struct TableSeen {
    /// The log start the reference was built from.
    log_start: i64,
    /// Offsets below this are applied to `map`.
    applied_to: i64,
    /// key -> (value, version, epoch)
    map: BTreeMap<Bytes, (Bytes, i64, i32)>,
    /// (HW, table's applied offset, table's size) when last compared.
    compared: Option<(i64, i64, usize)>,
}

/// (node, process generation, partition, slot serial).
pub type SlotKey = (NodeId, u64, Part, u64);

pub fn check(world: &World, state: &mut CheckState) -> Result<(), Violation> {
    for r in replicas(world) {
        let hw = r.slot.replica.high_watermark();
        let table = r.slot.table.table();
        let fingerprint = (hw, table.applied_offset(), table.len());
        let key = (r.node, r.generation, r.part, r.slot.serial);
        let seen = state.tables.entry(key).or_default();
        if seen.compared == Some(fingerprint) {
            continue;
        }
        let mirror = &r.slot.mirror;
        let log_start = r.slot.replica.local_log().log_start_offset();
        let log_end = mirror.last().map_or(log_start, |b| b.1 + 1);
        if seen.compared.is_none()
            || seen.log_start != log_start
            || seen.applied_to > hw
            || seen.applied_to > log_end
        {
            *seen = TableSeen {
                log_start,
                applied_to: log_start,
                ..TableSeen::default()
            };
        }
        let from = mirror.partition_point(|b| b.1 < seen.applied_to);
        for (base, _, bytes) in &mirror[from..] {
            if *base >= hw {
                break;
            }
            let Ok(writes) = decode_writes(bytes) else {
                continue;
            };
            for w in writes {
                if w.offset < seen.applied_to || w.offset >= hw {
                    continue;
                }
                match w.value {
                    Some(value) => {
                        seen.map.insert(w.key, (value, w.offset, w.leader_epoch));
                    }
                    None => {
                        seen.map.remove(&w.key);
                    }
                }
            }
        }
        seen.applied_to = seen.applied_to.max(hw);
        seen.compared = Some(fingerprint);
        let fail = |detail: String| {
            Err(Violation::new(
                "table-matches-log",
                format!("n{} p{}: {detail}", r.node, r.part),
            ))
        };
        if table.applied_offset() != hw {
            return fail(format!(
                "the table applied up to {}, the replica's HW is {hw}",
                table.applied_offset()
            ));
        }
        let same = table.len() == seen.map.len()
            && table
                .committed()
                .iter()
                .zip(&seen.map)
                .all(|((k, e), (rk, r))| {
                    k == rk && e.value == r.0 && e.version == r.1 && e.leader_epoch == r.2
                });
        if !same {
            let show = |m: Vec<(Bytes, Bytes, i64)>| format!("{m:?}");
            return fail(format!(
                "the table below HW {hw} is {} but the log below it holds {}",
                show(
                    table
                        .committed()
                        .iter()
                        .map(|(k, e)| (k.clone(), e.value.clone(), e.version))
                        .collect()
                ),
                show(
                    seen.map
                        .iter()
                        .map(|(k, (v, o, _))| (k.clone(), v.clone(), *o))
                        .collect()
                )
            ));
        }
    }
    Ok(())
}
