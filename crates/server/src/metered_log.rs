//! A [`Log`] that measures the one it wraps: append and flush latency, bytes appended and
//! bytes made durable. Every method delegates; nothing else changes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use tandem_storage::{AppendInfo, EpochEntry, Log, LogOffsets, Result, RetentionOutcome};

use crate::metrics::StorageMetrics;

pub struct MeteredLog<L> {
    inner: L,
    metrics: StorageMetrics,
    /// Bytes appended since the last flush that moved the flushed offset: what the next one
    /// makes durable.
    unflushed_bytes: AtomicU64,
}

impl<L: Log> MeteredLog<L> {
    pub fn new(inner: L, metrics: StorageMetrics) -> MeteredLog<L> {
        MeteredLog {
            inner,
            metrics,
            unflushed_bytes: AtomicU64::new(0),
        }
    }

    fn appended(&self, started: Instant, flushed_before: i64, result: &Result<AppendInfo>) {
        let Ok(info) = result else {
            return;
        };
        let seconds = started.elapsed().as_secs_f64();
        self.metrics.append_seconds.observe(seconds);
        self.metrics.appended_bytes.inc_by(info.bytes as u64);
        self.unflushed_bytes
            .fetch_add(info.bytes as u64, Ordering::Relaxed);
        // Under flush=always (or a due interval) the append itself flushed.
        if self.inner.flushed_offset() > flushed_before {
            self.metrics.flush_seconds.observe(seconds);
            self.flushed();
        }
    }

    fn flushed(&self) {
        let bytes = self.unflushed_bytes.swap(0, Ordering::Relaxed);
        self.metrics.flushed_bytes.inc_by(bytes);
    }

    fn timed_flush(&self, flush: impl FnOnce(&L) -> Result<i64>) -> Result<i64> {
        let before = self.inner.flushed_offset();
        let started = Instant::now();
        let result = flush(&self.inner);
        if matches!(result, Ok(after) if after > before) {
            self.metrics
                .flush_seconds
                .observe(started.elapsed().as_secs_f64());
            self.flushed();
        }
        result
    }
}

impl<L: Log> Log for MeteredLog<L> {
    fn append_as_leader(&self, batches: &mut [u8], leader_epoch: i32) -> Result<AppendInfo> {
        let (flushed, started) = (self.inner.flushed_offset(), Instant::now());
        let result = self.inner.append_as_leader(batches, leader_epoch);
        self.appended(started, flushed, &result);
        result
    }
    fn append_replicated(&self, batches: &[u8]) -> Result<AppendInfo> {
        let (flushed, started) = (self.inner.flushed_offset(), Instant::now());
        let result = self.inner.append_replicated(batches);
        self.appended(started, flushed, &result);
        result
    }
    fn read(&self, offset: i64, max_bytes: usize) -> Result<Bytes> {
        self.inner.read(offset, max_bytes)
    }
    fn offsets(&self) -> LogOffsets {
        self.inner.offsets()
    }
    fn log_start_offset(&self) -> i64 {
        self.inner.log_start_offset()
    }
    fn log_end_offset(&self) -> i64 {
        self.inner.log_end_offset()
    }
    fn flushed_offset(&self) -> i64 {
        self.inner.flushed_offset()
    }
    fn flush(&self) -> Result<i64> {
        self.timed_flush(|log| log.flush())
    }
    fn flush_if_due(&self) -> Result<i64> {
        self.timed_flush(|log| log.flush_if_due())
    }
    fn truncate_to(&self, offset: i64) -> Result<()> {
        self.inner.truncate_to(offset)
    }
    fn truncate_fully_and_start_at(&self, offset: i64) -> Result<()> {
        self.inner.truncate_fully_and_start_at(offset)
    }
    fn advance_log_start(&self, offset: i64) -> Result<()> {
        self.inner.advance_log_start(offset)
    }
    fn apply_retention(&self, upper_bound: i64) -> Result<RetentionOutcome> {
        self.inner.apply_retention(upper_bound)
    }
    fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>> {
        self.inner.offset_for_timestamp(timestamp)
    }
    fn assign_epoch(&self, epoch: i32) -> Result<()> {
        self.inner.assign_epoch(epoch)
    }
    fn epochs(&self) -> Vec<EpochEntry> {
        self.inner.epochs()
    }
    fn latest_epoch(&self) -> Option<i32> {
        self.inner.latest_epoch()
    }
    fn end_offset_for_epoch(&self, epoch: i32) -> Option<EpochEntry> {
        self.inner.end_offset_for_epoch(epoch)
    }
    fn checkpoint_high_watermark(&self, high_watermark: i64) -> Result<()> {
        self.inner.checkpoint_high_watermark(high_watermark)
    }
    fn compact(
        &self,
        up_to: i64,
        now_ms: i64,
        config: &tandem_storage::CompactionConfig,
    ) -> Result<tandem_storage::CompactionReport> {
        self.inner.compact(up_to, now_ms, config)
    }
    fn compaction_horizon(&self) -> i64 {
        self.inner.compaction_horizon()
    }
    fn raise_compaction_horizon(&self, offset: i64) -> Result<()> {
        self.inner.raise_compaction_horizon(offset)
    }
    fn close(&self) -> Result<()> {
        let before = self.inner.flushed_offset();
        let result = self.inner.close();
        if result.is_ok() && self.inner.flushed_offset() > before {
            self.flushed();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_storage::{BatchBuilder, FlushPolicy, LogConfig, MemDir, MemLog, SystemClock};

    fn batch(base_offset: i64) -> bytes::BytesMut {
        let mut b = BatchBuilder::new(0);
        b.push(0, None, Some(b"value".as_slice()));
        let mut batch = b.build();
        tandem_storage::batch::set_base_offset(&mut batch, base_offset);
        tandem_storage::batch::set_leader_epoch(&mut batch, 0);
        batch
    }

    #[test]
    fn appends_and_flushes_are_timed_and_their_bytes_counted() {
        let metrics = crate::metrics::Observability::new().metrics.storage;
        let config = LogConfig {
            flush: FlushPolicy::Never,
            ..LogConfig::default()
        };
        let memory = MemLog::open(MemDir::new(), config, std::sync::Arc::new(SystemClock))
            .expect("an empty log opens");
        let log = MeteredLog::new(memory, metrics.clone());
        let mut first = batch(0);
        let size = first.len() as u64;
        log.append_as_leader(&mut first, 0).unwrap();
        log.append_replicated(&batch(1)).unwrap();
        assert_eq!(metrics.appended_bytes.get(), 2 * size);
        assert_eq!(
            metrics.flushed_bytes.get(),
            0,
            "flush=never: nothing durable yet"
        );
        assert_eq!(log.flush().unwrap(), 2);
        assert_eq!(metrics.flushed_bytes.get(), 2 * size);
        assert_eq!(log.flush().unwrap(), 2);
        assert_eq!(
            metrics.flushed_bytes.get(),
            2 * size,
            "nothing new to flush"
        );
        assert_eq!(log.log_end_offset(), 2, "delegates");
    }
}
