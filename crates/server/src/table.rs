//! A table partition at run time: the pure [`TableReplica`] (crates/table: the table fed from
//! the log actions, the leader's compare-and-set decision, reads checked per consistency —
//! the same code the simulator runs) plus what needs I/O here: oneshot replies, the snapshot
//! file, and the clock.
//!
//! Everything here runs on the partition's thread (see `partition.rs`), so the table, the
//! replication core and the log never disagree about where the HW is when a reply leaves.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tandem_replication::event::Action;
use tandem_replication::{ProduceError, Replica};
use tandem_storage::{Log, StorageError};
use tandem_table::read::Consistency;
use tandem_table::replica::{restore, Answer, CasDecision, TableReplica};
use tandem_table::snapshot;
use tokio::sync::oneshot;
use tracing::{info, warn};

pub use tandem_table::replica::{
    ReadAnswer, TableQuery, TableReadError, TableWrite, TableWriteError, Written,
};

/// How often a table is checkpointed, at most (and only if it changed).
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(30);

pub type WriteReply = oneshot::Sender<Result<Written, TableWriteError>>;
pub type ReadReply = oneshot::Sender<Result<ReadAnswer, TableReadError>>;

/// The table beside one replica, with its snapshot file.
pub struct TableRuntime {
    replica: TableReplica<WriteReply, ReadReply>,
    snapshot_path: PathBuf,
    last_snapshot: Instant,
    snapshot_applied: i64,
}

impl TableRuntime {
    /// The table of the replica over `log`: from its snapshot if that still matches the log,
    /// then the log's tail; otherwise the whole log.
    pub fn load(
        log: &dyn Log,
        snapshot_path: PathBuf,
        high_watermark: i64,
    ) -> Result<TableRuntime, StorageError> {
        let restored = read_snapshot(&snapshot_path, log);
        let from_snapshot = restored.as_ref().map_or(0, |t| t.applied_offset());
        let replica = TableReplica::load(log, high_watermark, restored)?;
        info!(
            snapshot = %snapshot_path.display(),
            from_snapshot,
            keys = replica.table().len(),
            applied = replica.table().applied_offset(),
            "table loaded"
        );
        Ok(TableRuntime {
            snapshot_applied: from_snapshot,
            replica,
            snapshot_path,
            last_snapshot: Instant::now(),
        })
    }

    /// A log action was performed (`failed`: the log refused it).
    pub fn on_log_action(&mut self, action: &Action, failed: bool) {
        self.replica.on_log_action(action, failed);
    }

    /// The core's HW, applied before any reply leaves the partition thread.
    pub fn commit_to(&mut self, high_watermark: i64) {
        self.replica.commit_to(high_watermark);
    }

    /// A fetch answer from the leader arrived, naming its LEO.
    pub fn on_leader_log_end_offset(&mut self, leader_log_end_offset: i64) {
        self.replica.on_leader_log_end_offset(leader_log_end_offset);
    }

    /// After each step of the core: follow its HW, then answer what waited on it.
    pub fn after_step(&mut self, replica: &Replica, log: &dyn Log, now_ms: i64) {
        send_all(self.replica.after_step(replica, log, now_ms));
    }

    /// A compare-and-set is decided on the leader against its latest appended state.
    /// `Some(reply)`: go ahead and append. `None`: the request was answered (or parked).
    pub fn decide_cas(
        &mut self,
        replica: &Replica,
        key: &[u8],
        expected: Option<i64>,
        now_ms: i64,
        timeout_ms: i64,
        reply: WriteReply,
    ) -> Option<WriteReply> {
        match self
            .replica
            .decide_cas(replica, key, expected, now_ms, timeout_ms, reply)
        {
            CasDecision::Append(reply) => Some(reply),
            CasDecision::Answered(reply, error) => {
                let _ = reply.send(Err(error));
                None
            }
            CasDecision::Parked => None,
        }
    }

    /// A read: answered now, or parked until the replica catches up or `wait` runs out.
    #[allow(clippy::too_many_arguments)]
    pub fn read(
        &mut self,
        replica: &Replica,
        query: TableQuery,
        consistency: Consistency,
        has_lease: bool,
        now_ms: i64,
        wait: Duration,
        reply: ReadReply,
    ) {
        let wait_ms = wait.as_millis() as i64;
        if let Some((reply, answer)) = self.replica.read(
            replica,
            query,
            consistency,
            has_lease,
            now_ms,
            wait_ms,
            reply,
        ) {
            let _ = reply.send(answer);
        }
    }

    /// Checkpoints the table if it is time: flush the log first, so that after a crash the
    /// log still holds every offset the snapshot covers (and its epoch can be checked).
    pub fn maybe_snapshot(&mut self, replica: &Replica, log: &dyn Log, force: bool) {
        let applied = self.replica.table().applied_offset();
        let due = force || self.last_snapshot.elapsed() >= SNAPSHOT_INTERVAL;
        if !due || applied == self.snapshot_applied {
            return;
        }
        self.last_snapshot = Instant::now();
        if let Err(e) = log.flush() {
            warn!(error = %e, "flush before the table snapshot failed; no snapshot");
            return;
        }
        let Some(bytes) = self.replica.snapshot(replica) else {
            return; // waiting to be rebuilt
        };
        let path = self.snapshot_path.clone();
        // The write is the slow part; the partition thread goes on meanwhile.
        let written = std::thread::Builder::new()
            .name("table snapshot".into())
            .spawn(move || {
                if let Err(e) = write_atomically(&path, &bytes) {
                    warn!(path = %path.display(), error = %e, "table snapshot failed");
                }
            });
        match written {
            Ok(thread) if force => {
                let _ = thread.join();
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "could not start the snapshot writer"),
        }
        self.snapshot_applied = applied;
    }

    /// The replica stops: whoever waits is told.
    pub fn shut_down(&mut self) {
        send_all(self.replica.shut_down());
    }
}

/// The answer for a table request sent to a partition that is not a table's (the node checks
/// first; this covers a race with a topic deletion).
pub fn not_a_table_write(topic: &str) -> TableWriteError {
    warn!(topic, "a table write reached a replica of a log");
    ProduceError::InvalidRequest("the topic is not a table").into()
}

pub fn not_a_table_read(topic: &str) -> TableReadError {
    TableReadError::Storage(format!("{topic} is not a table"))
}

fn send_all(answers: Vec<Answer<WriteReply, ReadReply>>) {
    for answer in answers {
        match answer {
            Answer::Write(reply, result) => {
                let _ = reply.send(result);
            }
            Answer::Read(reply, result) => {
                let _ = reply.send(result);
            }
        }
    }
}

/// The snapshot at `path`, if it exists, decodes, and still agrees with the log.
fn read_snapshot(path: &Path, log: &dyn Log) -> Option<tandem_table::Table> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => Bytes::from(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot read the table snapshot; replaying the log");
            return None;
        }
    };
    let decoded = match snapshot::decode(&bytes) {
        Ok(snapshot) => snapshot,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "table snapshot discarded; replaying the log");
            return None;
        }
    };
    let applied = decoded.applied;
    let restored = restore(decoded, log);
    if restored.is_none() {
        let offsets = log.offsets();
        warn!(
            path = %path.display(),
            applied,
            log_start = offsets.log_start_offset,
            log_end = offsets.log_end_offset,
            "table snapshot no longer matches the log; replaying the log"
        );
    }
    restored
}

/// Temp file, fsync, rename, fsync of the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}
