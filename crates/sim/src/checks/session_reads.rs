//! A session never reads the past (DESIGN.md "Key-value tables", tokens): an at-least read
//! answered by any replica returns a state at least as new as the token it sent, so never
//! older than the client's own last write of the key (read-your-writes) nor than what it read
//! before (monotonic reads); a token naming a write that was truncated (an acks=1 write lost
//! in a failover) is answered with TOKEN_TRUNCATED, never silently. Checked on every answer
//! to an at-least read, against the committed history:
//!
//! 1. the answer's token (the replica's last applied offset) is at or past the sent token;
//! 2. the committed history holds the sent token's offset in the sent token's epoch;
//! 3. if the client's last acknowledged write of the key survived (the history holds it in
//!    its epoch), the key's returned version is at least that write's, or the key is absent
//!    and the history holds a delete of it after that write, up to the answer's token.

use std::collections::BTreeMap;

use bytes::Bytes;
use tandem_storage::batch::split_batches;
use tandem_table::decode_writes;

use super::Violation;
use crate::kv::KvOutcome;
use crate::net::Part;
use crate::world::World;

/// Per (partition, key): the committed writes of the key, offset -> the value and the batch's
/// leader epoch (`None`: a delete).
pub type CommittedWrites = BTreeMap<(Part, Bytes), BTreeMap<i64, Option<(Bytes, i32)>>>;

/// A batch joined the committed history: index its table writes.
pub fn on_committed(part: Part, bytes: &Bytes, index: &mut CommittedWrites) {
    if let Ok(writes) = decode_writes(bytes) {
        for w in writes {
            index
                .entry((part, w.key))
                .or_default()
                .insert(w.offset, w.value.map(|v| (v, w.leader_epoch)));
        }
    }
}

/// The leader epoch the committed history holds at `offset`, if it reaches it.
pub fn committed_epoch(world: &World, part: Part, offset: i64) -> Option<i32> {
    let history = world.checks.committed.get(&part)?;
    let (_, batch) = history.range(..=offset).next_back()?;
    if batch.last_offset < offset {
        return None;
    }
    let (header, _) = split_batches(&batch.bytes).next()?.ok()?;
    Some(header.leader_epoch)
}

/// At the answer to operation `index` of the table history.
pub fn on_answer(world: &World, index: usize) -> Result<(), Violation> {
    let r = &world.kv.history[index];
    let Some(sent) = r.token else {
        return Ok(()); // not an at-least read
    };
    let KvOutcome::Read { entry, token } = &r.outcome else {
        return Ok(());
    };
    let fail = |detail: String| {
        Err(Violation::new(
            "session-reads",
            format!(
                "p{} client {} read {:?} at least {}@{} from n{} (called at {} ms): {detail}",
                r.part, r.client, r.key, sent.offset, sent.leader_epoch, r.node, r.call_ms
            ),
        ))
    };
    let Some(answered) = token.filter(|a| a.offset >= sent.offset) else {
        return fail(format!(
            "answered having applied only up to {token:?}, before the token"
        ));
    };
    if let Some(epoch) = committed_epoch(world, r.part, sent.offset) {
        if epoch != sent.leader_epoch {
            return fail(format!(
                "the token's write was truncated (the committed history holds epoch {epoch} at \
                 {}), yet the read was served instead of TOKEN_TRUNCATED",
                sent.offset
            ));
        }
    }
    let client = &world.kv.clients[r.client];
    let Some((own, put, _)) = client.last_write.get(&r.key) else {
        return Ok(());
    };
    let survived = committed_epoch(world, r.part, own.offset) == Some(own.leader_epoch);
    if !survived || own.offset > sent.offset {
        return Ok(());
    }
    match entry {
        Some((_, version)) if *version < own.offset => fail(format!(
            "returned version {version}, older than the client's own write at {}",
            own.offset
        )),
        None if *put => {
            let deleted = world
                .checks
                .table_writes
                .get(&(r.part, r.key.clone()))
                .is_some_and(|w| {
                    w.range(own.offset + 1..=answered.offset)
                        .any(|(_, value)| value.is_none())
                });
            if deleted {
                Ok(())
            } else {
                fail(format!(
                    "returned the key absent, though the client put it at {} and no delete \
                     follows up to the answer's token {}",
                    own.offset, answered.offset
                ))
            }
        }
        _ => Ok(()),
    }
}
