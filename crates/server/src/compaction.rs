//! Table compaction in the background: one thread per node goes over its table replicas every
//! `compaction_interval`, compacts each log below its HW (latest record per key, tombstones
//! kept for the topic's `delete.retention.ms`), then tells the partition's core the new
//! compaction horizon (followers behind it must copy the log again, docs/storage.md).
//!
//! The compaction itself runs beside the partition thread: the log swaps cleaned segments in
//! under its lock only briefly, so appends and reads go on (docs/storage.md, "Compaction").

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tandem_storage::CompactionConfig;
use tracing::{debug, info, warn};

use crate::node::Node;
use crate::partition::TopicPartition;

/// One table replica to compact, and up to where.
pub struct CompactionTarget {
    pub partition: TopicPartition,
    pub log: Arc<dyn tandem_storage::Log>,
    pub high_watermark: i64,
    pub tombstone_retention_ms: i64,
}

/// How often the thread checks whether the node is stopping while it waits.
const POLL: Duration = Duration::from_millis(100);

/// Runs until the node is gone or stopping.
pub fn run(node: Weak<Node>) {
    let mut next = Instant::now();
    loop {
        std::thread::sleep(POLL);
        let Some(strong) = node.upgrade() else { return };
        if strong.stopped() {
            return;
        }
        if Instant::now() < next {
            continue;
        }
        next = Instant::now() + strong.compaction_interval();
        let targets = strong.table_logs();
        drop(strong); // a long compaction must not keep a stopped node alive
        for target in targets {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let config = CompactionConfig {
                tombstone_retention_ms: target.tombstone_retention_ms,
                ..CompactionConfig::default()
            };
            let before = target.log.compaction_horizon();
            match target.log.compact(target.high_watermark, now_ms, &config) {
                Ok(report) => {
                    if report.segments_rewritten > 0 {
                        info!(
                            partition = %target.partition,
                            segments = report.segments_rewritten,
                            bytes_before = report.bytes_before,
                            bytes_after = report.bytes_after,
                            records_removed = report.records_removed,
                            tombstones_removed = report.tombstones_removed,
                            horizon = report.compaction_horizon,
                            "compacted"
                        );
                    } else {
                        debug!(partition = %target.partition, "nothing to compact");
                    }
                    if report.compaction_horizon != before {
                        if let Some(node) = node.upgrade() {
                            node.compacted(&target.partition, report.compaction_horizon);
                        }
                    }
                }
                Err(e) => {
                    warn!(partition = %target.partition, error = %e, "compaction failed");
                }
            }
        }
    }
}
