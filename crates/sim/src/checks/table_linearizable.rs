//! The table history is linearizable (DESIGN.md "Key-value tables"; rule 8): at the end of a
//! seed, the operations on the keys written with acks=all — writes, compare-and-set
//! mismatches, linearizable reads, and writes whose outcome is unknown (a timeout, an
//! indeterminate error) as such — pass `tandem_lincheck::check_kv`. Leader, follower and
//! session reads promise less and are left out (sessions: `session_reads.rs`). The search has a step budget, not a
//! deadline, so the verdict is the same on every replay; running out of it counts as no
//! verdict (`lincheck_unknown` in the seed's stats), not as a failure.

use tandem_lincheck::{check_kv, CheckOptions, KvCheckResult, KvInput, KvOperation, KvOutput};
use tandem_replication::Acks;

use super::Violation;
use crate::kv::{KvOp, KvOutcome, KvRecord, ReadKind};
use crate::world::World;

/// Model steps per seed (all keys together).
pub const MAX_STEPS: u64 = 2_000_000;

/// The history the check takes, from what the table clients saw.
pub fn history(records: &[KvRecord]) -> Vec<KvOperation> {
    let mut out = Vec::new();
    for r in records {
        // Keys written with acks=1 are not checked (kv.rs): an acknowledged acks=1 write may
        // be lost, so nothing there is promised beyond what the session check covers.
        if r.acks != Acks::All {
            continue;
        }
        let version = |offset: i64| offset.max(0) as u64;
        let input = match &r.op {
            KvOp::Put(value) => KvInput::Put {
                value: value.to_vec(),
            },
            KvOp::Delete => KvInput::Delete,
            KvOp::Cas { expected, new } => KvInput::Cas {
                expected: expected.map(version),
                new: new.as_ref().map(|v| v.to_vec()),
            },
            KvOp::Get(ReadKind::Linearizable) => KvInput::Get,
            KvOp::Get(_) | KvOp::Scan { .. } => continue,
        };
        let output = match &r.outcome {
            KvOutcome::Written(token) => KvOutput::Written {
                version: version(token.offset),
            },
            KvOutcome::CasMismatch => KvOutput::CasMismatch,
            KvOutcome::Read { entry, .. } => KvOutput::Read(
                entry
                    .as_ref()
                    .map(|(value, v)| (value.to_vec(), version(*v))),
            ),
            KvOutcome::Failed | KvOutcome::Scanned { .. } => continue,
            KvOutcome::Unknown | KvOutcome::Pending => {
                if input == KvInput::Get {
                    continue;
                }
                KvOutput::Unknown
            }
        };
        out.push(KvOperation {
            client: r.client as u64,
            key: r.key.to_vec(),
            call_time: r.call,
            return_time: r.ret,
            input,
            output,
        });
    }
    out
}

pub fn final_check(world: &mut World) -> Result<(), Violation> {
    let history = history(&world.kv.history);
    world.stats.kv_checked = history.len() as u64;
    let options = CheckOptions {
        max_steps: MAX_STEPS,
        deadline: None,
    };
    match check_kv(&history, &options) {
        KvCheckResult::Linearizable => Ok(()),
        KvCheckResult::Unknown { .. } => {
            world.stats.lincheck_unknown = true;
            Ok(())
        }
        result @ KvCheckResult::NotLinearizable { .. } => {
            let mut detail = result.to_string();
            if detail.len() > 6_000 {
                let mut cut = 6_000;
                while !detail.is_char_boundary(cut) {
                    cut -= 1;
                }
                detail.truncate(cut);
                detail.push_str(" ...");
            }
            Err(Violation::new("table-linearizable", detail))
        }
    }
}
