//! All replicas agree below their HW, and committed data never changes: every batch a replica
//! holds below its HW equals the committed history's batch at that offset, or is that batch
//! as compaction leaves it, and the history only grows. The history is built from what
//! replicas expose, so two replicas that disagree below their HWs cannot both match it.
//! Incremental: each replica's log is compared once per offset (`verified_to`), except after
//! it is cut or compacted.
//!
//! Compaction (docs/tables.md) may rewrite a committed batch (same header: offsets, epoch,
//! producer fields; fewer records, each byte for byte one of the originals, in order) or
//! drop it, but only removes what it must not keep: a keyed record superseded by a later
//! committed write of its key, or a tombstone below the replica's compaction horizon (the
//! horizon is what sends a follower behind it to copy the log again). Keyless records, and
//! the latest put of every key, always stay. Nothing else may differ.

use std::ops::Bound;

use bytes::Bytes;
use tandem_storage::batch::{decode_records_with_spans, split_batches};
use tandem_storage::Log;

use super::session_reads::CommittedWrites;
use super::{
    no_duplicates, replicas, session_reads, CheckState, CommittedBatch, ReplicaSeen, Violation,
};
use crate::net::Part;
use crate::world::World;

pub fn check(world: &World, state: &mut CheckState) -> Result<(), Violation> {
    for r in replicas(world) {
        let log = r.slot.replica.local_log();
        let compacted = (r.slot.serial, r.slot.compactions);
        let seen = state
            .replicas
            .entry((r.node, r.generation, r.part))
            .or_insert(ReplicaSeen {
                epochs: (-1, -1),
                high_watermark: r.slot.replica.high_watermark(),
                log_end_offset: log.log_end_offset(),
                verified_to: log.log_start_offset(),
                compacted,
            });
        if seen.compacted != compacted {
            seen.compacted = compacted;
            seen.verified_to = log.log_start_offset();
        }
        let mirror = &r.slot.mirror;
        let log_end = mirror.last().map_or(log.log_start_offset(), |b| b.1 + 1);
        // A cut below what was compared (the HW check reports it if it was below the HW).
        seen.verified_to = seen.verified_to.min(log_end).max(log.log_start_offset());
        let hw = r.slot.replica.high_watermark();
        if seen.verified_to >= hw {
            continue;
        }
        let horizon = r.slot.log.compaction_horizon();
        let from = mirror.partition_point(|b| b.1 < seen.verified_to);
        let mut verified_to = seen.verified_to;
        let fail = |detail: String| {
            Err(Violation::new(
                "logs-agree-below-hw",
                format!("p{}: n{} {detail}", r.part, r.node),
            ))
        };
        for (base, last, bytes) in &mirror[from..] {
            if *last >= hw {
                break;
            }
            // Committed batches between the previous one and this one are gone: compaction
            // may drop a batch only if it could drop every record of it.
            let gone: Vec<(i64, Bytes)> = state
                .committed
                .entry(r.part)
                .or_default()
                .range(verified_to..*base)
                .map(|(b, c)| (*b, c.bytes.clone()))
                .collect();
            for (b, c) in &gone {
                if let Err(why) = removable(&state.table_writes, r.part, c, &[], horizon) {
                    return fail(format!(
                        "lacks the committed batch at {b} below its HW {hw}: {why}"
                    ));
                }
            }
            let history = state.committed.entry(r.part).or_default();
            match history.get(base) {
                Some(c) if c.last_offset == *last && c.bytes == *bytes => {}
                Some(c) if c.last_offset == *last => {
                    let c = c.bytes.clone();
                    if let Err(why) =
                        compacted_form(&state.table_writes, r.part, &c, bytes, horizon)
                    {
                        return fail(format!(
                            "holds a different batch at offset {base} below its HW {hw} than \
                             the committed one, and not one compaction may leave: {why}"
                        ));
                    }
                }
                Some(c) => {
                    return fail(format!(
                        "holds a different batch at offset {base} below its HW {hw} (offsets \
                         {base}..={last}) than the committed one (offsets {base}..={}, first \
                         exposed by n{} at {} ms)",
                        c.last_offset, c.first_seen.0, c.first_seen.1
                    ))
                }
                None => {
                    // New committed data: it must fit between its neighbours exactly, and a
                    // log never exposes a gap of its own (compaction only removes history).
                    let before = history.range(..*base).next_back();
                    let after = history
                        .range((Bound::Excluded(*base), Bound::Unbounded))
                        .next();
                    let overlaps = before.is_some_and(|(_, c)| c.last_offset >= *base)
                        || after.is_some_and(|(b, _)| *b <= *last);
                    if overlaps {
                        return fail(format!(
                            "exposes batch {base}..={last} below HW {hw}, which overlaps \
                             different committed batches"
                        ));
                    }
                    if before.is_some_and(|(_, c)| c.last_offset + 1 != *base) {
                        return fail(format!(
                            "exposes batch {base}..={last} below HW {hw} after a gap in the \
                             committed history"
                        ));
                    }
                    no_duplicates::on_committed(r.part, bytes, *base, &mut state.producer_batches)?;
                    session_reads::on_committed(r.part, bytes, &mut state.table_writes);
                    let history = state.committed.entry(r.part).or_default();
                    history.insert(
                        *base,
                        CommittedBatch {
                            last_offset: *last,
                            bytes: bytes.clone(),
                            first_seen: (r.node, world.now),
                        },
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

/// `exposed` is the committed batch `committed` as compaction may leave it: the same header
/// but for length, record count and CRC, and records that are a subsequence of the
/// committed ones, the others removable.
pub fn compacted_form(
    writes: &CommittedWrites,
    part: Part,
    committed: &Bytes,
    exposed: &Bytes,
    horizon: i64,
) -> Result<(), String> {
    let header = |b: &Bytes| split_batches(b).next().and_then(Result::ok).map(|(h, _)| h);
    let (Some(c), Some(e)) = (header(committed), header(exposed)) else {
        return Err("a batch that does not parse".into());
    };
    let same_header = c.base_offset == e.base_offset
        && c.last_offset() == e.last_offset()
        && c.leader_epoch == e.leader_epoch
        && c.attributes == e.attributes
        && c.base_timestamp == e.base_timestamp
        && c.max_timestamp == e.max_timestamp
        && c.producer_id == e.producer_id
        && c.producer_epoch == e.producer_epoch
        && c.base_sequence == e.base_sequence;
    if !same_header {
        return Err(format!("its header differs: {e:?} against {c:?}"));
    }
    let (Ok(kept), Ok(all)) = (
        decode_records_with_spans(exposed),
        decode_records_with_spans(committed),
    ) else {
        return Err("records that do not decode".into());
    };
    // Each kept record is, byte for byte, the next matching committed one.
    let mut matched = Vec::with_capacity(kept.len());
    let mut next = 0;
    for (_, span) in &kept {
        let raw = &exposed[span.clone()];
        let Some(i) = (next..all.len()).find(|i| &committed[all[*i].1.clone()] == raw) else {
            return Err("a record that is not one of the committed batch's, in order".into());
        };
        matched.push(i);
        next = i + 1;
    }
    removable(writes, part, committed, &matched, horizon)
}

/// Every record of `committed` but those at `kept` (indexes) may be removed by compaction.
fn removable(
    writes: &CommittedWrites,
    part: Part,
    committed: &Bytes,
    kept: &[usize],
    horizon: i64,
) -> Result<(), String> {
    let Some((header, _)) = split_batches(committed).next().and_then(Result::ok) else {
        return Err("a committed batch that does not parse".into());
    };
    let Ok(records) = decode_records_with_spans(committed) else {
        return Err("a committed batch whose records do not decode".into());
    };
    for (i, (record, _)) in records.iter().enumerate() {
        if kept.contains(&i) {
            continue;
        }
        let offset = header.base_offset + record.offset_delta as i64;
        let Some(key) = &record.key else {
            return Err(format!("the keyless record at {offset} was removed"));
        };
        let superseded = writes
            .get(&(part, key.clone()))
            .is_some_and(|w| w.range(offset + 1..).next().is_some());
        if superseded {
            continue;
        }
        if record.value.is_none() && offset < horizon {
            continue; // an expired tombstone, below the horizon
        }
        return Err(format!(
            "the latest record of key {key:?} at {offset} was removed{}",
            if record.value.is_none() {
                format!(" (a tombstone at or above the horizon {horizon})")
            } else {
                String::new()
            }
        ));
    }
    Ok(())
}
