//! The producer's record accumulator: one open batch per partition, closed when it is full or
//! when `linger_ms` has passed since its first record, then drained for sending.
//!
//! Idempotence: a drained batch gets the producer id and epoch and the partition's next
//! sequence number, and the sequence advances by its record count. A retry resends the same
//! bytes, so the leader recognises it (DESIGN.md rule 9). Pure: time is an argument.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use tandem_storage::BatchBuilder;

/// Where a batch goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

/// One record as the application hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecord {
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccumulatorConfig {
    /// A batch closes before it would grow past this (a lone larger record still goes alone).
    pub max_batch_bytes: usize,
    /// How long a batch waits for more records.
    pub linger_ms: i64,
    /// The largest single record accepted.
    pub max_record_bytes: usize,
}

impl Default for AccumulatorConfig {
    fn default() -> AccumulatorConfig {
        AccumulatorConfig {
            max_batch_bytes: 16 * 1024,
            linger_ms: 5,
            max_record_bytes: 1024 * 1024,
        }
    }
}

/// The idempotent producer's identity, from the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdentity {
    pub producer_id: i64,
    pub producer_epoch: i16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccumulatorError {
    #[error("record of {size} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge { size: usize, max: usize },
}

/// A batch ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyBatch {
    pub destination: TopicPartition,
    pub bytes: BytesMut,
    pub record_count: i32,
    /// The first sequence number in the batch; -1 without idempotence.
    pub base_sequence: i32,
}

/// Roughly the smallest record worth waiting for.
const SMALL_RECORD_BYTES: usize = 64;

struct OpenBatch {
    builder: BatchBuilder,
    opened_ms: i64,
}

/// Batches being filled, per partition, and batches closed and waiting to be drained.
pub struct Accumulator {
    config: AccumulatorConfig,
    producer: Option<ProducerIdentity>,
    open: BTreeMap<TopicPartition, OpenBatch>,
    /// Batches closed because they were full, in the order they closed.
    closed: Vec<(TopicPartition, OpenBatch)>,
    /// The next sequence number per partition, for the idempotent producer.
    next_sequence: BTreeMap<TopicPartition, i32>,
}

/// What [`Accumulator::append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// The record started a new batch.
    pub opened_batch: bool,
    /// The partition's previous batch was closed to make room: it is ready to drain.
    pub closed_batch: bool,
}

fn record_size_estimate(record: &ProducerRecord) -> usize {
    // Varint lengths and deltas take at most 10 bytes each; an upper bound is enough.
    let field = |b: &Option<Bytes>| b.as_ref().map_or(0, |b| b.len()) + 5;
    32 + field(&record.key)
        + field(&record.value)
        + record
            .headers
            .iter()
            .map(|(k, v)| k.len() + 5 + field(v))
            .sum::<usize>()
}

/// Kafka's sequence arithmetic: sequences wrap from `i32::MAX` to 0.
pub fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

impl Accumulator {
    pub fn new(config: AccumulatorConfig, producer: Option<ProducerIdentity>) -> Accumulator {
        Accumulator {
            config,
            producer,
            open: BTreeMap::new(),
            closed: Vec::new(),
            next_sequence: BTreeMap::new(),
        }
    }

    /// Adds a record to its partition's open batch. If that batch cannot take it, the batch is
    /// closed (the next [`Accumulator::drain_ready`] returns it) and a new one opens.
    pub fn append(
        &mut self,
        destination: &TopicPartition,
        record: &ProducerRecord,
        now_ms: i64,
    ) -> Result<AppendOutcome, AccumulatorError> {
        let size = record_size_estimate(record);
        if size > self.config.max_record_bytes {
            return Err(AccumulatorError::RecordTooLarge {
                size,
                max: self.config.max_record_bytes,
            });
        }
        let mut outcome = AppendOutcome {
            opened_batch: false,
            closed_batch: false,
        };
        let full = self.open.get(destination).is_some_and(|open| {
            !open.builder.is_empty()
                && open.builder.size_estimate() + size > self.config.max_batch_bytes
        });
        if full {
            let batch = self.open.remove(destination).expect("checked above");
            self.closed.push((destination.clone(), batch));
            outcome.closed_batch = true;
        }
        // The key is cloned only when a batch opens, not per record.
        if !self.open.contains_key(destination) {
            outcome.opened_batch = true;
            self.open.insert(
                destination.clone(),
                OpenBatch {
                    builder: BatchBuilder::new(record.timestamp_ms),
                    opened_ms: now_ms,
                },
            );
        }
        let open = self.open.get_mut(destination).expect("inserted above");
        let headers: Vec<(&[u8], Option<&[u8]>)> = record
            .headers
            .iter()
            .map(|(k, v)| (k.as_ref(), v.as_deref()))
            .collect();
        open.builder.push_with_headers(
            record.timestamp_ms,
            record.key.as_deref(),
            record.value.as_deref(),
            &headers,
        );
        Ok(outcome)
    }

    /// Batches that are full or have lingered long enough, in the order to send them.
    pub fn drain_ready(&mut self, now_ms: i64) -> Vec<ReadyBatch> {
        let linger_ms = self.config.linger_ms;
        let max_batch_bytes = self.config.max_batch_bytes;
        let due: Vec<TopicPartition> = self
            .open
            .iter()
            .filter(|(_, b)| {
                // Too full for even a small record: waiting longer gains nothing.
                now_ms - b.opened_ms >= linger_ms
                    || b.builder.size_estimate() + SMALL_RECORD_BYTES >= max_batch_bytes
            })
            .map(|(tp, _)| tp.clone())
            .collect();
        self.drain(due)
    }

    /// Every batch, ready or not (a flush).
    pub fn drain_all(&mut self) -> Vec<ReadyBatch> {
        let all: Vec<TopicPartition> = self.open.keys().cloned().collect();
        self.drain(all)
    }

    /// At most one batch per partition, only for partitions `sendable` allows, oldest first:
    /// a closed batch before the open one. With `now_ms`, open batches only once they have
    /// lingered (or are nearly full); without it, every open batch (a flush). A partition
    /// that is not sendable keeps its batches, unsealed, in order: that is how the producer
    /// keeps one batch in flight per partition and assigns sequence numbers only when a batch
    /// really leaves.
    pub fn drain_sendable(
        &mut self,
        now_ms: Option<i64>,
        mut sendable: impl FnMut(&TopicPartition) -> bool,
    ) -> Vec<ReadyBatch> {
        let mut taken: std::collections::BTreeSet<TopicPartition> = Default::default();
        let mut out = Vec::new();
        let mut kept = Vec::new();
        for (tp, batch) in std::mem::take(&mut self.closed) {
            if !taken.contains(&tp) && sendable(&tp) {
                taken.insert(tp.clone());
                out.push((tp, batch));
            } else {
                taken.insert(tp.clone()); // its open batch must wait behind this one
                kept.push((tp, batch));
            }
        }
        self.closed = kept;
        let linger_ms = self.config.linger_ms;
        let max_batch_bytes = self.config.max_batch_bytes;
        let due: Vec<TopicPartition> = self
            .open
            .iter()
            .filter(|(tp, b)| {
                !taken.contains(*tp)
                    && now_ms.is_none_or(|now| {
                        now - b.opened_ms >= linger_ms
                            || b.builder.size_estimate() + SMALL_RECORD_BYTES >= max_batch_bytes
                    })
            })
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in due {
            if sendable(&tp) {
                if let Some(batch) = self.open.remove(&tp) {
                    out.push((tp, batch));
                }
            }
        }
        out.into_iter()
            .map(|(destination, batch)| self.seal(destination, batch))
            .collect()
    }

    /// A new producer identity (or none): sequences start again at 0 everywhere. Batches
    /// already drained keep the identity they were sealed with.
    pub fn set_producer(&mut self, producer: Option<ProducerIdentity>) {
        self.producer = producer;
        self.next_sequence.clear();
    }

    pub fn producer(&self) -> Option<ProducerIdentity> {
        self.producer
    }

    /// Whether any batch of `tp` is waiting (open or closed).
    pub fn has_pending(&self, tp: &TopicPartition) -> bool {
        self.open.contains_key(tp) || self.closed.iter().any(|(t, _)| t == tp)
    }

    fn drain(&mut self, open_to_close: Vec<TopicPartition>) -> Vec<ReadyBatch> {
        let mut batches = std::mem::take(&mut self.closed);
        for tp in open_to_close {
            if let Some(batch) = self.open.remove(&tp) {
                batches.push((tp, batch));
            }
        }
        batches
            .into_iter()
            .map(|(destination, batch)| self.seal(destination, batch))
            .collect()
    }

    fn seal(&mut self, destination: TopicPartition, batch: OpenBatch) -> ReadyBatch {
        let record_count = batch.builder.len();
        let (builder, base_sequence) = match self.producer {
            Some(p) => {
                let next = self.next_sequence.entry(destination.clone()).or_insert(0);
                let base = *next;
                *next = increment_sequence(base, record_count);
                (
                    batch
                        .builder
                        .producer(p.producer_id, p.producer_epoch, base),
                    base,
                )
            }
            None => (batch.builder, -1),
        };
        ReadyBatch {
            destination,
            bytes: builder.build(),
            record_count,
            base_sequence,
        }
    }

    /// When the earliest open batch will have lingered enough; `None` when nothing is open.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        self.open
            .values()
            .map(|b| b.opened_ms + self.config.linger_ms)
            .min()
    }

    /// Records waiting in open or closed batches.
    pub fn pending_records(&self) -> usize {
        self.open
            .values()
            .map(|b| b.builder.len() as usize)
            .sum::<usize>()
            + self
                .closed
                .iter()
                .map(|(_, b)| b.builder.len() as usize)
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_storage::batch;

    fn tp(p: u32) -> TopicPartition {
        TopicPartition {
            topic: "t".into(),
            partition: p,
        }
    }

    fn record(value_len: usize) -> ProducerRecord {
        ProducerRecord {
            timestamp_ms: 1000,
            key: None,
            value: Some(Bytes::from(vec![b'v'; value_len])),
            headers: vec![],
        }
    }

    #[test]
    fn a_batch_waits_for_linger_then_drains() {
        let mut acc = Accumulator::new(
            AccumulatorConfig {
                linger_ms: 10,
                ..Default::default()
            },
            None,
        );
        let first = acc.append(&tp(0), &record(10), 100).unwrap();
        assert!(first.opened_batch && !first.closed_batch);
        assert!(!acc.append(&tp(0), &record(10), 105).unwrap().opened_batch);
        assert_eq!(acc.next_deadline_ms(), Some(110));
        assert!(acc.drain_ready(109).is_empty());
        let ready = acc.drain_ready(110);
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].record_count, 2);
        let header = batch::validate(&ready[0].bytes).unwrap();
        assert_eq!((header.record_count, header.producer_id), (2, -1));
        assert_eq!(acc.pending_records(), 0);
    }

    #[test]
    fn a_full_batch_closes_and_the_record_opens_the_next() {
        let config = AccumulatorConfig {
            max_batch_bytes: 1000,
            linger_ms: 1000,
            ..Default::default()
        };
        let mut acc = Accumulator::new(config, None);
        let mut closed = 0;
        for _ in 0..30 {
            closed += acc.append(&tp(1), &record(100), 0).unwrap().closed_batch as usize;
        }
        assert!(closed >= 3);
        let ready = acc.drain_ready(1);
        assert!(
            ready.len() >= closed,
            "closed batches drain without waiting for linger"
        );
        for b in &ready {
            assert!(b.bytes.len() <= 1000, "batch of {} bytes", b.bytes.len());
            batch::validate(&b.bytes).unwrap();
        }
        let total: i32 = ready.iter().map(|b| b.record_count).sum::<i32>()
            + acc.drain_all().iter().map(|b| b.record_count).sum::<i32>();
        assert_eq!(total, 30, "no record lost or repeated");
    }

    #[test]
    fn idempotent_batches_carry_consecutive_sequences_per_partition() {
        let producer = ProducerIdentity {
            producer_id: 77,
            producer_epoch: 3,
        };
        let mut acc = Accumulator::new(
            AccumulatorConfig {
                linger_ms: 0,
                ..Default::default()
            },
            Some(producer),
        );
        for round in 0..3 {
            for _ in 0..=round {
                acc.append(&tp(0), &record(5), 0).unwrap();
            }
            acc.append(&tp(1), &record(5), 0).unwrap();
            for b in acc.drain_ready(0) {
                let h = batch::validate(&b.bytes).unwrap();
                assert_eq!(
                    (h.producer_id, h.producer_epoch, h.base_sequence),
                    (77, 3, b.base_sequence)
                );
                let expected = match b.destination.partition {
                    0 => [0, 1, 3][round],
                    _ => round as i32,
                };
                assert_eq!(
                    b.base_sequence, expected,
                    "partition {} round {round}",
                    b.destination.partition
                );
            }
        }
    }

    #[test]
    fn drain_sendable_takes_one_batch_per_partition_in_order_and_seals_late() {
        let producer = ProducerIdentity {
            producer_id: 9,
            producer_epoch: 0,
        };
        let config = AccumulatorConfig {
            max_batch_bytes: 400,
            linger_ms: 10,
            ..Default::default()
        };
        let mut acc = Accumulator::new(config, Some(producer));
        // Partition 0: several full batches; partition 1: one lingering batch.
        for _ in 0..12 {
            acc.append(&tp(0), &record(100), 0).unwrap();
        }
        acc.append(&tp(1), &record(10), 0).unwrap();
        // Partition 0 busy: nothing of it leaves, and partition 1 has not lingered yet.
        assert!(acc.drain_sendable(Some(5), |t| t.partition != 0).is_empty());
        let first = acc.drain_sendable(Some(5), |_| true);
        assert_eq!(first.len(), 1, "one batch of partition 0, none of 1 yet");
        assert_eq!(first[0].destination, tp(0));
        assert_eq!(first[0].base_sequence, 0);
        let mut next_sequence = first[0].record_count;
        let mut total = first[0].record_count;
        // A new identity before the next batch: sequences restart at 0 under it.
        acc.set_producer(Some(ProducerIdentity {
            producer_id: 10,
            producer_epoch: 0,
        }));
        next_sequence -= next_sequence;
        loop {
            let batches = acc.drain_sendable(None, |t| t.partition == 0);
            if batches.is_empty() {
                break;
            }
            assert_eq!(batches.len(), 1);
            let h = batch::validate(&batches[0].bytes).unwrap();
            assert_eq!((h.producer_id, h.base_sequence), (10, next_sequence));
            next_sequence += batches[0].record_count;
            total += batches[0].record_count;
        }
        assert_eq!(total, 12, "every record of partition 0, in order, once");
        assert!(!acc.has_pending(&tp(0)));
        assert!(acc.has_pending(&tp(1)));
        let late = acc.drain_sendable(Some(10), |_| true);
        assert_eq!((late.len(), late[0].destination.clone()), (1, tp(1)));
    }

    #[test]
    fn sequences_wrap_like_kafka() {
        assert_eq!(increment_sequence(5, 3), 8);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 5), 3);
    }

    #[test]
    fn an_oversized_record_is_refused() {
        let config = AccumulatorConfig {
            max_record_bytes: 100,
            ..Default::default()
        };
        let mut acc = Accumulator::new(config, None);
        assert!(matches!(
            acc.append(&tp(0), &record(200), 0),
            Err(AccumulatorError::RecordTooLarge { .. })
        ));
        assert_eq!(acc.pending_records(), 0);
    }
}
