//! The Rust client library: bootstrap, metadata cache, routing to leaders, idempotent batching
//! producer, consumer, key-value operations with a chosen read consistency.
//!
//! Not built yet: this crate marks its place in the architecture (DESIGN.md, docs/architecture.md).
