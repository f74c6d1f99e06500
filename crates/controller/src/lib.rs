//! The controller: cluster metadata (nodes, topics, partitions, leaders, ISR, ELR, epochs)
//! decided on a Raft quorum (openraft), and the pure decision logic of the active controller
//! (registration, heartbeats, fencing, elections, ISR changes, topics). See DESIGN.md rules 5,
//! 7 and 8, and docs/controller.md.
//!
//! ```text
//!  model          Metadata, MetadataRecord, MetadataBatch: the replicated state, applied
//!                 deterministically and all-or-nothing
//!  controller     ActiveController: events + metadata + time -> Decision { records, reply }
//!  counters       what the active controller did (elections, fencings, ISR changes), for metrics
//!  lease          LeaderLease: the partition leader's side of rule 8
//!  raft_types     openraft type configuration
//!  raft_runtime   openraft's runtime: tokio, with election timeouts a simulator can seed
//!  log_store      the Raft log and vote on a tandem-storage log
//!  state_machine  applies committed batches; snapshots are the whole metadata
//!  rpc            ControllerRequest / ControllerResponse (postcard), for the server to carry
//!  network        ControllerTransport and openraft's network over it
//!  node           ControllerNode: one voter, driving the ActiveController while it leads
//!  local_network  an in-process network of voters, for tests
//! ```

pub mod controller;
pub mod counters;
pub mod lease;
pub mod local_network;
pub mod log_store;
pub mod model;
pub mod network;
pub mod node;
pub mod raft_runtime;
pub mod raft_types;
pub mod rpc;
pub mod state_machine;

pub use controller::{
    ActiveController, AlterPartitionRequest, ControllerConfig, ControllerError, CreateTopicRequest,
    Decision, FenceReason, HeartbeatReply, HeartbeatRequest, IsrMember, RegisterReply,
    RegisterRequest, ReplicaLeo, Report,
};
pub use counters::ControllerCounters;
pub use lease::LeaderLease;
pub use model::{
    Metadata, MetadataBatch, MetadataRecord, NodeId, NodeStatus, PartitionState, Topic,
    TopicConfig, TopicId, TopicKind,
};
pub use node::{ControllerNode, QuorumConfig, StartError};
pub use rpc::{ControllerRequest, ControllerResponse, MetadataView};
