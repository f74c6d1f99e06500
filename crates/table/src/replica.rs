//! A table beside one replica, as pure code: the [`Table`] fed from the log actions the
//! replica's driver performs, the leader's compare-and-set decision, and the reads and
//! compare-and-set answers that wait for the HW. No clock, no threads, no channels: time comes
//! in as the replica's `now_ms`, and a waiting request is kept with an opaque reply handle
//! (`W` for writes, `R` for reads) that comes back out, with its answer, from
//! [`TableReplica::after_step`]. The server keeps a oneshot sender there, the simulator a
//! request id.
//!
//! ```text
//!   driver performs an action ──> on_log_action (append / truncate / truncate fully)
//!                               ──> commit_to(replica HW)       before any reply leaves
//!   end of a replica step       ──> after_step: follow the HW, answer what waited on it
//!   compare-and-set             ──> decide_cas: Append | Answered (mismatch) | Parked
//!   get                         ──> read: answered now, or parked (an at-least token)
//! ```
//!
//! The API follows `crates/server/src/table.rs` (`TableRuntime`) method for method, so that
//! the server can keep its snapshot I/O and hand the rest to this type.

use bytes::Bytes;
use tandem_replication::event::Action;
use tandem_replication::{ProduceError, Replica, RoleKind};
use tandem_storage::batch::split_batches;
use tandem_storage::{Log, StorageError};

use crate::read::{self, Consistency, ReadView, Token};
use crate::snapshot::{self, Snapshot};
use crate::{decode_writes, Entry, Table};

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
    pub entries: Vec<(Bytes, Entry)>,
    pub next: Option<Bytes>,
    /// The last offset this replica applied, with its epoch: a later read asking for at
    /// least this token never sees an older state.
    pub token: Option<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableReadError {
    #[error(transparent)]
    Read(#[from] read::ReadError),
    #[error("the replica failed: {0}")]
    Storage(String),
}

/// A request that waited, answered now (by [`TableReplica::after_step`] or
/// [`TableReplica::shut_down`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Answer<W, R> {
    Write(W, Result<Written, TableWriteError>),
    Read(R, Result<ReadAnswer, TableReadError>),
}

/// The leader's decision on a compare-and-set.
#[derive(Debug, PartialEq, Eq)]
pub enum CasDecision<W> {
    /// The expected version matches the latest appended state: append the write.
    Append(W),
    /// Refused now (a mismatch against committed state, or not the leader).
    Answered(W, TableWriteError),
    /// A mismatch against a write not committed yet: answered by a later
    /// [`TableReplica::after_step`] once that write commits (or the leadership is lost).
    Parked,
}

/// A read that waits for this replica to catch up (an `AtLeast` token not yet applied).
#[derive(Debug)]
struct ParkedRead<R> {
    query: TableQuery,
    consistency: Consistency,
    has_lease: bool,
    deadline_ms: i64,
    reply: R,
}

/// A compare-and-set that failed against a write not yet committed: the answer waits until
/// that write commits, so that no client learns of a state before reads can see it.
#[derive(Debug)]
struct ParkedMismatch<W> {
    current: Option<i64>,
    commit_offset: i64,
    leader_epoch: i32,
    deadline_ms: i64,
    reply: W,
}

/// The table beside one replica.
#[derive(Debug)]
pub struct TableReplica<W, R> {
    table: Table,
    /// The log's end as the performed actions left it: the table never applies past it, so
    /// a HW taken from the core before the append that reaches it is performed cannot make
    /// the table skip that append's writes.
    log_end_offset: i64,
    /// Set when the table can no longer follow the log incrementally (a truncation below the
    /// applied offset, a failed log action): rebuilt from the log at the next `after_step`.
    needs_rebuild: bool,
    /// The log's compaction horizon (`Log::compaction_horizon`, which may be past its end
    /// while a copy is under way): below it the log is whole only as a whole, so the table
    /// applies no HW below it and serves nothing until it has applied that far.
    compaction_horizon: i64,
    /// The leader's LEO from the last fetch answer (followers), for lag bounds.
    leader_log_end_offset: Option<i64>,
    /// When (replica clock, ms) this follower last had everything the leader had, and in
    /// which epoch.
    caught_up: Option<(i32, i64)>,
    parked_reads: Vec<ParkedRead<R>>,
    parked_mismatches: Vec<ParkedMismatch<W>>,
}

impl<W, R> TableReplica<W, R> {
    /// The table of the replica over `log`: from `restored` (a snapshot the caller checked
    /// against the log) if any, then the log's tail; otherwise the whole log.
    pub fn load(
        log: &dyn Log,
        high_watermark: i64,
        restored: Option<Table>,
    ) -> Result<TableReplica<W, R>, StorageError> {
        let mut table = restored.unwrap_or_else(|| Table::new(log.log_start_offset()));
        replay(log, &mut table, high_watermark)?;
        Ok(TableReplica {
            table,
            log_end_offset: log.log_end_offset(),
            compaction_horizon: log.compaction_horizon(),
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

    /// Requests waiting here (reads for a token, mismatches for the HW).
    pub fn parked(&self) -> usize {
        self.parked_reads.len() + self.parked_mismatches.len()
    }

    /// A log action was performed (`failed`: the log refused it).
    pub fn on_log_action(&mut self, action: &Action, failed: bool) {
        if failed {
            self.needs_rebuild = true;
            return;
        }
        match action {
            Action::Append {
                batches,
                compaction_horizon,
            } => {
                // Raised before the copied batches are applied, as in the log.
                if let Some(horizon) = compaction_horizon {
                    self.compaction_horizon = self.compaction_horizon.max(*horizon);
                }
                if let Some(end) = split_batches(batches)
                    .map_while(Result::ok)
                    .map(|(header, _)| header.next_offset())
                    .last()
                {
                    self.log_end_offset = self.log_end_offset.max(end);
                }
                // A batch that is not a table write (no key) adds nothing; a compressed one
                // cannot be a table's (the server refuses them) and is skipped.
                if let Ok(writes) = decode_writes(batches) {
                    self.table.append(writes);
                }
            }
            // Mutation (tandem-sim's table-matches-log check): keep the writes a truncation
            // cut, so that they are applied when the HW passes their offsets.
            #[cfg(feature = "mutation-table-ignores-truncation")]
            Action::Truncate { .. } => {}
            #[cfg(not(feature = "mutation-table-ignores-truncation"))]
            Action::Truncate { offset } => {
                self.log_end_offset = *offset;
                if self.table.truncate(*offset).is_err() {
                    self.needs_rebuild = true;
                }
            }
            Action::TruncateFullyAndStartAt { offset } => {
                self.log_end_offset = *offset;
                self.table.reset(*offset);
            }
            _ => {}
        }
    }

    /// The core's HW, applied before any reply leaves (a client that got its ack and then
    /// reads sees its write).
    ///
    /// Below the compaction horizon the log's prefixes are states that never existed (a
    /// key's delete compacted away, the put replacing it not reached yet): the table stays
    /// where it was (an emptied copy at its log start) until the HW reaches the horizon, then
    /// applies everything up to it at once (sim seed 12).
    pub fn commit_to(&mut self, high_watermark: i64) {
        let high_watermark = high_watermark.min(self.log_end_offset);
        if !self.needs_rebuild && high_watermark >= self.compaction_horizon {
            self.table.commit_to(high_watermark);
        }
    }

    /// The compaction horizon the table follows (see [`commit_to`](Self::commit_to)).
    pub fn compaction_horizon(&self) -> i64 {
        self.compaction_horizon
    }

    /// A fetch answer from the leader arrived, naming its LEO.
    pub fn on_leader_log_end_offset(&mut self, leader_log_end_offset: i64) {
        self.leader_log_end_offset = Some(leader_log_end_offset);
    }

    /// After each step of the core: follow its HW, then answer what waited on it.
    pub fn after_step(
        &mut self,
        replica: &Replica,
        log: &dyn Log,
        now_ms: i64,
    ) -> Vec<Answer<W, R>> {
        // Our own compaction raises it (below the HW: never above what is applied).
        self.compaction_horizon = self.compaction_horizon.max(log.compaction_horizon());
        if self.needs_rebuild {
            let mut table = Table::new(log.log_start_offset());
            if replay(log, &mut table, replica.high_watermark()).is_ok() {
                self.table = table;
                self.log_end_offset = log.log_end_offset();
                self.needs_rebuild = false;
            }
        }
        self.commit_to(replica.high_watermark());
        if replica.role() == RoleKind::Follower {
            let caught_up = self
                .leader_log_end_offset
                .is_some_and(|leo| replica.local_log().log_end_offset() >= leo);
            let epoch = replica.leader_epoch();
            if caught_up {
                self.caught_up = Some((epoch, now_ms));
            } else if self.caught_up.is_some_and(|(e, _)| e != epoch) {
                self.caught_up = None;
            }
        } else {
            self.leader_log_end_offset = None;
        }
        self.answer_parked(replica, now_ms)
    }

    fn answer_parked(&mut self, replica: &Replica, now_ms: i64) -> Vec<Answer<W, R>> {
        let mut answers = Vec::new();
        let applied = self.table.applied_offset();
        let epoch = replica.leader_epoch();
        let still_leader = replica.role() == RoleKind::Leader;
        for parked in std::mem::take(&mut self.parked_mismatches) {
            if !still_leader || parked.leader_epoch != epoch {
                // The write it saw may be gone; nothing of this request was written.
                let (leader, leader_epoch) = leader_hint(replica);
                let error = ProduceError::NotLeader {
                    leader,
                    leader_epoch,
                };
                answers.push(Answer::Write(parked.reply, Err(error.into())));
            } else if applied >= parked.commit_offset {
                let error = TableWriteError::CasMismatch {
                    current: parked.current,
                };
                answers.push(Answer::Write(parked.reply, Err(error)));
            } else if now_ms >= parked.deadline_ms {
                let error = ProduceError::NotLeader {
                    leader: None,
                    leader_epoch: epoch,
                };
                answers.push(Answer::Write(parked.reply, Err(error.into())));
            } else {
                self.parked_mismatches.push(parked);
            }
        }
        for parked in std::mem::take(&mut self.parked_reads) {
            match self.try_read(
                replica,
                &parked.query,
                parked.consistency,
                parked.has_lease,
                now_ms,
            ) {
                Err(TableReadError::Read(e)) if e.may_wait() && now_ms < parked.deadline_ms => {
                    self.parked_reads.push(parked);
                }
                answer => answers.push(Answer::Read(parked.reply, answer)),
            }
        }
        answers
    }

    /// A compare-and-set, decided here on the leader against its latest appended state
    /// (DESIGN.md "Key-value tables"): the leader is the only writer, so nothing slips between
    /// the decision and the append, and a decision built on a write that is later truncated
    /// is truncated with it. A mismatch against a write not committed yet waits for it.
    pub fn decide_cas(
        &mut self,
        replica: &Replica,
        key: &[u8],
        expected: Option<i64>,
        now_ms: i64,
        timeout_ms: i64,
        reply: W,
    ) -> CasDecision<W> {
        if replica.role() != RoleKind::Leader {
            let (leader, leader_epoch) = leader_hint(replica);
            let error = ProduceError::NotLeader {
                leader,
                leader_epoch,
            };
            return CasDecision::Answered(reply, error.into());
        }
        #[cfg(not(feature = "mutation-cas-on-committed-only"))]
        let check = self.table.cas_check(key);
        // Mutation (tandem-sim's table checks): decide against the committed map only, so two
        // compare-and-sets from one version both succeed while the first is not committed.
        #[cfg(feature = "mutation-cas-on-committed-only")]
        let check = crate::CasCheck {
            current: self.table.get(key).map(|e| e.version),
            uncommitted_until: None,
        };
        if check.current == expected {
            return CasDecision::Append(reply);
        }
        match check.uncommitted_until {
            Some(commit_offset) if commit_offset > self.table.applied_offset() => {
                self.parked_mismatches.push(ParkedMismatch {
                    current: check.current,
                    commit_offset,
                    leader_epoch: replica.leader_epoch(),
                    deadline_ms: now_ms.saturating_add(timeout_ms.max(0)),
                    reply,
                });
                CasDecision::Parked
            }
            _ => CasDecision::Answered(
                reply,
                TableWriteError::CasMismatch {
                    current: check.current,
                },
            ),
        }
    }

    /// A read: answered now (`Some`), or parked (`None`) until the replica catches up or
    /// `wait_ms` runs out. Only an at-least read waits; `wait_ms = 0` answers at once.
    #[allow(clippy::too_many_arguments)]
    pub fn read(
        &mut self,
        replica: &Replica,
        query: TableQuery,
        consistency: Consistency,
        has_lease: bool,
        now_ms: i64,
        wait_ms: i64,
        reply: R,
    ) -> Option<(R, Result<ReadAnswer, TableReadError>)> {
        match self.try_read(replica, &query, consistency, has_lease, now_ms) {
            Err(TableReadError::Read(e))
                if e.may_wait()
                    && matches!(consistency, Consistency::AtLeast(_))
                    && wait_ms > 0 =>
            {
                self.parked_reads.push(ParkedRead {
                    query,
                    consistency,
                    has_lease,
                    deadline_ms: now_ms.saturating_add(wait_ms),
                    reply,
                });
                None
            }
            answer => Some((reply, answer)),
        }
    }

    fn try_read(
        &self,
        replica: &Replica,
        query: &TableQuery,
        consistency: Consistency,
        has_lease: bool,
        now_ms: i64,
    ) -> Result<ReadAnswer, TableReadError> {
        if let Some(reason) = replica.failure() {
            return Err(TableReadError::Storage(reason.to_string()));
        }
        if self.needs_rebuild {
            return Err(TableReadError::Storage("the table is being rebuilt".into()));
        }
        let local = replica.local_log();
        let is_leader = replica.role() == RoleKind::Leader;
        let view = ReadView {
            is_leader,
            has_lease,
            high_watermark: self.table.applied_offset(),
            epoch_start_offset: if is_leader {
                replica.epoch_start_offset()
            } else {
                None
            },
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
                    .map(|(_, at)| now_ms.saturating_sub(at).max(0))
            },
            log_start_offset: local.log_start_offset(),
            compaction_horizon: self.compaction_horizon,
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

    /// The table's committed state as a snapshot (`snapshot::encode`), with the epoch of its
    /// last applied offset; `None` while the table waits to be rebuilt. The caller flushes the
    /// log first, so that after a crash the log still holds every offset the snapshot covers
    /// (and [`restore`] can check its epoch there).
    pub fn snapshot(&self, replica: &Replica) -> Option<Bytes> {
        if self.needs_rebuild {
            return None;
        }
        let applied = self.table.applied_offset();
        let last_epoch = replica.local_log().epochs().epoch_for_offset(applied - 1);
        Some(snapshot::encode(&self.table, last_epoch))
    }

    /// The replica stops: whoever waits is told.
    pub fn shut_down(&mut self) -> Vec<Answer<W, R>> {
        let mut answers = Vec::new();
        for parked in self.parked_reads.drain(..) {
            let error = TableReadError::Storage("the replica stopped".into());
            answers.push(Answer::Read(parked.reply, Err(error)));
        }
        for parked in self.parked_mismatches.drain(..) {
            let error = ProduceError::Storage("the replica stopped".into());
            answers.push(Answer::Write(parked.reply, Err(error.into())));
        }
        answers
    }
}

fn leader_hint(replica: &Replica) -> (Option<i32>, i32) {
    replica
        .partition()
        .map_or((None, -1), |p| (p.leader, p.leader_epoch))
}

/// The table a decoded snapshot restores, if it still agrees with `log`: the log holds every
/// offset it covers, with the same leader epoch at its last one. A log cut below the snapshot
/// (a corrupt tail removed by recovery, a truncation after an unclean election) makes it
/// useless: the caller replays the whole log instead.
///
/// A snapshot below the log's compaction horizon is refused too: the log after it may lack
/// records it would need (a delete compacted away after a put the snapshot holds), and the
/// log it was taken from may have been replaced by a compacted copy since.
pub fn restore(snapshot: Snapshot, log: &dyn Log) -> Option<Table> {
    let offsets = log.offsets();
    let covered = snapshot.applied <= offsets.log_end_offset
        && snapshot.applied >= offsets.log_start_offset
        && snapshot.applied >= log.compaction_horizon()
        && match snapshot.last_epoch {
            None => snapshot.applied <= offsets.log_start_offset,
            Some(epoch) => {
                let mut cache = tandem_storage::EpochCache::new();
                for entry in log.epochs() {
                    // Entries come in order from a valid log; a refused one only shortens the
                    // cache, which can only make the snapshot look stale.
                    let _ = cache.assign(entry.epoch, entry.start_offset);
                }
                cache.epoch_for_offset(snapshot.applied - 1) == Some(epoch)
            }
        };
    covered.then(|| snapshot.into_table())
}

/// Applies the log from the table's applied offset to its end: below `high_watermark`
/// committed, above it waiting; nothing committed while `high_watermark` is below the log's
/// compaction horizon ([`TableReplica::commit_to`]). A damaged batch stops the replay with an
/// error.
pub fn replay(log: &dyn Log, table: &mut Table, high_watermark: i64) -> Result<(), StorageError> {
    let end = log.log_end_offset();
    let mut offset = table.applied_offset().max(log.log_start_offset());
    while offset < end {
        let bytes = log.read(offset, REPLAY_CHUNK)?;
        if bytes.is_empty() {
            break;
        }
        let mut next = offset;
        for item in split_batches(&bytes) {
            match item {
                Ok((header, _)) => next = next.max(header.next_offset()),
                Err(source) => {
                    return Err(StorageError::InvalidBatch {
                        position: 0,
                        source,
                    })
                }
            }
        }
        // Batches without keys are not table writes; compressed ones cannot be a table's.
        if let Ok(writes) = decode_writes(&bytes) {
            table.append(writes);
        }
        if next <= offset {
            break;
        }
        offset = next;
    }
    let high_watermark = high_watermark.min(end);
    if high_watermark >= log.compaction_horizon() {
        table.commit_to(high_watermark);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! A leader replica over an in-memory log, driven by hand: the test decides when an
    //! append's completion reaches the core, so it can hold a write above the HW.

    use std::collections::VecDeque;
    use std::sync::Arc;

    use tandem_replication::{
        driver, Acks, Durability, Event, PartitionState, ProduceRequest, ReplicaConfig, RequestId,
    };
    use tandem_storage::{BatchBuilder, LogConfig, ManualClock, MemDir, MemLog, SegmentedLog};

    use super::*;
    use crate::read::ReadError;

    struct Fixture {
        log: MemLog,
        replica: Replica,
        table: TableReplica<u32, u32>,
        now_ms: i64,
        /// Completions of performed log actions, not yet given to the core.
        completions: VecDeque<Event>,
        next_id: u64,
    }

    impl Fixture {
        /// Node 1, leader of epoch 1, alone in the ISR (its HW follows its own appends).
        fn leader() -> Fixture {
            let clock = Arc::new(ManualClock::new(0));
            let log = SegmentedLog::open(MemDir::default(), LogConfig::default(), clock).unwrap();
            let (model, high_watermark) = driver::recover(&log).unwrap();
            let replica = Replica::new(1, ReplicaConfig::default(), model, high_watermark);
            let table = TableReplica::load(&log, high_watermark, None).unwrap();
            let mut f = Fixture {
                log,
                replica,
                table,
                now_ms: 0,
                completions: VecDeque::new(),
                next_id: 0,
            };
            f.metadata(Some(1), 1);
            f
        }

        fn metadata(&mut self, leader: Option<i32>, leader_epoch: i32) {
            self.step(Event::Metadata(PartitionState {
                leader,
                leader_epoch,
                partition_epoch: leader_epoch,
                isr: vec![1],
                replicas: vec![1, 2],
                min_insync_replicas: 1,
            }));
            self.settle();
        }

        /// One step of the core, its log actions performed and fed to the table (as the
        /// server's partition thread does); the answers of what waited.
        fn step(&mut self, event: Event) -> Vec<Answer<u32, u32>> {
            for action in self.replica.step(self.now_ms, event) {
                let done = driver::perform(&self.log, &action);
                let failed = matches!(done, Some(Event::LogFailed { .. }));
                self.table.on_log_action(&action, failed);
                self.table.commit_to(self.replica.high_watermark());
                self.completions.extend(done);
            }
            self.table.after_step(&self.replica, &self.log, self.now_ms)
        }

        /// Gives the core every completion it waits for.
        fn settle(&mut self) -> Vec<Answer<u32, u32>> {
            let mut answers = Vec::new();
            while let Some(event) = self.completions.pop_front() {
                answers.extend(self.step(event));
            }
            answers
        }

        /// An acks=1 put, appended but not completed (so above the HW).
        fn put(&mut self, key: &str, value: &str) {
            let mut batch = BatchBuilder::new(self.now_ms);
            batch.push(self.now_ms, Some(key.as_bytes()), Some(value.as_bytes()));
            self.next_id += 1;
            let request = ProduceRequest {
                acks: Acks::Leader,
                durability: Durability::Replicated,
                timeout_ms: 1_000,
                current_leader_epoch: None,
                records: batch.build(),
            };
            let answers = self.step(Event::Produce {
                id: RequestId(self.next_id),
                request,
            });
            assert!(answers.is_empty());
        }

        fn cas(&mut self, key: &str, expected: Option<i64>, reply: u32) -> CasDecision<u32> {
            self.table.decide_cas(
                &self.replica,
                key.as_bytes(),
                expected,
                self.now_ms,
                500,
                reply,
            )
        }

        fn read(
            &mut self,
            key: &str,
            consistency: Consistency,
            wait_ms: i64,
            reply: u32,
        ) -> Option<(u32, Result<ReadAnswer, TableReadError>)> {
            let query = TableQuery::Get {
                key: Bytes::copy_from_slice(key.as_bytes()),
            };
            self.table.read(
                &self.replica,
                query,
                consistency,
                true,
                self.now_ms,
                wait_ms,
                reply,
            )
        }
    }

    #[test]
    #[cfg(not(feature = "mutation-cas-on-committed-only"))]
    fn a_cas_is_decided_against_the_latest_appended_state() {
        let mut f = Fixture::leader();
        f.put("k", "v0");
        assert_eq!(
            f.replica.high_watermark(),
            0,
            "the put is not committed yet"
        );
        assert_eq!(f.cas("k", Some(0), 7), CasDecision::Append(7));
    }

    #[test]
    #[cfg(not(feature = "mutation-cas-on-committed-only"))]
    fn a_mismatch_against_an_uncommitted_write_waits_for_its_commit() {
        let mut f = Fixture::leader();
        f.put("k", "v0");
        assert_eq!(f.cas("k", None, 7), CasDecision::Parked);
        assert_eq!(f.table.parked(), 1);
        assert_eq!(f.step(Event::Tick), vec![], "not before the write commits");
        let answers = f.settle();
        assert_eq!(f.replica.high_watermark(), 1);
        assert_eq!(
            answers,
            vec![Answer::Write(
                7,
                Err(TableWriteError::CasMismatch { current: Some(0) })
            )]
        );
        // Against committed state the answer is immediate.
        assert_eq!(
            f.cas("k", None, 8),
            CasDecision::Answered(8, TableWriteError::CasMismatch { current: Some(0) })
        );
    }

    #[test]
    fn a_parked_mismatch_answers_not_leader_when_the_leadership_moves() {
        let mut f = Fixture::leader();
        f.put("k", "v0");
        if f.cas("k", None, 7) != CasDecision::Parked {
            return; // mutation-cas-on-committed-only decides against the committed map
        }
        let answers = f.step(Event::Metadata(PartitionState {
            leader: Some(2),
            leader_epoch: 2,
            partition_epoch: 2,
            isr: vec![2],
            replicas: vec![1, 2],
            min_insync_replicas: 1,
        }));
        assert!(
            matches!(
                answers.as_slice(),
                [Answer::Write(
                    7,
                    Err(TableWriteError::Produce(ProduceError::NotLeader { .. }))
                )]
            ),
            "{answers:?}"
        );
    }

    #[test]
    #[cfg(not(feature = "mutation-follower-ignores-token"))]
    fn an_at_least_read_waits_for_its_token() {
        let mut f = Fixture::leader();
        f.put("k", "v0");
        let token = Token {
            offset: 0,
            leader_epoch: 1,
        };
        match f.read("k", Consistency::AtLeast(token), 0, 1) {
            Some((1, Err(TableReadError::Read(ReadError::Behind { .. })))) => {}
            other => panic!("without waiting: {other:?}"),
        }
        assert!(f.read("k", Consistency::AtLeast(token), 100, 2).is_none());
        let answers = f.settle();
        let [Answer::Read(2, Ok(answer))] = answers.as_slice() else {
            panic!("{answers:?}");
        };
        assert_eq!(answer.entries.len(), 1);
        assert_eq!(answer.entries[0].1.version, 0);
        assert_eq!(answer.token, Some(token));
    }

    #[test]
    fn a_parked_read_gives_up_at_its_deadline() {
        let mut f = Fixture::leader();
        let token = Token {
            offset: 5,
            leader_epoch: 1,
        };
        if f.read("k", Consistency::AtLeast(token), 100, 3).is_some() {
            return; // mutation-follower-ignores-token answers at once
        }
        f.now_ms = 100;
        let answers = f.step(Event::Tick);
        assert!(
            matches!(
                answers.as_slice(),
                [Answer::Read(
                    3,
                    Err(TableReadError::Read(ReadError::Behind { .. }))
                )]
            ),
            "{answers:?}"
        );
    }

    /// One put of `key` at `offset`, as a leader of epoch 1 stamped it.
    fn put_at(offset: i64, key: &str, value: &str) -> Bytes {
        let mut batch = BatchBuilder::new(0);
        batch.push(0, Some(key.as_bytes()), Some(value.as_bytes()));
        let mut bytes = batch.build();
        tandem_storage::batch::set_base_offset(&mut bytes, offset);
        tandem_storage::batch::set_leader_epoch(&mut bytes, 1);
        Bytes::from(bytes)
    }

    /// Sim seed 12: a follower copies a compacted log in which k's delete at 1 went (the put
    /// at 2 replaces it); the log is whole only from the horizon 3. Between, the table would
    /// hold k = old where the history says absent: it applies nothing and serves nothing until
    /// the HW reaches the horizon, then everything at once.
    #[test]
    fn a_copy_below_the_compaction_horizon_is_neither_applied_nor_served() {
        let mut f = Fixture::leader();
        let table = &mut f.table;
        table.on_log_action(&Action::TruncateFullyAndStartAt { offset: 0 }, false);
        table.on_log_action(
            &Action::Append {
                batches: put_at(0, "k", "old"),
                compaction_horizon: Some(3),
            },
            false,
        );
        table.commit_to(1);
        assert_eq!(table.compaction_horizon(), 3);
        assert_eq!(table.table().applied_offset(), 0, "held at the log start");
        assert_eq!(table.table().get(b"k"), None);
        for consistency in [
            Consistency::Leader,
            Consistency::Follower {
                max_lag_offsets: None,
                max_lag_ms: None,
            },
        ] {
            let answer = f.read("k", consistency, 0, 1).map(|(_, a)| a);
            assert_eq!(
                answer,
                Some(Err(TableReadError::Read(ReadError::Copying {
                    high_watermark: 0,
                    compaction_horizon: 3,
                })))
            );
        }
        // An at-least read waits for the copy (and is answered once it is through).
        let token = Token {
            offset: 0,
            leader_epoch: 1,
        };
        assert_eq!(f.read("k", Consistency::AtLeast(token), 100, 2), None);
        let table = &mut f.table;
        table.on_log_action(
            &Action::Append {
                batches: put_at(2, "k", "new"),
                compaction_horizon: None,
            },
            false,
        );
        table.commit_to(3);
        assert_eq!(table.table().applied_offset(), 3);
        assert_eq!(
            table
                .table()
                .get(b"k")
                .map(|e| (e.value.clone(), e.version)),
            Some((Bytes::from_static(b"new"), 2))
        );
    }

    /// A snapshot below the log's compaction horizon may hold a put whose delete the log no
    /// longer has: the whole log is replayed instead, and a replay below the horizon commits
    /// nothing.
    #[test]
    fn a_snapshot_or_replay_below_the_compaction_horizon_is_refused() {
        let mut f = Fixture::leader();
        f.put("k", "v0");
        f.settle();
        let bytes = f.table.snapshot(&f.replica).unwrap();
        let decoded = snapshot::decode(&bytes).unwrap();
        assert_eq!(decoded.applied, 1);
        f.log.raise_compaction_horizon(1).unwrap();
        assert!(restore(decoded.clone(), &f.log).is_some(), "at the horizon");
        f.log.raise_compaction_horizon(5).unwrap();
        assert!(restore(decoded, &f.log).is_none());
        let reloaded: TableReplica<(), ()> = TableReplica::load(&f.log, 1, None).unwrap();
        assert_eq!(reloaded.table().applied_offset(), 0);
        assert!(reloaded.table().is_empty());
    }

    #[test]
    fn a_snapshot_restores_only_onto_a_log_that_still_holds_it() {
        let mut f = Fixture::leader();
        f.put("k", "v0");
        f.settle();
        let bytes = f.table.snapshot(&f.replica).unwrap();
        let decoded = snapshot::decode(&bytes).unwrap();
        assert_eq!(decoded.applied, 1);
        assert_eq!(decoded.last_epoch, Some(1));
        let restored = restore(decoded.clone(), &f.log).unwrap();
        assert_eq!(restored.get(b"k").map(|e| e.version), Some(0));
        let reloaded: TableReplica<(), ()> = TableReplica::load(&f.log, 1, Some(restored)).unwrap();
        assert_eq!(reloaded.table().committed(), f.table.table().committed());
        // A log that lost the snapshot's offsets (a new disk, a cut tail) is replayed instead.
        let clock = Arc::new(ManualClock::new(0));
        let empty = SegmentedLog::open(MemDir::default(), LogConfig::default(), clock).unwrap();
        assert!(restore(decoded, &empty).is_none());
    }

    #[test]
    fn the_table_never_applies_past_the_log_end_it_was_told_of() {
        let mut table: TableReplica<(), ()> = TableReplica {
            table: Table::new(0),
            log_end_offset: 0,
            compaction_horizon: 0,
            needs_rebuild: false,
            leader_log_end_offset: None,
            caught_up: None,
            parked_reads: Vec::new(),
            parked_mismatches: Vec::new(),
        };
        // A HW taken before the append that reaches it was performed.
        table.commit_to(1);
        assert_eq!(table.table().applied_offset(), 0);
        let mut batch = BatchBuilder::new(0);
        batch.push(0, Some(b"k"), Some(b"v"));
        let mut bytes = batch.build();
        tandem_storage::batch::set_base_offset(&mut bytes, 0);
        table.on_log_action(
            &Action::Append {
                batches: bytes.freeze(),
                compaction_horizon: None,
            },
            false,
        );
        table.commit_to(1);
        assert_eq!(table.table().get(b"k").map(|e| e.version), Some(0));
    }
}
