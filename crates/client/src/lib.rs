//! The Rust client library: bootstrap, metadata cache, routing to leaders, an idempotent
//! batching producer, a consumer, key-value operations with a chosen read consistency.
//!
//! Built so far, as pure parts with no I/O (the network half comes with the server issue):
//! - [`partitioner`]: which partition a record goes to (Kafka's murmur2 for keys, so that
//!   Kafka clients agree; sticky batching for records without a key);
//! - [`accumulator`]: per-partition batches that close when full or when `linger_ms` has passed,
//!   stamped with idempotent producer sequences when they are drained.

pub mod accumulator;
pub mod partitioner;
