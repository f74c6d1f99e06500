//! The few log calls a driver makes on the core's behalf: building the core's model from a
//! log at start, performing log actions, and reading the range a fetch answer names. The only
//! module of this crate that touches a [`Log`]; the server runtime and the simulator share it.

use bytes::Bytes;
use tandem_storage::batch::split_batches;
use tandem_storage::{BatchHeader, EpochCache, Log, StorageError};

use crate::event::{Action, Event};
use crate::local_log::LocalLog;
use crate::producer::ProducerTable;
use crate::types::ReadRange;

/// Bytes read per step while scanning the log for producer state.
const SCAN_BYTES: usize = 1 << 20;

/// The core's model of `log`, and the HW from its checkpoint: what [`crate::Replica::new`]
/// takes at start and after a [`Event::LogFailed`].
///
/// The producer table is rebuilt by reading every batch header in the log, so that dedupe
/// survives a restart (rule 9). That reads the whole log; a producer-state snapshot beside
/// the HW checkpoint would bound it (not built yet).
pub fn recover(log: &dyn Log) -> Result<(LocalLog, i64), StorageError> {
    // Mutation (crates/sim): the pre-KIP-101 bug, cutting the log to the HW checkpoint at
    // start. Rule 6 forbids it: the tail above the HW may hold acknowledged data.
    #[cfg(feature = "mutation-truncate-to-hw")]
    log.truncate_to(log.offsets().high_watermark)?;
    let offsets = log.offsets();
    let mut epochs = EpochCache::new();
    for entry in log.epochs() {
        // The log's cache is monotonic by contract; a refused entry cannot happen.
        let _ = epochs.assign(entry.epoch, entry.start_offset);
    }
    let mut headers: Vec<BatchHeader> = Vec::new();
    let mut offset = offsets.log_start_offset;
    while offset < offsets.log_end_offset {
        let bytes = log.read(offset, SCAN_BYTES)?;
        let before = offset;
        for (header, _) in split_batches(&bytes).map_while(Result::ok) {
            offset = header.next_offset();
            headers.push(header);
        }
        if offset == before {
            break; // nothing readable here: the log's recovery cut it, so stop
        }
    }
    let producers = ProducerTable::from_headers(&headers);
    Ok((
        LocalLog::new(offsets, epochs, producers).with_compaction_horizon(log.compaction_horizon()),
        offsets.high_watermark,
    ))
}

/// Performs a log action and returns the event that reports it, if it has one. Send and
/// complete actions are not log actions: they return `None` and are the caller's to deliver.
/// Checkpointing the HW on `HighWatermarkAdvanced` is the caller's too: how often is a
/// policy (Kafka: every 5 s), and each checkpoint is an atomic file rewrite.
pub fn perform(log: &dyn Log, action: &Action) -> Option<Event> {
    let failed = |e: StorageError| Event::LogFailed {
        reason: e.to_string(),
    };
    match action {
        Action::Append {
            batches,
            compaction_horizon,
        } => {
            let raised = match compaction_horizon {
                Some(offset) => log.raise_compaction_horizon(*offset),
                None => Ok(()),
            };
            Some(match raised.and_then(|_| log.append_replicated(batches)) {
                Ok(info) => Event::Appended {
                    log_end_offset: info.log_end_offset,
                    flushed_offset: log.flushed_offset(),
                },
                Err(e) => failed(e),
            })
        }
        Action::Flush => Some(match log.flush() {
            Ok(flushed_offset) => Event::Flushed { flushed_offset },
            Err(e) => failed(e),
        }),
        Action::Truncate { offset } => log.truncate_to(*offset).err().map(failed),
        Action::TruncateFullyAndStartAt { offset } => {
            log.truncate_fully_and_start_at(*offset).err().map(failed)
        }
        _ => None,
    }
}

/// Reads what a fetch answer names: whole batches from `range.offset`, none reaching
/// `range.end_offset`, at most `range.max_bytes` except that the first batch always comes.
pub fn read_range(log: &dyn Log, range: ReadRange) -> Result<Bytes, StorageError> {
    if range.offset >= range.end_offset {
        return Ok(Bytes::new());
    }
    let bytes = log.read(range.offset, range.max_bytes)?;
    if let Some(checked) = range.compaction_horizon {
        // Read after the bytes: a compaction swapped in before the read had raised it already.
        // Both are the durable horizon (`LocalLog::compaction_horizon_target`).
        let horizon = log.compaction_horizon();
        let log_start_offset = log.log_start_offset();
        if horizon > checked && range.offset > log_start_offset && range.offset < horizon {
            return Err(StorageError::OffsetOutOfRange {
                offset: range.offset,
                log_start_offset,
                log_end_offset: log.log_end_offset(),
            });
        }
    }
    let mut length = 0;
    for (header, raw) in split_batches(&bytes).map_while(Result::ok) {
        if header.last_offset() >= range.end_offset {
            break;
        }
        length += raw.len();
    }
    Ok(bytes.slice(..length))
}
