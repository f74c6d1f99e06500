//! A table partition at run time: the [`tandem_table::Table`] a replica keeps beside its log,
//! fed from the log actions the partition thread performs, plus the key-value requests that
//! wait on it (reads that wait for a token, compare-and-set answers that wait for the HW), and
//! the snapshot that spares a restart from replaying the whole log.
//!
//! Everything here runs on the partition's thread (see `partition.rs`), so the table, the
//! replication core and the log never disagree about where the HW is when a reply leaves.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tandem_replication::event::Action;
use tandem_replication::{ProduceError, Replica, RoleKind};
use tandem_storage::{Log, StorageError};
use tandem_table::read::{self, Consistency, ReadView, Token};
use tandem_table::{decode_writes, snapshot, Table};
use tokio::sync::oneshot;
use tracing::{info, warn};

/// How often a table is checkpointed, at most (and only if it changed).
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(30);
/// Bytes read per call when replaying the log into the table.
const REPLAY_CHUNK: usize = 1 << 20;

/// A write a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableWrite {
    pub key: Bytes,
    /// `None`: delete.
    pub value: Option<Bytes>,
    /// Compare-and-set: write only if the key's version is this (`Some(None)`: absent).
    pub expected: Option<Option<i64>>,
}

/// A successful write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The new version and its epoch; `None` for acks=0 (nobody waited for the offset).
    pub token: Option<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableWriteError {
    #[error(transparent)]
    Produce(#[from] ProduceError),
    #[error("compare-and-set failed: the current version is {}", current.map_or("absent".to_string(), |v| v.to_string()))]
    CasMismatch { current: Option<i64> },
    #[error("{0}")]
    NotATable(String),
}

/// A read a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableQuery {
    Get {
        key: Bytes,
    },
    Scan {
        prefix: Bytes,
        from: Bytes,
        to: Option<Bytes>,
        limit: usize,
    },
}

/// What a read returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadAnswer {
    pub entries: Vec<(Bytes, tandem_table::Entry)>,
    pub next: Option<Bytes>,
    pub token: Option<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableReadError {
    #[error(transparent)]
    Read(#[from] read::ReadError),
    #[error("{0}")]
    NotATable(String),
    #[error("the replica failed: {0}")]
    Storage(String),
}

pub type WriteReply = oneshot::Sender<Result<Written, TableWriteError>>;
pub type ReadReply = oneshot::Sender<Result<ReadAnswer, TableReadError>>;

/// A read that waits for this replica to catch up (an `AtLeast` token not yet applied).
struct ParkedRead {
    query: TableQuery,
    consistency: Consistency,
    has_lease: bool,
    deadline: Instant,
    reply: ReadReply,
}

/// A compare-and-set that failed against a write not yet committed: the answer waits until
/// that write commits, so that no client learns of a state before reads can see it.
struct ParkedMismatch {
    current: Option<i64>,
    commit_offset: i64,
    leader_epoch: i32,
    deadline: Instant,
    reply: WriteReply,
}

/// The table beside one replica.
pub struct TableRuntime {
    table: Table,
    snapshot_path: PathBuf,
    last_snapshot: Instant,
    snapshot_applied: i64,
    /// Set when the table can no longer follow the log incrementally (a truncation below the
    /// applied offset, a failed log action): rebuilt from the log after the current step.
    needs_rebuild: bool,
    /// The leader's LEO from the last fetch answer (followers), for lag bounds.
    leader_log_end_offset: Option<i64>,
    /// When this follower last had everything the leader had, and in which epoch.
    caught_up: Option<(i32, Instant)>,
    parked_reads: Vec<ParkedRead>,
    parked_mismatches: Vec<ParkedMismatch>,
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
        let mut table = restored.unwrap_or_else(|| Table::new(log.log_start_offset()));
        let snapshot_applied = table.applied_offset();
        replay(log, &mut table, high_watermark)?;
        info!(
            snapshot = %snapshot_path.display(),
            from_snapshot = snapshot_applied,
            keys = table.len(),
            applied = table.applied_offset(),
            "table loaded"
        );
        Ok(TableRuntime {
            table,
            snapshot_path,
            last_snapshot: Instant::now(),
            snapshot_applied,
            needs_rebuild: false,
            leader_log_end_offset: None,
            caught_up: None,
            parked_reads: Vec::new(),
            parked_mismatches: Vec::new(),
        })
    }

    pub fn table(&self) -> &Table {
        &self.table
    }

    /// A log action is about to be performed (`failed`: it was, and the log refused it).
    pub fn on_log_action(&mut self, action: &Action, failed: bool) {
        if failed {
            self.needs_rebuild = true;
            return;
        }
        match action {
            Action::Append { batches, .. } => match decode_writes(batches) {
                Ok(writes) => self.table.append(writes),
                Err(e) => {
                    warn!(error = %e, "a batch in a table's log is not a table write; skipped");
                }
            },
            Action::Truncate { offset } => {
                if let Err(e) = self.table.truncate(*offset) {
                    warn!(error = %e, "rebuilding the table from the log");
                    self.needs_rebuild = true;
                }
            }
            Action::TruncateFullyAndStartAt { offset } => self.table.reset(*offset),
            _ => {}
        }
    }

    /// The core's HW, applied before any reply leaves the partition thread.
    pub fn commit_to(&mut self, high_watermark: i64) {
        if !self.needs_rebuild {
            self.table.commit_to(high_watermark);
        }
    }

    /// A fetch answer from the leader arrived, naming its LEO.
    pub fn on_leader_log_end_offset(&mut self, leader_log_end_offset: i64) {
        self.leader_log_end_offset = Some(leader_log_end_offset);
    }

    /// After each step of the core: follow its HW, then answer what waited on it.
    pub fn after_step(&mut self, replica: &Replica, log: &dyn Log) {
        if self.needs_rebuild {
            self.needs_rebuild = false;
            let mut table = Table::new(log.log_start_offset());
            match replay(log, &mut table, replica.high_watermark()) {
                Ok(()) => self.table = table,
                Err(e) => {
                    warn!(error = %e, "the table could not be rebuilt from the log");
                    self.needs_rebuild = true;
                }
            }
        }
        self.table.commit_to(replica.high_watermark());
        if replica.role() == RoleKind::Follower {
            let caught_up = self
                .leader_log_end_offset
                .is_some_and(|leo| replica.local_log().log_end_offset() >= leo);
            let epoch = replica.leader_epoch();
            if caught_up {
                self.caught_up = Some((epoch, Instant::now()));
            } else if self.caught_up.is_some_and(|(e, _)| e != epoch) {
                self.caught_up = None;
            }
        } else {
            self.leader_log_end_offset = None;
        }
        self.answer_parked(replica);
    }

    fn answer_parked(&mut self, replica: &Replica) {
        let now = Instant::now();
        let applied = self.table.applied_offset();
        let epoch = replica.leader_epoch();
        let still_leader = replica.role() == RoleKind::Leader;
        for parked in std::mem::take(&mut self.parked_mismatches) {
            if !still_leader || parked.leader_epoch != epoch {
                // The write it saw may be gone; nothing of this request was written.
                let (leader, leader_epoch) = leader_hint(replica);
                let _ = parked.reply.send(Err(ProduceError::NotLeader {
                    leader,
                    leader_epoch,
                }
                .into()));
            } else if applied >= parked.commit_offset {
                let _ = parked.reply.send(Err(TableWriteError::CasMismatch {
                    current: parked.current,
                }));
            } else if now >= parked.deadline {
                let _ = parked.reply.send(Err(ProduceError::NotLeader {
                    leader: None,
                    leader_epoch: epoch,
                }
                .into()));
            } else {
                self.parked_mismatches.push(parked);
            }
        }
        for parked in std::mem::take(&mut self.parked_reads) {
            let ParkedRead {
                query,
                consistency,
                has_lease,
                deadline,
                reply,
            } = parked;
            match self.try_read(replica, &query, consistency, has_lease) {
                Err(TableReadError::Read(e)) if e.may_wait() && now < deadline => {
                    self.parked_reads.push(ParkedRead {
                        query,
                        consistency,
                        has_lease,
                        deadline,
                        reply,
                    });
                }
                answer => {
                    let _ = reply.send(answer);
                }
            }
        }
    }

    /// A compare-and-set is decided here, on the leader, against its latest appended state.
    /// `Some(reply)`: go ahead and append. `None`: the request was answered (or parked).
    pub fn decide_cas(
        &mut self,
        replica: &Replica,
        key: &[u8],
        expected: Option<i64>,
        timeout: Duration,
        reply: WriteReply,
    ) -> Option<WriteReply> {
        if replica.role() != RoleKind::Leader {
            let (leader, leader_epoch) = leader_hint(replica);
            let _ = reply.send(Err(ProduceError::NotLeader {
                leader,
                leader_epoch,
            }
            .into()));
            return None;
        }
        let check = self.table.cas_check(key);
        if check.current == expected {
            return Some(reply);
        }
        match check.uncommitted_until {
            Some(commit_offset) if commit_offset > self.table.applied_offset() => {
                self.parked_mismatches.push(ParkedMismatch {
                    current: check.current,
                    commit_offset,
                    leader_epoch: replica.leader_epoch(),
                    deadline: Instant::now() + timeout,
                    reply,
                });
            }
            _ => {
                let _ = reply.send(Err(TableWriteError::CasMismatch {
                    current: check.current,
                }));
            }
        }
        None
    }

    /// A read: answered now, or parked until the replica catches up or `wait` runs out.
    pub fn read(
        &mut self,
        replica: &Replica,
        query: TableQuery,
        consistency: Consistency,
        has_lease: bool,
        wait: Duration,
        reply: ReadReply,
    ) {
        match self.try_read(replica, &query, consistency, has_lease) {
            Err(TableReadError::Read(e))
                if e.may_wait() && matches!(consistency, Consistency::AtLeast(_)) =>
            {
                if wait.is_zero() {
                    let _ = reply.send(Err(e.into()));
                } else {
                    self.parked_reads.push(ParkedRead {
                        query,
                        consistency,
                        has_lease,
                        deadline: Instant::now() + wait,
                        reply,
                    });
                }
            }
            answer => {
                let _ = reply.send(answer);
            }
        }
    }

    fn try_read(
        &self,
        replica: &Replica,
        query: &TableQuery,
        consistency: Consistency,
        has_lease: bool,
    ) -> Result<ReadAnswer, TableReadError> {
        if let Some(reason) = replica.failure() {
            return Err(TableReadError::Storage(reason.to_string()));
        }
        let local = replica.local_log();
        let is_leader = replica.role() == RoleKind::Leader;
        let view = ReadView {
            is_leader,
            has_lease,
            high_watermark: self.table.applied_offset(),
            epoch_start_offset: is_leader.then(|| replica.epoch_start_offset()).flatten(),
            leader_log_end_offset: if is_leader {
                Some(local.log_end_offset())
            } else {
                self.leader_log_end_offset
            },
            ms_since_caught_up: if is_leader {
                Some(0)
            } else {
                self.caught_up
                    .filter(|(epoch, _)| *epoch == replica.leader_epoch())
                    .map(|(_, at)| at.elapsed().as_millis() as i64)
            },
            log_start_offset: local.log_start_offset(),
            epochs: local.epochs(),
        };
        read::check(consistency, &view)?;
        let token = read::read_token(&view);
        let (entries, next) = match query {
            TableQuery::Get { key } => (
                self.table
                    .get(key)
                    .map(|e| (key.clone(), e.clone()))
                    .into_iter()
                    .collect(),
                None,
            ),
            TableQuery::Scan {
                prefix,
                from,
                to,
                limit,
            } => {
                let page = self.table.scan(prefix, from, to.as_deref(), *limit);
                (page.entries, page.next)
            }
        };
        Ok(ReadAnswer {
            entries,
            next,
            token,
        })
    }

    /// Checkpoints the table if it is time: flush the log first, so that after a crash the
    /// log still holds every offset the snapshot covers (and its epoch can be checked).
    pub fn maybe_snapshot(&mut self, replica: &Replica, log: &dyn Log, force: bool) {
        let applied = self.table.applied_offset();
        let due = force || self.last_snapshot.elapsed() >= SNAPSHOT_INTERVAL;
        if !due || applied == self.snapshot_applied || self.needs_rebuild {
            return;
        }
        self.last_snapshot = Instant::now();
        if let Err(e) = log.flush() {
            warn!(error = %e, "flush before the table snapshot failed; no snapshot");
            return;
        }
        let last_epoch = replica.local_log().epochs().epoch_for_offset(applied - 1);
        let bytes = snapshot::encode(&self.table, last_epoch);
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
        for parked in self.parked_reads.drain(..) {
            let _ = parked
                .reply
                .send(Err(TableReadError::Storage("the replica stopped".into())));
        }
        for parked in self.parked_mismatches.drain(..) {
            let _ = parked.reply.send(Err(
                ProduceError::Storage("the replica stopped".into()).into()
            ));
        }
    }
}

fn leader_hint(replica: &Replica) -> (Option<i32>, i32) {
    replica
        .partition()
        .map_or((None, -1), |p| (p.leader, p.leader_epoch))
}

/// Applies the log from the table's applied offset to its end: below `high_watermark`
/// committed, above it waiting.
fn replay(log: &dyn Log, table: &mut Table, high_watermark: i64) -> Result<(), StorageError> {
    let end = log.log_end_offset();
    let mut offset = table.applied_offset().max(log.log_start_offset());
    while offset < end {
        let bytes = log.read(offset, REPLAY_CHUNK)?;
        if bytes.is_empty() {
            break;
        }
        let mut next = offset;
        for item in tandem_storage::batch::split_batches(&bytes) {
            match item {
                Ok((header, _)) => next = next.max(header.next_offset()),
                Err(source) => {
                    warn!(offset, error = %source, "a damaged batch stops the table's replay");
                    return Err(StorageError::InvalidBatch {
                        position: 0,
                        source,
                    });
                }
            }
        }
        match decode_writes(&bytes) {
            Ok(writes) => table.append(writes),
            Err(e) => {
                warn!(offset, error = %e, "a batch in a table's log is not a table write; skipped")
            }
        }
        if next <= offset {
            break;
        }
        offset = next;
    }
    table.commit_to(high_watermark.min(end));
    Ok(())
}

/// The snapshot at `path`, if it exists, decodes, and still agrees with the log: the log
/// holds every offset it covers, with the same epoch at its last one.
fn read_snapshot(path: &Path, log: &dyn Log) -> Option<Table> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => Bytes::from(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot read the table snapshot; replaying the log");
            return None;
        }
    };
    let snapshot = match snapshot::decode(&bytes) {
        Ok(snapshot) => snapshot,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "table snapshot discarded; replaying the log");
            return None;
        }
    };
    let offsets = log.offsets();
    let covered = snapshot.applied <= offsets.log_end_offset
        && snapshot.applied >= offsets.log_start_offset
        && match snapshot.last_epoch {
            None => snapshot.applied <= offsets.log_start_offset,
            Some(epoch) => {
                let mut cache = tandem_storage::EpochCache::new();
                for entry in log.epochs() {
                    let _ = cache.assign(entry.epoch, entry.start_offset);
                }
                cache.epoch_for_offset(snapshot.applied - 1) == Some(epoch)
            }
        };
    if !covered {
        warn!(
            path = %path.display(),
            applied = snapshot.applied,
            log_start = offsets.log_start_offset,
            log_end = offsets.log_end_offset,
            "table snapshot no longer matches the log; replaying the log"
        );
        return None;
    }
    Some(snapshot.into_table())
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
