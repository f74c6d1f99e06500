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
            Action::Append { batches, .. } => {
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
    pub fn commit_to(&mut self, high_watermark: i64) {
        if !self.needs_rebuild {
            self.table
                .commit_to(high_watermark.min(self.log_end_offset));
        }
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

/// Applies the log from the table's applied offset to its end: below `high_watermark`
/// committed, above it waiting. A damaged batch stops the replay with an error.
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
    table.commit_to(high_watermark.min(end));
    Ok(())
}
