//! The deterministic simulator: every node's real replication core and table, and the real
//! controller quorum (openraft and the active controller's decision logic), over in-memory storage (`MemLog`, which loses exactly what was not flushed
//! when it crashes) and a simulated network, in one thread, on virtual time, with every random
//! choice drawn from one seed, so that any failure replays exactly (FoundationDB's simulator,
//! TigerBeetle's VOPR). See docs/simulation.md.
//!
//! ```text
//!  config    SimConfig::from_seed: cluster shape and the seed's fault mix (swarm testing)
//!  world     the event queue on virtual time, the network, faults, the run loop
//!  node      a node's glue around its replicas (what the server runtime will do)
//!  controller the controller voters: ControllerNode (openraft) on paused tokio runtimes,
//!            advanced to virtual time; their network and faults
//!  workload  producers (acks 0/1/all, idempotent), consumers (follower reads), the oracle
//!  kv        table clients: put / delete / cas / get at every consistency, sessions, history
//!  checks    one invariant per file, after every event; liveness after the faults stop
//!  runner    one seed, or many across threads; the `tandem-sim` command line (`run`)
//! ```

pub mod checks;
pub mod config;
pub mod controller;
pub mod kv;
pub mod net;
pub mod node;
pub mod rng;
pub mod runner;
pub mod workload;
pub mod world;

pub use runner::{run, run_seed, SeedResult};
