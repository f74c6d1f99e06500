//! The controller's messages: Raft between voters, and node-to-controller requests. Each is
//! one postcard-encoded value; the server carries the bytes in its own framing (one of
//! Tandem's API keys, see docs/controller.md), the in-process test network passes them as is.

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::controller::{
    AlterPartitionRequest, ControllerError, CreateTopicRequest, HeartbeatReply, HeartbeatRequest,
    RegisterReply, RegisterRequest,
};
use crate::model::{Metadata, NodeId, PartitionState, TopicId};
use crate::raft_types::{RaftNodeId, TypeConfig};

/// A request to a controller voter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControllerRequest {
    // Raft, between voters.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<RaftNodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    // Nodes to the active controller.
    Register(RegisterRequest),
    Heartbeat(HeartbeatRequest),
    AlterPartition(AlterPartitionRequest),
    CreateTopic(CreateTopicRequest),
    DeleteTopic {
        name: String,
    },
    /// The node's process is exiting, or the server saw its connection close: fence it now.
    NodeStopped {
        node_id: NodeId,
        incarnation: u64,
    },
    /// Long poll: answered as soon as the applied metadata version exceeds `since_version`, or
    /// after `max_wait_ms` with no metadata. Any voter answers, with committed metadata only.
    FetchMetadata {
        since_version: u64,
        max_wait_ms: u32,
    },
    /// Between voters, before a voter without Raft state (a new or wiped data directory) runs
    /// Raft: does this voter have state, i.e. does the quorum already exist? `probe_id` names
    /// the asking voter's data directory (random, kept on that disk: the same across restarts,
    /// new after a wipe). See `ControllerNode::start`.
    VoterState {
        from: RaftNodeId,
        probe_id: u64,
    },
    /// To the active controller, from a voter started with `--rejoin-as-new-voter`: remove
    /// voter `voter_id` from the Raft membership (it lost its Raft state), so that it can be
    /// added back as a new member. Answered once the removal is committed.
    RemoveVoter {
        voter_id: RaftNodeId,
    },
    /// To the active controller: add voter `voter_id` (removed before) back, as a learner
    /// first (it copies the log), then as a voter. Answered once it is a voter again.
    AddVoter {
        voter_id: RaftNodeId,
    },
}

/// The answer to a [`ControllerRequest`], variant for variant.
#[derive(Debug, Serialize, Deserialize)]
pub enum ControllerResponse {
    AppendEntries(Result<AppendEntriesResponse<RaftNodeId>, RaftError<RaftNodeId>>),
    Vote(Result<VoteResponse<RaftNodeId>, RaftError<RaftNodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<RaftNodeId>, RaftError<RaftNodeId, InstallSnapshotError>>,
    ),
    Register(Result<RegisterReply, ControllerError>),
    Heartbeat(Result<HeartbeatReply, ControllerError>),
    AlterPartition(Result<PartitionState, ControllerError>),
    CreateTopic(Result<TopicId, ControllerError>),
    DeleteTopic(Result<TopicId, ControllerError>),
    NodeStopped(Result<(), ControllerError>),
    FetchMetadata(Result<MetadataView, ControllerError>),
    VoterState(VoterState),
    /// This voter has not started Raft yet (it is finding out whether the quorum exists, or
    /// was refused because it lost its state): it takes no part in Raft.
    VoterStarting,
    RemoveVoter(Result<(), ControllerError>),
    AddVoter(Result<(), ControllerError>),
}

/// What a voter answers to [`ControllerRequest::VoterState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VoterState {
    /// No Raft state: this voter is itself still deciding (or new).
    Empty { probe_id: u64 },
    /// This voter runs Raft with a vote or a log: the quorum exists. `formed_with_you`: this
    /// voter formed the quorum from a round in which the asker's disk (same probe id) answered
    /// `Empty`, and the asker has no state now: it never held any Raft state, and may join.
    HasState { formed_with_you: bool },
}

/// Committed metadata at a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataView {
    pub version: u64,
    /// `None` when the long poll timed out with nothing newer than asked for.
    pub metadata: Option<Metadata>,
}

#[derive(Debug, thiserror::Error)]
#[error("undecodable controller message: {0}")]
pub struct DecodeError(#[from] postcard::Error);

impl ControllerRequest {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("controller messages always serialize")
    }
    pub fn decode(bytes: &[u8]) -> Result<ControllerRequest, DecodeError> {
        Ok(postcard::from_bytes(bytes)?)
    }
}

impl ControllerResponse {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("controller messages always serialize")
    }
    pub fn decode(bytes: &[u8]) -> Result<ControllerResponse, DecodeError> {
        Ok(postcard::from_bytes(bytes)?)
    }
}
