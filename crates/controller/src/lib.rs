//! The controller: cluster metadata (nodes, topics, partitions, leaders, ISR, epochs) decided on
//! a Raft quorum, and the pure decision logic of the active controller (registration, fencing,
//! elections, ISR changes). See DESIGN.md rules 5, 7 and 8.
//!
//! Not built yet: this crate marks its place in the architecture (DESIGN.md, docs/architecture.md).
