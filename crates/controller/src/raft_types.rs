//! The openraft type configuration of the controller quorum.
//!
//! A Raft entry's payload is a [`MetadataBatch`]; applying it yields an [`ApplyOutcome`]. Voter
//! ids are `u64` (openraft's), equal to the node ids of the nodes that run the voters.

use std::io::Cursor;

use openraft::BasicNode;
use serde::{Deserialize, Serialize};

use crate::model::{ApplyError, MetadataBatch};

openraft::declare_raft_types!(
    /// The controller quorum's Raft types.
    pub TypeConfig:
        D = MetadataBatch,
        R = ApplyOutcome,
        NodeId = u64,
        Node = BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = crate::raft_runtime::ControllerRuntime,
);

/// The result of applying one committed entry. A refused batch changed nothing, on every voter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApplyOutcome {
    Applied,
    Refused(ApplyError),
}

pub type RaftNodeId = u64;
pub type Entry = openraft::impls::Entry<TypeConfig>;
pub type LogId = openraft::LogId<RaftNodeId>;
pub type Vote = openraft::Vote<RaftNodeId>;
pub type StoredMembership = openraft::StoredMembership<RaftNodeId, BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<RaftNodeId, BasicNode>;
pub type Snapshot = openraft::storage::Snapshot<TypeConfig>;
pub type RaftStorageError = openraft::StorageError<RaftNodeId>;
pub type Raft = openraft::Raft<TypeConfig>;
