//! A scan reads what a get reads (docs/tables.md, "Reads" and "Scans"): one consistent state
//! of the replica's table, the state the committed history gives at the answer's token, never
//! writes above the replica's HW, and never the past of a session. Checked on every scan
//! answer, against the committed history (as `session_reads`):
//!
//! 1. an at-least scan: the answer's token (the replica's last applied offset) is at or past
//!    the sent token, and the committed history holds the sent token's offset in its epoch
//!    (else the answer must have been `TOKEN_TRUNCATED`);
//! 2. every scan: the page is exactly the committed state at the answer's token — every key of
//!    the range whose latest committed write at or below that offset is a put, in key order,
//!    with that write's value, offset as version and epoch, cut at the limit, and the
//!    continuation key is the first key left out (none if the range is exhausted). No
//!    answer token means nothing applied: an empty page.
//!
//! 1 and 2 together give read-your-writes and monotonic reads for a session's scans: the
//! client's own surviving writes are at or below its token, so at or below the answer's.

use bytes::Bytes;

use super::session_reads::committed_epoch;
use super::Violation;
use crate::kv::{KvOp, KvOutcome};
use crate::world::World;

/// At the answer to operation `index` of the table history.
pub fn on_answer(world: &World, index: usize) -> Result<(), Violation> {
    let r = &world.kv.history[index];
    let KvOp::Scan {
        kind,
        prefix,
        from,
        to,
        limit,
    } = &r.op
    else {
        return Ok(());
    };
    let KvOutcome::Scanned {
        entries,
        next,
        token,
    } = &r.outcome
    else {
        return Ok(());
    };
    let fail = |detail: String| {
        Err(Violation::new(
            "scan-reads",
            format!(
                "p{} client {} scanned {kind:?} (prefix {prefix:?} from {from:?} to {to:?} limit \
                 {limit}, at least {:?}) on n{} (called at {} ms): {detail}",
                r.part, r.client, r.token, r.node, r.call_ms
            ),
        ))
    };
    if let Some(sent) = r.token {
        if token.is_none_or(|a| a.offset < sent.offset) {
            return fail(format!(
                "answered having applied only up to {token:?}, before the token"
            ));
        }
        if let Some(epoch) = committed_epoch(world, r.part, sent.offset) {
            if epoch != sent.leader_epoch {
                return fail(format!(
                    "the token's write was truncated (the committed history holds epoch \
                     {epoch} at {}), yet the scan was served instead of TOKEN_TRUNCATED",
                    sent.offset
                ));
            }
        }
    }
    let Some(answered) = token else {
        if entries.is_empty() && next.is_none() {
            return Ok(());
        }
        return fail(format!(
            "no token (nothing applied), yet the page is {entries:?} next {next:?}"
        ));
    };
    let in_range = |key: &Bytes| {
        key.starts_with(prefix) && key >= from && to.as_ref().is_none_or(|to| key < to)
    };
    let part_keys = (r.part, Bytes::new())..(r.part + 1, Bytes::new());
    let mut live = world
        .checks
        .table_writes
        .range(part_keys)
        .filter(|((_, key), _)| in_range(key))
        .filter_map(|((_, key), writes)| {
            let (offset, value) = writes.range(..=answered.offset).next_back()?;
            let (value, epoch) = value.as_ref()?;
            Some((key, *offset, value, *epoch))
        });
    let expected: Vec<_> = live.by_ref().take(*limit).collect();
    let expected_next = live.next().map(|(key, ..)| key);
    let same = entries.len() == expected.len()
        && entries
            .iter()
            .zip(&expected)
            .all(|((k, e), (key, offset, value, epoch))| {
                k == *key && e.version == *offset && e.value == **value && e.leader_epoch == *epoch
            })
        && next.as_ref() == expected_next;
    if same {
        return Ok(());
    }
    let got: Vec<(&Bytes, &Bytes, i64, i32)> = entries
        .iter()
        .map(|(k, e)| (k, &e.value, e.version, e.leader_epoch))
        .collect();
    let expected: Vec<(&Bytes, &Bytes, i64, i32)> = expected
        .iter()
        .map(|(k, offset, value, epoch)| (*k, *value, *offset, *epoch))
        .collect();
    fail(format!(
        "the page at token {}@{} is {got:?} next {next:?}, but the committed history there \
         gives {expected:?} next {expected_next:?} (key, value, version, epoch)",
        answered.offset, answered.leader_epoch
    ))
}
