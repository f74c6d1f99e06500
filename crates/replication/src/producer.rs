//! Idempotent producers (DESIGN.md rule 9): per producer id, its epoch and the sequence
//! numbers of its last few batches, so that a retried batch is recognised and answered with
//! its original offset instead of being written twice.
//!
//! The table is derived from batch headers alone (producer id, producer epoch, base sequence,
//! offsets), the same headers every replica stores. A follower records them as it appends, so
//! a new leader deduplicates a retry of a batch its predecessor wrote; a restarted replica
//! rebuilds the table by reading its log ([`ProducerTable::from_headers`]).

use std::collections::{BTreeMap, VecDeque};

use tandem_storage::batch::NO_SEQUENCE;
use tandem_storage::BatchHeader;

use crate::error::ProduceError;

/// Batches remembered per producer: Kafka's limit on in-flight requests per connection with
/// idempotence, so every batch a producer may still retry is remembered.
pub const BATCHES_PER_PRODUCER: usize = 5;

/// Where one batch of a producer landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ProducerEntry {
    producer_epoch: i16,
    /// Oldest first, at most [`BATCHES_PER_PRODUCER`].
    batches: VecDeque<ProducerBatch>,
}

/// The verdict on an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not seen before (or not from an idempotent producer): append it.
    Append,
    /// A retry of a batch already in the log, here.
    Duplicate(ProducerBatch),
}

/// Sequence numbers wrap from `i32::MAX` to 0, as in Kafka.
fn add_sequence(sequence: i32, delta: i32) -> i32 {
    if sequence > i32::MAX - delta {
        delta - (i32::MAX - sequence) - 1
    } else {
        sequence + delta
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerTable {
    producers: BTreeMap<i64, ProducerEntry>,
}

impl ProducerTable {
    pub fn new() -> ProducerTable {
        ProducerTable::default()
    }

    /// The table a log holding these batches (in offset order) implies.
    pub fn from_headers<'a>(headers: impl IntoIterator<Item = &'a BatchHeader>) -> ProducerTable {
        let mut table = ProducerTable::new();
        for header in headers {
            table.record(header);
        }
        table
    }

    /// Decides whether a leader should append `header`'s batch.
    pub fn check(&self, header: &BatchHeader) -> Result<SequenceCheck, ProduceError> {
        if !header.has_producer_id() {
            return Ok(SequenceCheck::Append);
        }
        let producer_id = header.producer_id;
        if header.base_sequence < 0 {
            return Err(ProduceError::InvalidRequest(
                "an idempotent batch must carry a sequence number",
            ));
        }
        let Some(entry) = self.producers.get(&producer_id) else {
            // Unknown producer (new, or its batches were truncated or deleted): any sequence
            // starts it, as in Kafka since KIP-360.
            return Ok(SequenceCheck::Append);
        };
        if header.producer_epoch < entry.producer_epoch {
            return Err(ProduceError::InvalidProducerEpoch {
                producer_id,
                producer_epoch: header.producer_epoch,
                current_producer_epoch: entry.producer_epoch,
            });
        }
        if header.producer_epoch > entry.producer_epoch {
            // A new producer epoch restarts the sequence.
            if header.base_sequence != 0 {
                return Err(ProduceError::OutOfOrderSequence {
                    producer_id,
                    expected_sequence: 0,
                    sequence: header.base_sequence,
                });
            }
            return Ok(SequenceCheck::Append);
        }
        let last_sequence = add_sequence(header.base_sequence, header.last_offset_delta);
        if let Some(original) = entry
            .batches
            .iter()
            .find(|b| b.first_sequence == header.base_sequence && b.last_sequence == last_sequence)
        {
            return Ok(SequenceCheck::Duplicate(*original));
        }
        match entry.batches.back() {
            None => Ok(SequenceCheck::Append),
            Some(latest) => {
                let expected_sequence = add_sequence(latest.last_sequence, 1);
                if header.base_sequence == expected_sequence {
                    Ok(SequenceCheck::Append)
                } else {
                    Err(ProduceError::OutOfOrderSequence {
                        producer_id,
                        expected_sequence,
                        sequence: header.base_sequence,
                    })
                }
            }
        }
    }

    /// Records a batch that is now in the log (offsets assigned).
    pub fn record(&mut self, header: &BatchHeader) {
        if !header.has_producer_id() || header.base_sequence == NO_SEQUENCE {
            return;
        }
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert(ProducerEntry {
                producer_epoch: header.producer_epoch,
                batches: VecDeque::new(),
            });
        if header.producer_epoch > entry.producer_epoch {
            entry.producer_epoch = header.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(ProducerBatch {
            first_sequence: header.base_sequence,
            last_sequence: add_sequence(header.base_sequence, header.last_offset_delta),
            first_offset: header.base_offset,
            last_offset: header.last_offset(),
        });
        while entry.batches.len() > BATCHES_PER_PRODUCER {
            entry.batches.pop_front();
        }
    }

    /// The log was cut to `offset`: forget batches that are gone. A producer left with none
    /// is forgotten too, so its next batch is accepted with any sequence.
    pub fn truncate_from(&mut self, offset: i64) {
        for entry in self.producers.values_mut() {
            entry.batches.retain(|b| b.last_offset < offset);
        }
        self.producers.retain(|_, e| !e.batches.is_empty());
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_storage::BatchBuilder;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32, base_offset: i64) -> BatchHeader {
        let mut b = BatchBuilder::new(0).producer(pid, epoch, seq);
        for _ in 0..count {
            b.push(0, None, Some(b"v"));
        }
        let mut bytes = b.build();
        tandem_storage::batch::set_base_offset(&mut bytes, base_offset);
        BatchHeader::parse(&bytes).unwrap()
    }

    #[test]
    fn a_retry_is_a_duplicate_with_the_original_offsets() {
        let mut t = ProducerTable::new();
        let first = header(7, 0, 0, 3, 10);
        assert_eq!(t.check(&first), Ok(SequenceCheck::Append));
        t.record(&first);
        let retry = header(7, 0, 0, 3, 99);
        assert_eq!(
            t.check(&retry),
            Ok(SequenceCheck::Duplicate(ProducerBatch {
                first_sequence: 0,
                last_sequence: 2,
                first_offset: 10,
                last_offset: 12
            }))
        );
        assert_eq!(t.check(&header(7, 0, 3, 1, 0)), Ok(SequenceCheck::Append));
    }

    #[test]
    fn a_gap_in_sequence_is_out_of_order() {
        let mut t = ProducerTable::new();
        t.record(&header(7, 0, 0, 3, 10));
        assert_eq!(
            t.check(&header(7, 0, 5, 1, 0)),
            Err(ProduceError::OutOfOrderSequence {
                producer_id: 7,
                expected_sequence: 3,
                sequence: 5
            })
        );
    }

    #[test]
    fn producer_epochs_fence_and_restart_sequences() {
        let mut t = ProducerTable::new();
        t.record(&header(7, 2, 0, 1, 0));
        assert!(matches!(
            t.check(&header(7, 1, 1, 1, 0)),
            Err(ProduceError::InvalidProducerEpoch { .. })
        ));
        assert!(matches!(
            t.check(&header(7, 3, 4, 1, 0)),
            Err(ProduceError::OutOfOrderSequence {
                expected_sequence: 0,
                ..
            })
        ));
        assert_eq!(t.check(&header(7, 3, 0, 1, 0)), Ok(SequenceCheck::Append));
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert_eq!(add_sequence(i32::MAX, 1), 0);
        assert_eq!(add_sequence(i32::MAX - 1, 3), 1);
        let mut t = ProducerTable::new();
        t.record(&header(7, 0, i32::MAX - 1, 2, 0));
        assert_eq!(t.check(&header(7, 0, 0, 1, 2)), Ok(SequenceCheck::Append));
    }

    #[test]
    fn truncation_forgets_the_cut_batches() {
        let mut t = ProducerTable::new();
        t.record(&header(7, 0, 0, 2, 0));
        t.record(&header(7, 0, 2, 2, 2));
        t.truncate_from(2);
        assert_eq!(t.check(&header(7, 0, 2, 2, 0)), Ok(SequenceCheck::Append));
        t.truncate_from(0);
        assert!(t.is_empty());
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut t = ProducerTable::new();
        for i in 0..7 {
            t.record(&header(7, 0, i, 1, i as i64));
        }
        assert!(matches!(
            t.check(&header(7, 0, 2, 1, 0)),
            Ok(SequenceCheck::Duplicate(_))
        ));
        // Sequence 1 is forgotten: a retry that old is out of order, not silently rewritten.
        assert!(matches!(
            t.check(&header(7, 0, 1, 1, 0)),
            Err(ProduceError::OutOfOrderSequence { .. })
        ));
    }
}
