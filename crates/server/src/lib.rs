//! The server runtime: the only place with sockets, timers and disk I/O around the pure cores.
//!
//! - [`partition`]: one replica at run time — the replication core, its log, its thread.
//! - [`node`]: one node — its session with the controller, the committed metadata it acts on,
//!   its replicas, and the calls it makes to other nodes through [`node::Peers`].
//! - [`fetcher`]: one fetcher per leader node, batching the partitions fetched from it.
//!
//! - [`listener`], [`dispatch`], [`kafka`]: the TCP listener, Kafka's APIs and Tandem's key.
//! - [`peer_client`], [`tcp_peers`]: calls to other nodes and controller voters over TCP.
//! - [`runtime`]: one server process, start to controlled stop.
//! - [`admin`], [`metrics`], [`events`], [`metered_log`]: the admin HTTP listener (`/metrics`,
//!   `/api/*`, the dashboard) and what it shows (docs/observability.md).

pub mod admin;
pub mod compaction;
pub mod dispatch;
pub mod events;
pub mod fetcher;
pub mod kafka;
pub mod kv;
pub mod listener;
pub mod local_state;
pub mod metered_log;
pub mod metrics;
pub mod node;
pub mod partition;
pub mod peer_client;
pub mod runtime;
pub mod status;
pub mod table;
pub mod tcp_peers;

pub use node::{Node, NodeConfig, Peers};
pub use partition::TopicPartition;
