//! A controller voter's Raft vote never goes back, across its restarts and power losses: the
//! vote is on disk before it counts. A voter that forgot its vote could grant it again in the
//! same term to another candidate, and two leaders could commit different entries at one
//! index (openraft keys leadership by (term, candidate), so this is its form of "one leader
//! per term"). A wiped voter is a new member and starts over.

use tandem_controller::raft_types::Vote;
use tandem_replication::NodeId;

use super::{CheckState, Violation};

/// Voter `voter` shows `vote`.
pub fn check(state: &mut CheckState, voter: NodeId, vote: Vote) -> Result<(), Violation> {
    // The metrics of a Raft whose core has not run yet show the default vote, not its own.
    if vote == Vote::default() {
        return Ok(());
    }
    if let Some(before) = state.raft_votes.get(&voter) {
        if vote < *before {
            return Err(Violation::new(
                "raft-vote-never-goes-back",
                format!("voter {voter} voted {before} and now shows {vote}"),
            ));
        }
    }
    state.raft_votes.insert(voter, vote);
    Ok(())
}

/// Voter `voter` lost its disk: it rejoins as a new member, with no vote.
pub fn forget(state: &mut CheckState, voter: NodeId) {
    state.raft_votes.remove(&voter);
}
