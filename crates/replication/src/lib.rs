//! The replication core of one partition: leader and follower as a pure state machine (no I/O,
//! no clock). Events in (produce, fetch, fetch response, tick, metadata change), actions out
//! (append, send, complete, propose ISR change, flush). See DESIGN.md rules 1-6 and 9.
//!
//! Not built yet: this crate marks its place in the architecture (DESIGN.md, docs/architecture.md).
