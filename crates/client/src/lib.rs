//! Tandem's Rust client (async, on tokio): bootstrap from any node, a metadata cache, an
//! idempotent batching [`Producer`], a long-polling [`Consumer`], and topic administration.
//! It speaks Kafka's wire protocol (plus Tandem's own API key for `durability = flushed` and
//! the cluster status), so what it writes any Kafka client can read, keys landing on the same
//! partitions (Kafka's murmur2).
//!
//! ```no_run
//! use tandem_client::{
//!     Client, ClientConfig, Consumer, ConsumerConfig, NewTopic, Producer, ProducerConfig, Record,
//!     StartOffset,
//! };
//!
//! # async fn run() -> Result<(), tandem_client::Error> {
//! let client = Client::connect(ClientConfig::new(["127.0.0.1:9092"])).await?;
//! client
//!     .create_topic(NewTopic::new("events", 3).config("min.insync.replicas", "2"))
//!     .await?;
//!
//! // Idempotent, acks=all by default: a retry after a failover cannot write a record twice.
//! let producer = Producer::new(client.clone(), ProducerConfig::default()).await?;
//! let mut acks = Vec::new();
//! for i in 0..100 {
//!     let record = Record::new("events", format!("value-{i}")).key(format!("user-{}", i % 7));
//!     acks.push(producer.send(record).await?); // queued; batched and pipelined
//! }
//! for ack in acks {
//!     let at = ack.await?; // acknowledged: topic, partition, offset
//!     println!("{}-{}@{}", at.topic, at.partition, at.offset);
//! }
//! producer.close().await?;
//!
//! let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
//! consumer.assign("events", None, StartOffset::Earliest).await?;
//! let records = consumer.poll().await?; // long poll; committed records only
//! # let _ = records;
//! # Ok(())
//! # }
//! ```
//!
//! Modules:
//! - [`partitioner`]: Kafka's murmur2 for keys, sticky batching for unkeyed records;
//! - [`accumulator`]: per-partition batches (linger, max bytes), sequence numbers stamped when
//!   a batch leaves;
//! - [`producer`], [`consumer`], [`metadata`], [`error`];
//! - [`table`]: key-value tables (put, delete, compare-and-set, get, scan; read consistency
//!   per request, sessions with read-your-writes).
//!
//! See docs/client.md for the retry and idempotence semantics.

pub mod accumulator;
mod client;
mod connection;
pub mod consumer;
pub mod error;
pub mod metadata;
pub mod partitioner;
pub mod producer;
pub mod table;

pub use accumulator::{ProducerIdentity, TopicPartition};
pub use client::{summarize, Client, ClientConfig, ClusterStatus, NewTopic, StatusSummary};
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, ReadFrom, StartOffset};
pub use error::{Error, Result};
pub use metadata::{ClusterMetadata, PartitionMetadata, TopicMetadata};
pub use producer::{
    Acks, DeliveryFuture, Durability, Producer, ProducerConfig, Record, RecordMetadata,
};
