//! The server runtime: the only place with sockets, timers and disk I/O around the pure cores.
//!
//! - [`partition`]: one replica at run time — the replication core, its log, its thread.
//! - [`node`]: one node — its session with the controller, the committed metadata it acts on,
//!   its replicas, and the calls it makes to other nodes through [`node::Peers`].
//!
//! The TCP listener with Kafka's wire protocol and Tandem's API keys, and `tandem server` /
//! `tandem dev`, build on these (issue 5).

pub mod node;
pub mod partition;

pub use node::{Node, NodeConfig, Peers};
pub use partition::TopicPartition;
