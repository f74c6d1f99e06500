//! State machine safety of the controller quorum: every voter that applied metadata version
//! `v` (the Raft log index of its last applied entry) holds the same metadata at `v`, whether
//! it applied the entries one by one, restored a snapshot, or restarted from its own disk.
//! Committed metadata differing between voters is what a lost Raft log entry, a wrong
//! truncation or a bad snapshot would show as. Checked whenever a voter applies a version the
//! world has not seen from it yet.

use std::sync::Arc;

use tandem_controller::Metadata;
use tandem_replication::NodeId;

use super::{CheckState, Violation};

pub fn check(
    state: &mut CheckState,
    voter: NodeId,
    version: u64,
    metadata: &Arc<Metadata>,
) -> Result<(), Violation> {
    let (first, seen) = state
        .metadata_versions
        .entry(version)
        .or_insert_with(|| (voter, Arc::clone(metadata)));
    if !Arc::ptr_eq(seen, metadata) && **seen != **metadata {
        return Err(Violation::new(
            "controller-agreement",
            format!(
                "voter {voter} applied metadata version {version} unlike voter {first}: {:?} against {:?}",
                metadata, seen
            ),
        ));
    }
    Ok(())
}
