//! The server runtime: the only place with sockets, timers and disk I/O. Drives the replication
//! core and the controller with real time; speaks Kafka's wire protocol plus Tandem's own API
//! keys.
//!
//! Not built yet: this crate marks its place in the architecture (DESIGN.md, docs/architecture.md).
