//! The deterministic simulator: every node's real cores over in-memory storage (MemLog) and a
//! simulated network, on virtual time, with every random choice drawn from one seed.
//!
//! Not built yet: this crate marks its place in the architecture (DESIGN.md, docs/architecture.md).
